-- Unread counts are evaluated from the push rules at read time over a
-- bounded number of events after a user's read receipt; events beyond
-- that bound that mention the user (content."m.mentions".user_ids) are
-- still read, found through this index rather than by scanning the room.
--
-- Entries longer than a user ID can be are dropped first: they mention no
-- one, and one past about 2,700 bytes cannot be a GIN index entry (the
-- projector now keeps only user IDs, see matrix.UnreadFacts).
UPDATE events SET mentions = ARRAY(SELECT m FROM unnest(mentions) m WHERE octet_length(m) <= 255)
WHERE mentions IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(mentions) m WHERE octet_length(m) > 255);
CREATE INDEX events_mentions ON events USING gin (mentions) WHERE mentions IS NOT NULL;
