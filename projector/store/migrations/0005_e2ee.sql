-- End-to-end encryption: what the server keeps and relays for clients.
-- Keys are stored as the client uploaded them (signed JSON objects).

CREATE TABLE device_keys (
    user_id   text NOT NULL,
    device_id text NOT NULL,
    keys      jsonb NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- key_id is "algorithm:id"; algorithm is its part before the colon.
CREATE TABLE one_time_keys (
    user_id   text NOT NULL,
    device_id text NOT NULL,
    algorithm text NOT NULL,
    key_id    text NOT NULL,
    key       jsonb NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id)
);
CREATE INDEX one_time_keys_by_algorithm ON one_time_keys (user_id, device_id, algorithm, key_id);

CREATE TABLE fallback_keys (
    user_id   text NOT NULL,
    device_id text NOT NULL,
    algorithm text NOT NULL,
    key_id    text NOT NULL,
    key       jsonb NOT NULL,
    used      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Pending to-device messages; pos is the ACCOUNTS sequence of the record
-- that sent them, idx orders the messages of one record.
CREATE TABLE to_device (
    user_id   text NOT NULL,
    device_id text NOT NULL,
    pos       bigint NOT NULL,
    idx       int NOT NULL,
    sender    text NOT NULL,
    type      text NOT NULL,
    content   jsonb NOT NULL,
    PRIMARY KEY (user_id, device_id, pos, idx)
);

-- Transaction IDs of sendToDevice calls, for idempotent retries.
CREATE TABLE to_device_txns (
    sender    text NOT NULL,
    device_id text NOT NULL,
    txn_id    text NOT NULL,
    PRIMARY KEY (sender, device_id, txn_id)
);

-- Users whose device list (devices or their keys) changed, and when
-- (ACCOUNTS sequence): the source of device_lists in /sync and of
-- /keys/changes.
CREATE TABLE device_list_changes (
    user_id text NOT NULL,
    pos     bigint NOT NULL,
    PRIMARY KEY (user_id, pos)
);
CREATE INDEX device_list_changes_by_pos ON device_list_changes (pos);

-- Cross-signing public keys, and signatures made of other keys.
CREATE TABLE cross_signing_keys (
    user_id  text NOT NULL,
    key_type text NOT NULL, -- master, self_signing, user_signing
    key      jsonb NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- A signature by signer (user_id, signing key) of target_user's key
-- target_key (a device ID or a cross-signing public key).
CREATE TABLE key_signatures (
    target_user text NOT NULL,
    target_key  text NOT NULL,
    signer      text NOT NULL,
    signing_key text NOT NULL,
    signature   text NOT NULL,
    PRIMARY KEY (target_user, target_key, signer, signing_key)
);

-- Membership changes of a room in a position range (who joined or left
-- the rooms a syncing user shares, for device_lists).
CREATE INDEX room_state_member_moves ON room_state (room_id, from_pos) WHERE type = 'm.room.member';
