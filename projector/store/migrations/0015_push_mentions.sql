-- Unread counts are evaluated from the push rules at read time over a
-- bounded number of events after a user's read receipt; events beyond
-- that bound that mention the user (content."m.mentions".user_ids) are
-- still read, found through this index rather than by scanning the room.
CREATE INDEX events_mentions ON events USING gin (mentions) WHERE mentions IS NOT NULL;
