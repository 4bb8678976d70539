-- Pushers (POST /pushers/set): where a user's notifications go. A pusher
-- belongs to the device whose access token set it and goes with it.
CREATE TABLE pushers (
    user_id             text  NOT NULL,
    app_id              text  NOT NULL,
    pushkey             text  NOT NULL,
    device_id           text  NOT NULL,
    kind                text  NOT NULL,
    app_display_name    text  NOT NULL,
    device_display_name text  NOT NULL,
    profile_tag         text  NOT NULL DEFAULT '',
    lang                text  NOT NULL,
    data                jsonb NOT NULL,
    stream_seq          bigint NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);
