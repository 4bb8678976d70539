package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

// Sync reads happen in one REPEATABLE READ snapshot that also reads the
// projector positions, so a response holds exactly the records up to the
// positions it reports: the next_batch built from them can never skip or
// repeat an event.
//
// SyncTx's reads of rooms are here; those of one other entity live with
// it (accountdata.go, filters.go, receipts.go, todevice.go, keys.go,
// devicelists.go, pushcounts.go).

// Positions are the applied stream positions a sync snapshot reflects.
type Positions struct {
	Rooms    uint64
	Accounts uint64
	Receipts uint64
}

// UserMembership is one of a user's membership periods in a room.
type UserMembership struct {
	RoomID     string
	Membership string
	EventID    string
	FromPos    int64
	ToPos      int64 // 0: current
}

// SyncTx is a read-only snapshot for assembling one sync response.
type SyncTx struct {
	tx         pgx.Tx
	Pos        Positions
	pushEvents *matrix.EventCache
}

// SyncSnapshot runs fn in a read-only snapshot whose Pos holds the applied
// positions of the rooms and accounts projections. Pos.Rooms is the
// highest ROOMS lane position: everything the snapshot holds, as a read
// of current state sees it. A sync response uses SyncSnapshotThrough.
func (s *Store) SyncSnapshot(ctx context.Context, fn func(*SyncTx) error) error {
	return s.syncSnapshot(ctx, 0, false, fn)
}

// SyncSnapshotThrough is SyncSnapshot for a sync response: Pos.Rooms is a
// G such that every ROOMS record at or below G is in the snapshot (the
// highest of through, which the caller knew to be applied before it
// called, and the lowest lane position), and the snapshot's room reads
// show the rooms as of G even where lanes have applied more.
func (s *Store) SyncSnapshotThrough(ctx context.Context, through uint64, fn func(*SyncTx) error) error {
	return s.syncSnapshot(ctx, through, true, fn)
}

