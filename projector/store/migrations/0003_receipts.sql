-- The newest receipt of each type (and thread) per user and room.
CREATE TABLE receipts (
    room_id    text NOT NULL,
    user_id    text NOT NULL,
    type       text NOT NULL,
    thread_id  text NOT NULL DEFAULT '',
    event_id   text NOT NULL,
    event_pos  bigint NOT NULL,
    ts         bigint NOT NULL,
    stream_seq bigint NOT NULL,
    PRIMARY KEY (room_id, user_id, type, thread_id)
);
CREATE INDEX receipts_by_seq ON receipts (room_id, stream_seq);
