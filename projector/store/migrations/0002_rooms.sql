-- Rooms. An event's position "pos" is stream_seq * 1024 + its index within
-- the log record that carried it: one total order over all rooms, derived
-- from stream sequences, which tokens are built from.

CREATE TABLE rooms (
    room_id            text PRIMARY KEY,
    room_version       text NOT NULL,
    creator            text NOT NULL,
    created_ts         bigint NOT NULL,
    -- The stream sequence of the newest record on the room's subject: what
    -- the next append expects (per-room optimistic concurrency).
    last_seq           bigint NOT NULL,
    -- The newest event: the prev_events and depth of the next one.
    last_event_id      text NOT NULL,
    last_pos           bigint NOT NULL,
    depth              bigint NOT NULL,
    published          boolean NOT NULL DEFAULT false,
    -- Denormalised current state for the directory and summaries.
    name               text,
    topic              text,
    avatar_url         text,
    canonical_alias    text,
    join_rule          text,
    history_visibility text,
    guest_access       text,
    room_type          text,
    joined_members     integer NOT NULL DEFAULT 0,
    invited_members    integer NOT NULL DEFAULT 0
);
CREATE INDEX rooms_published ON rooms (joined_members DESC, room_id) WHERE published;

CREATE TABLE events (
    pos              bigint PRIMARY KEY,
    event_id         text NOT NULL UNIQUE,
    room_id          text NOT NULL,
    type             text NOT NULL,
    state_key        text,
    sender           text NOT NULL,
    origin_server_ts bigint NOT NULL,
    -- The event as a client sees it (without unsigned), redacted once a
    -- redaction is applied; the signed PDU stays as it was on the log.
    client           bytea NOT NULL,
    pdu              bytea NOT NULL,
    redacted_because bytea,
    -- The client transaction that sent the event, for idempotent retries
    -- and for unsigned.transaction_id in the sender device's own view.
    txn_device       text,
    txn_id           text
);
CREATE INDEX events_room_pos ON events (room_id, pos);
CREATE UNIQUE INDEX events_txn ON events (room_id, sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;

-- Every state entry a room ever had, with the positions between which it
-- was current; to_pos IS NULL for the current state.
CREATE TABLE room_state (
    room_id    text NOT NULL,
    type       text NOT NULL,
    state_key  text NOT NULL,
    event_id   text NOT NULL,
    membership text,
    from_pos   bigint NOT NULL,
    to_pos     bigint,
    PRIMARY KEY (room_id, type, state_key, from_pos)
);
CREATE UNIQUE INDEX room_state_current ON room_state (room_id, type, state_key) WHERE to_pos IS NULL;
CREATE INDEX room_state_user ON room_state (state_key, room_id) WHERE type = 'm.room.member' AND to_pos IS NULL;

CREATE TABLE room_aliases (
    alias   text PRIMARY KEY,
    room_id text NOT NULL,
    creator text NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE forgotten_rooms (
    user_id text NOT NULL,
    room_id text NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
