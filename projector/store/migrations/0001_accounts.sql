-- Projector checkpoints: the last stream sequence applied to this database,
-- one row per stream. Written in the same transaction as the rows a batch
-- of records produced, so a record applied twice changes nothing.
CREATE TABLE projector_positions (
    stream text PRIMARY KEY,
    seq    bigint NOT NULL
);

CREATE TABLE users (
    user_id       text PRIMARY KEY,
    password_hash text NOT NULL DEFAULT '',
    admin         boolean NOT NULL DEFAULT false,
    deactivated   boolean NOT NULL DEFAULT false,
    displayname   text,
    avatar_url    text,
    created_ts    bigint NOT NULL
);

-- One access token per device, stored only as its SHA-256.
CREATE TABLE devices (
    user_id      text NOT NULL,
    device_id    text NOT NULL,
    display_name text,
    token_hash   bytea NOT NULL UNIQUE,
    created_ts   bigint NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE filters (
    user_id   text NOT NULL,
    filter_id text NOT NULL,
    filter    jsonb NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- room_id '' is global account data.
CREATE TABLE account_data (
    user_id    text NOT NULL,
    room_id    text NOT NULL DEFAULT '',
    type       text NOT NULL,
    content    jsonb NOT NULL,
    stream_seq bigint NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_by_seq ON account_data (user_id, stream_seq);