func (s *Store) syncSnapshot(ctx context.Context, through uint64, exact bool, fn func(*SyncTx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		st := &SyncTx{tx: tx, pushEvents: &s.pushEvents}
		rows, err := tx.Query(ctx, "SELECT stream, seq FROM projector_positions")
		if err != nil {
			return fmt.Errorf("sync positions: %w", err)
		}
		var lanes [eventlog.RoomLaneCount]uint64
		for rows.Next() {
			var name string
			var seq int64
			if err := rows.Scan(&name, &seq); err != nil {
				rows.Close()
				return err
			}
			switch name {
			case eventlog.StreamAccounts:
				st.Pos.Accounts = uint64(seq)
			case eventlog.StreamReceipts:
				st.Pos.Receipts = uint64(seq)
			default:
				if i := eventlog.LaneIndex(name); i >= 0 {
					lanes[i] = uint64(seq)
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// A lane is complete through the higher of its applied position
		// and what its idle check recorded.
		rows, err = tx.Query(ctx, "SELECT lane, seq FROM projector_lane_complete")
		if err != nil {
			return fmt.Errorf("sync lane positions: %w", err)
		}
		for rows.Next() {
			var name string
			var seq int64
			if err := rows.Scan(&name, &seq); err != nil {
				rows.Close()
				return err
			}
			if i := eventlog.LaneIndex(name); i >= 0 {
				lanes[i] = max(lanes[i], uint64(seq))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		low, high := lanes[0], lanes[0]
		for _, p := range lanes[1:] {
			low, high = min(low, p), max(high, p)
		}
		st.Pos.Rooms = high
		if exact {
			st.Pos.Rooms = max(through, low)
		}
		return fn(st)
	})
}

// roomsHi is the room position below which the snapshot's room reads look:
// the first position of the record after Pos.Rooms.
func (t *SyncTx) roomsHi() int64 { return eventlog.EventPos(t.Pos.Rooms+1, 0) }

// Memberships returns the user's membership periods that are current, or
// (with since > 0) that ended at or after position since, for rooms the
// user has not forgotten. A forgotten room whose leave is in the range
// (incremental syncs only) is still given, so that the user's other
// devices learn of the leave; later ranges no longer see it.
func (t *SyncTx) Memberships(ctx context.Context, userID string, since int64, includeEnded bool) ([]UserMembership, error) {
	// As of the snapshot's G ($4): a period that ends after G is current.
	rows, err := t.tx.Query(ctx, `SELECT s.room_id, s.membership, s.event_id, s.from_pos,
			CASE WHEN s.to_pos IS NULL OR s.to_pos >= $4 THEN 0 ELSE s.to_pos END
		FROM room_state s
		WHERE s.type = 'm.room.member' AND s.state_key = $1 AND s.from_pos < $4
		  AND (s.to_pos IS NULL OR s.to_pos >= $4 OR ($3 AND s.to_pos >= $2))
		  AND (NOT EXISTS (SELECT 1 FROM forgotten_rooms f WHERE f.user_id = $1 AND f.room_id = s.room_id)
		    OR ($3 AND EXISTS (SELECT 1 FROM room_state c WHERE c.room_id = s.room_id AND c.type = 'm.room.member'
		      AND c.state_key = $1 AND c.from_pos < $4 AND (c.to_pos IS NULL OR c.to_pos >= $4)
		      AND c.membership IN ('leave', 'ban') AND c.from_pos >= $2)))
		ORDER BY s.room_id, s.from_pos`, userID, since, includeEnded, t.roomsHi())
	if err != nil {
		return nil, fmt.Errorf("sync memberships: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[UserMembership])
}

// RoomRange is a room and the range of positions [From, To) to read.
type RoomRange struct {
	RoomID string
	From   int64
	To     int64
}

// EventMatch narrows the events a timeline query returns, so that a
// timeline limit counts matching events. Type patterns are globs ("*"
// matches any run); nil lists do not constrain.
type EventMatch struct {
	Types, NotTypes     []string
	Senders, NotSenders []string
}

// likePatterns turns globs into LIKE patterns.
func likePatterns(globs []string) []string {
	if globs == nil {
		return nil
	}
	out := make([]string, len(globs))
	r := strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`, "*", "%")
	for i, g := range globs {
		out[i] = r.Replace(g)
	}
	return out
}

// Timelines returns, per room, the newest events in its range that match,
// newest first, at most limit of them.
func (t *SyncTx) Timelines(ctx context.Context, ranges []RoomRange, match EventMatch, limit int) (map[string][]StoredEvent, error) {
	out := map[string][]StoredEvent{}
	if len(ranges) == 0 {
		return out, nil
	}
	ids, froms, tos := splitRanges(ranges)
	types, notTypes := likePatterns(match.Types), likePatterns(match.NotTypes)
	rows, err := t.tx.Query(ctx, `SELECT `+storedEventCols+`
		FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS r(room_id, lo, hi)
		CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.room_id = r.room_id AND x.pos >= r.lo AND x.pos < r.hi
			AND ($5::text[] IS NULL OR x.type LIKE ANY($5))
			AND ($6::text[] IS NULL OR NOT x.type LIKE ANY($6))
			AND ($7::text[] IS NULL OR x.sender = ANY($7))
			AND ($8::text[] IS NULL OR NOT x.sender = ANY($8))
			ORDER BY x.pos DESC LIMIT $4) e`, ids, froms, tos, limit, types, notTypes, match.Senders, match.NotSenders)
	if err != nil {
		return nil, fmt.Errorf("sync timelines: %w", err)
	}
	evs, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("sync timelines: %w", err)
	}
	for _, e := range evs {
		out[e.RoomID] = append(out[e.RoomID], e)
	}
	return out, nil
}

func splitRanges(ranges []RoomRange) ([]string, []int64, []int64) {
	ids := make([]string, len(ranges))
	froms := make([]int64, len(ranges))
	tos := make([]int64, len(ranges))
	for i, r := range ranges {
		ids[i], froms[i], tos[i] = r.RoomID, r.From, r.To
	}
	return ids, froms, tos
}

// StateAtPoints returns, per room, the state in force just before
// position To (the start of its timeline). With From > 0 only the entries
// that were set at or after From are returned (the change since a token).
func (t *SyncTx) StateAtPoints(ctx context.Context, ranges []RoomRange) (map[string][]StoredEvent, error) {
	out := map[string][]StoredEvent{}
	if len(ranges) == 0 {
		return out, nil
	}
	ids, froms, tos := splitRanges(ranges)
	rows, err := t.tx.Query(ctx, `SELECT `+storedEventCols+`
		FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS r(room_id, lo, hi)
		JOIN room_state s ON s.room_id = r.room_id AND s.from_pos < r.hi AND (s.to_pos IS NULL OR s.to_pos >= r.hi) AND s.from_pos >= r.lo
		JOIN events e ON e.event_id = s.event_id
		ORDER BY e.pos`, ids, froms, tos)
	if err != nil {
		return nil, fmt.Errorf("sync state: %w", err)
	}
	evs, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("sync state: %w", err)
	}
	for _, e := range evs {
		out[e.RoomID] = append(out[e.RoomID], e)
	}
	return out, nil
}

// LazyStateAtPoints is StateAtPoints for a client that lazy-loads
// members: of the member events, only those of members[i] in ranges[i]
// (the senders its timeline shows, and the user), so a sync in a room of
// 10,000 members reads a few member events instead of all of them. The
// other state is all read, as StateAtPoints reads it.
func (t *SyncTx) LazyStateAtPoints(ctx context.Context, ranges []RoomRange, members [][]string) (map[string][]StoredEvent, error) {
	out := map[string][]StoredEvent{}
	if len(ranges) == 0 {
		return out, nil
	}
	ids, froms, tos := splitRanges(ranges)
	rows, err := t.tx.Query(ctx, `SELECT `+storedEventCols+`
		FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS r(room_id, lo, hi)
		JOIN room_state s ON s.room_id = r.room_id AND s.type <> 'm.room.member'
			AND s.from_pos < r.hi AND (s.to_pos IS NULL OR s.to_pos >= r.hi) AND s.from_pos >= r.lo
		JOIN events e ON e.event_id = s.event_id`, ids, froms, tos)
	if err != nil {
		return nil, fmt.Errorf("sync lazy state: %w", err)
	}
	evs, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("sync lazy state: %w", err)
	}
	var mRooms, mUsers []string
	var mFroms, mTos []int64
	for i, r := range ranges {
		for _, u := range members[i] {
			mRooms, mUsers = append(mRooms, r.RoomID), append(mUsers, u)
			mFroms, mTos = append(mFroms, r.From), append(mTos, r.To)
		}
	}
	if len(mRooms) > 0 {
		rows, err := t.tx.Query(ctx, `SELECT `+storedEventCols+`
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS r(room_id, user_id, lo, hi)
			JOIN room_state s ON s.room_id = r.room_id AND s.type = 'm.room.member' AND s.state_key = r.user_id
				AND s.from_pos < r.hi AND (s.to_pos IS NULL OR s.to_pos >= r.hi) AND s.from_pos >= r.lo
			JOIN events e ON e.event_id = s.event_id`, mRooms, mUsers, mFroms, mTos)
		if err != nil {
			return nil, fmt.Errorf("sync lazy members: %w", err)
		}
		mevs, err := pgx.CollectRows(rows, scanEvent)
		if err != nil {
			return nil, fmt.Errorf("sync lazy members: %w", err)
		}
		evs = append(evs, mevs...)
	}
	// In position order, as StateAtPoints returns them. A user named
	// twice for a room would be read twice; keep one.
	slices.SortFunc(evs, func(a, b StoredEvent) int { return cmp.Compare(a.Pos, b.Pos) })
	evs = slices.CompactFunc(evs, func(a, b StoredEvent) bool { return a.Pos == b.Pos })
	for _, e := range evs {
		out[e.RoomID] = append(out[e.RoomID], e)
	}
	return out, nil
}

// MemberKeysAtPoints returns, per room, the state keys of the member
// events in force just before position To (set at or after From): who a
// state section would name, for a lazy-loading build that did not read
// their events.
func (t *SyncTx) MemberKeysAtPoints(ctx context.Context, ranges []RoomRange) (map[string][]string, error) {
	out := map[string][]string{}
	if len(ranges) == 0 {
		return out, nil
	}
	ids, froms, tos := splitRanges(ranges)
	rows, err := t.tx.Query(ctx, `SELECT s.room_id, s.state_key
		FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS r(room_id, lo, hi)
		JOIN room_state s ON s.room_id = r.room_id AND s.type = 'm.room.member'
			AND s.from_pos < r.hi AND (s.to_pos IS NULL OR s.to_pos >= r.hi) AND s.from_pos >= r.lo`, ids, froms, tos)
	if err != nil {
		return nil, fmt.Errorf("sync member keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, key string
		if err := rows.Scan(&room, &key); err != nil {
			return nil, fmt.Errorf("sync member keys: %w", err)
		}
		out[room] = append(out[room], key)
	}
	return out, rows.Err()
}

// Histories returns the user's membership periods and the rooms'
// history-visibility periods, for history visibility checks.
func (t *SyncTx) Histories(ctx context.Context, userID string, roomIDs []string) (map[string]*Visibility, error) {
	return histories(ctx, t.tx, userID, roomIDs)
}

// Histories is SyncTx.Histories outside a sync snapshot: the visibility
// of each of roomIDs for userID, read in one query.
func (s *Store) Histories(ctx context.Context, userID string, roomIDs []string) (map[string]*Visibility, error) {
	return histories(ctx, s.pool, userID, roomIDs)
}

// rowsQueryer is what histories reads through: a pool or a transaction.
type rowsQueryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func histories(ctx context.Context, q rowsQueryer, userID string, roomIDs []string) (map[string]*Visibility, error) {
	out := make(map[string]*Visibility, len(roomIDs))
	for _, id := range roomIDs {
		out[id] = &Visibility{UserID: userID, RoomID: id}
	}
	if len(roomIDs) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, `SELECT s.room_id, s.type, COALESCE(s.membership, ''),
			COALESCE(convert_from(e.client, 'UTF8')::jsonb #>> '{content,history_visibility}', ''), s.from_pos, COALESCE(s.to_pos, 0)
		FROM room_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id = ANY($1) AND ((s.type = 'm.room.member' AND s.state_key = $2) OR (s.type = 'm.room.history_visibility' AND s.state_key = ''))
		ORDER BY s.from_pos`, roomIDs, userID)
	if err != nil {
		return nil, fmt.Errorf("histories: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, typ, membership, vis string
		var from, to int64
		if err := rows.Scan(&room, &typ, &membership, &vis, &from, &to); err != nil {
			return nil, err
		}
		v := out[room]
		if typ == "m.room.member" {
			v.Hist.Memberships = append(v.Hist.Memberships, MembershipSpan{membership, from, to})
		} else {
			v.Hist.Visibility = append(v.Hist.Visibility, VisibilitySpan{vis, from, to})
		}
	}
	return out, rows.Err()
}

// StrippedState returns, per room, the current state events an invitee
// may see before joining: the room's identity and the user's own member
// event.
func (t *SyncTx) StrippedState(ctx context.Context, userID string, roomIDs []string) (map[string][]StoredEvent, error) {
	out := map[string][]StoredEvent{}
	if len(roomIDs) == 0 {
		return out, nil
	}
	rows, err := t.tx.Query(ctx, `SELECT `+storedEventCols+` FROM room_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id = ANY($1) AND s.from_pos < $3 AND (s.to_pos IS NULL OR s.to_pos >= $3) AND (
			(s.state_key = '' AND s.type IN ('m.room.create', 'm.room.join_rules', 'm.room.name', 'm.room.avatar',
				'm.room.canonical_alias', 'm.room.encryption', 'm.room.topic'))
			OR (s.type = 'm.room.member' AND s.state_key = $2)
			OR (s.type = 'm.room.member' AND s.state_key = (SELECT x.sender FROM events x WHERE x.event_id = (
				SELECT y.event_id FROM room_state y WHERE y.room_id = s.room_id AND y.type = 'm.room.member' AND y.state_key = $2
					AND y.from_pos < $3 AND (y.to_pos IS NULL OR y.to_pos >= $3)))))
		ORDER BY e.pos`, roomIDs, userID, t.roomsHi())
	if err != nil {
		return nil, fmt.Errorf("sync invite state: %w", err)
	}
	evs, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("sync invite state: %w", err)
	}
	for _, e := range evs {
		out[e.RoomID] = append(out[e.RoomID], e)
	}
	return out, nil
}

// RoomSummary is the summary of a joined room.
type RoomSummary struct {
	RoomID         string
	JoinedMembers  int
	InvitedMembers int
	Heroes         []string
}

// Summaries returns member counts and up to five heroes (other members,
// by user ID) for each room.
func (t *SyncTx) Summaries(ctx context.Context, userID string, roomIDs []string) (map[string]RoomSummary, error) {
	out := map[string]RoomSummary{}
	if len(roomIDs) == 0 {
		return out, nil
	}
	rows, err := t.tx.Query(ctx, `SELECT r.room_id, r.joined_members, r.invited_members,
			ARRAY(SELECT s.state_key FROM room_state s WHERE s.room_id = r.room_id AND s.type = 'm.room.member'
				AND s.from_pos < $3 AND (s.to_pos IS NULL OR s.to_pos >= $3)
				AND s.membership IN ('join', 'invite') AND s.state_key <> $2 ORDER BY s.state_key LIMIT 5)
		FROM rooms r WHERE r.room_id = ANY($1)`, roomIDs, userID, t.roomsHi())
	if err != nil {
		return nil, fmt.Errorf("sync summaries: %w", err)
	}
	sums, err := pgx.CollectRows(rows, pgx.RowToStructByPos[RoomSummary])
	if err != nil {
		return nil, fmt.Errorf("sync summaries: %w", err)
	}
	for _, s := range sums {
		out[s.RoomID] = s
	}
	return out, nil
}

// SharingRooms returns which of users share a joined room with userID
// (userID itself included, if listed).
func (t *SyncTx) SharingRooms(ctx context.Context, userID string, users []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(users) == 0 {
		return out, nil
	}
	rows, err := t.tx.Query(ctx, `SELECT DISTINCT o.state_key FROM room_state o
		JOIN room_state me ON me.room_id = o.room_id AND me.type = 'm.room.member' AND me.state_key = $1
			AND me.from_pos < $3 AND (me.to_pos IS NULL OR me.to_pos >= $3) AND me.membership = 'join'
		WHERE o.type = 'm.room.member' AND o.state_key = ANY($2) AND o.from_pos < $3 AND (o.to_pos IS NULL OR o.to_pos >= $3)
			AND o.membership = 'join'`, userID, users, t.roomsHi())
	if err != nil {
		return nil, fmt.Errorf("sync presence audience: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// MemberEvents returns the current member events of the given (room,
// user) pairs, per room.
func (t *SyncTx) MemberEvents(ctx context.Context, rooms, users []string) (map[string][]StoredEvent, error) {
	out := map[string][]StoredEvent{}
	if len(rooms) == 0 {
		return out, nil
	}
	rows, err := t.tx.Query(ctx, `SELECT `+storedEventCols+`
		FROM unnest($1::text[], $2::text[]) AS p(room_id, user_id)
		JOIN room_state s ON s.room_id = p.room_id AND s.type = 'm.room.member' AND s.state_key = p.user_id
			AND s.from_pos < $3 AND (s.to_pos IS NULL OR s.to_pos >= $3)
		JOIN events e ON e.event_id = s.event_id
		ORDER BY e.pos`, rooms, users, t.roomsHi())
	if err != nil {
		return nil, fmt.Errorf("sync member events: %w", err)
	}
	evs, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("sync member events: %w", err)
	}
	for _, e := range evs {
		out[e.RoomID] = append(out[e.RoomID], e)
	}
	return out, nil
}
