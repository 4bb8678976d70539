-- Event relations (content."m.relates_to" with a rel_type: threads, edits,
-- annotations, references). A redacted event loses its relation.
CREATE TABLE event_relations (
    event_id   text PRIMARY KEY,
    room_id    text NOT NULL,
    relates_to text NOT NULL,
    rel_type   text NOT NULL,
    pos        bigint NOT NULL
);
CREATE INDEX event_relations_by_parent ON event_relations (room_id, relates_to, rel_type, pos);
CREATE INDEX event_relations_threads ON event_relations (room_id, pos) WHERE rel_type = 'm.thread';
