-- When a pusher was last set (the log time of its pusher.set record, in
-- milliseconds): the push gateway API's pushkey_ts. Pushers set before
-- this migration have 0 until they are set again.
ALTER TABLE pushers ADD COLUMN ts bigint NOT NULL DEFAULT 0;
