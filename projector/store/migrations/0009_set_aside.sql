-- Records the projection can never apply (a decode error, a value
-- PostgreSQL refuses, a broken reference) are set aside here instead of
-- stopping their lane: invariant 11. A row is written in the transaction
-- that moves the stream's position past the record, so replay sets aside
-- exactly the same records and writes exactly the same rows (logged_ts is
-- the record's time on the log, not the time it was set aside).
CREATE TABLE set_aside (
    stream      text   NOT NULL,
    seq         bigint NOT NULL,
    subject     text   NOT NULL,
    record_type text   NOT NULL,
    room_id     text   NOT NULL DEFAULT '', -- the record's room, for ROOMS
    error       text   NOT NULL,
    logged_ts   bigint NOT NULL,
    PRIMARY KEY (stream, seq)
);
