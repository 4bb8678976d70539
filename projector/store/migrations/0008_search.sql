-- Full-text search over message bodies, room names and topics
-- (POST /search). value is the searched text; a redacted event's row goes.
CREATE TABLE event_search (
    event_id text PRIMARY KEY,
    room_id  text NOT NULL,
    pos      bigint NOT NULL,
    sender   text NOT NULL,
    key      text NOT NULL, -- content.body, content.name or content.topic
    vec      tsvector NOT NULL
);
CREATE INDEX event_search_vec ON event_search USING GIN (vec);
CREATE INDEX event_search_room_pos ON event_search (room_id, pos);
