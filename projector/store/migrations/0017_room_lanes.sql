-- ROOMS is applied in lanes (eventlog.RoomLanes): one per room partition
-- (eventlog.RoomPartitions, 16) and one for aliases, each with its own
-- "complete through" position. A projection applied as one ROOMS lane is
-- complete through that position in every lane.
INSERT INTO projector_positions (stream, seq)
SELECT l.name, p.seq
FROM projector_positions p,
     (SELECT 'ROOMS.' || i AS name FROM generate_series(0, 15) i UNION ALL SELECT 'ROOMS.alias') l
WHERE p.stream = 'ROOMS'
ON CONFLICT (stream) DO NOTHING;
DELETE FROM projector_positions WHERE stream = 'ROOMS';

-- A sync response reads each user's memberships as of its G, which may lie
-- before the current state where lanes have applied more: this index finds
-- a user's member entries whether current or not.
CREATE INDEX room_state_member_user ON room_state (state_key, room_id, from_pos) WHERE type = 'm.room.member';

-- How far each ROOMS lane is complete through beyond its own last record
-- (projector_positions): moved up to the stream's head by an idle lane's
-- check, so it depends on when the checks ran, not on the log alone, and
-- store.Dump leaves it out (a replay is complete through its target).
CREATE TABLE projector_lane_complete (
    lane text PRIMARY KEY,
    seq  bigint NOT NULL
);
