-- Server-side key backup: versions, and the encrypted room keys in them.
-- etag is the ACCOUNTS sequence of the last change to a version's keys.
CREATE TABLE key_backup_versions (
    user_id   text NOT NULL,
    version   bigint NOT NULL,
    algorithm text NOT NULL,
    auth_data jsonb NOT NULL,
    deleted   boolean NOT NULL DEFAULT false,
    etag      bigint NOT NULL,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE room_keys (
    user_id             text NOT NULL,
    version             bigint NOT NULL,
    room_id             text NOT NULL,
    session_id          text NOT NULL,
    first_message_index bigint NOT NULL,
    forwarded_count     bigint NOT NULL,
    is_verified         boolean NOT NULL,
    session_data        jsonb NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
