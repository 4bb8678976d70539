-- events.notify and events.body_lower (0004) were written for unread
-- counting, which now evaluates push rules on the events themselves
-- (pushcounts.go) and reads only events.mentions. Nothing reads them, and
-- writing them, with events_room_notify, cost every projected event.
DROP INDEX IF EXISTS events_room_notify;
ALTER TABLE events DROP COLUMN IF EXISTS notify, DROP COLUMN IF EXISTS body_lower;
