-- One-time keys are handed out in the order they were uploaded (MSC4225),
-- so each remembers the ACCOUNTS sequence of its upload. Keys stored
-- before this migration get 0 and go first, in key ID order as before.
ALTER TABLE one_time_keys ADD COLUMN stream_seq bigint NOT NULL DEFAULT 0;
DROP INDEX one_time_keys_by_algorithm;
CREATE INDEX one_time_keys_by_upload ON one_time_keys (user_id, device_id, algorithm, stream_seq, key_id);
