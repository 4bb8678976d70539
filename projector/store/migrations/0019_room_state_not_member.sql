-- A room's state other than its members, by position: what a lazy-loading
-- sync reads besides the few member events it needs
-- (SyncTx.LazyStateAtPoints), without walking past every member of a big
-- room.
CREATE INDEX room_state_not_member ON room_state (room_id, from_pos) WHERE type <> 'm.room.member';
