-- What unread counting needs from an event, computed once when it is
-- projected instead of parsing its JSON on every sync: whether it counts
-- as a notification, its body in lower case (mentions by name), and the
-- user IDs it mentions.
ALTER TABLE events
    ADD COLUMN notify     boolean NOT NULL DEFAULT false,
    ADD COLUMN body_lower text,
    ADD COLUMN mentions   text[];

UPDATE events SET
    notify = type IN ('m.room.message', 'm.room.encrypted'),
    body_lower = lower(convert_from(client, 'UTF8')::jsonb #>> '{content,body}'),
    mentions = ARRAY(SELECT jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(convert_from(client, 'UTF8')::jsonb #> '{content,m.mentions,user_ids}') = 'array'
             THEN convert_from(client, 'UTF8')::jsonb #> '{content,m.mentions,user_ids}' ELSE '[]'::jsonb END));

CREATE INDEX events_room_notify ON events (room_id, pos) WHERE notify;
