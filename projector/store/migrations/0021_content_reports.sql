-- Reports of events, rooms and users to the server's administrators
-- (POST /rooms/{roomId}/report/{eventId}, /rooms/{roomId}/report and
-- /users/{userId}/report): one row per content.reported record, keyed by
-- its ACCOUNTS sequence so a replayed record is not counted twice.
CREATE TABLE content_reports (
    seq            bigint PRIMARY KEY,
    reporter       text NOT NULL,
    room_id        text,
    event_id       text,
    target_user_id text,
    reason         text NOT NULL,
    score          integer,
    ts             bigint NOT NULL
);
