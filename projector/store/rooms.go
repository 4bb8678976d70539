package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Rooms: creation, heads (what the next event builds on), room events and
// their state entries, the denormalised summary, state at a position,
// memberships, history, and forgetting.

// RoomHead is what the next event of a room is built on.
type RoomHead struct {
	RoomID      string
	Version     string
	LastSeq     uint64
	LastEventID string
	LastPos     int64
	Depth       int64
	Published   bool
}

// AuthSnapshot is a room's head and its complete current state, as
// authorising events needs it. The events come back in no order.
type AuthSnapshot struct {
	Head   RoomHead
	Events []IDPDU
}

// IDPDU is an event ID with its signed PDU, and whether it was redacted.
type IDPDU struct {
	EventID  string
	PDU      []byte
	Redacted bool
}

// RoomAuthSnapshot reads a room's head and current state in one round
// trip, from one snapshot. ErrNotFound means no such room.
func (s *Store) RoomAuthSnapshot(ctx context.Context, roomID string) (AuthSnapshot, error) {
	var snap AuthSnapshot
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT room_id, room_version, last_seq, last_event_id, last_pos, depth, published FROM rooms WHERE room_id = $1`, roomID)
		b.Queue(`SELECT e.event_id, e.pdu, e.redacted_because IS NOT NULL FROM room_state s JOIN events e ON e.event_id = s.event_id
			WHERE s.room_id = $1 AND s.to_pos IS NULL`, roomID)
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		h := &snap.Head
		var lastSeq int64
		if err := br.QueryRow().Scan(&h.RoomID, &h.Version, &lastSeq, &h.LastEventID, &h.LastPos, &h.Depth, &h.Published); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		h.LastSeq = uint64(lastSeq)
		rows, err := br.Query()
		if err != nil {
			return err
		}
		snap.Events, err = pgx.CollectRows(rows, pgx.RowToStructByPos[IDPDU])
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return snap, ErrNotFound
	}
	if err != nil {
		return snap, fmt.Errorf("room %s snapshot: %w", roomID, err)
	}
	return snap, nil
}

// RoomHeadOf returns a room's head, or ErrNotFound.
func (s *Store) RoomHeadOf(ctx context.Context, roomID string) (RoomHead, error) {
	var h RoomHead
	var lastSeq int64
	err := s.pool.QueryRow(ctx, `SELECT room_id, room_version, last_seq, last_event_id, last_pos, depth, published FROM rooms WHERE room_id = $1`,
		roomID).Scan(&h.RoomID, &h.Version, &lastSeq, &h.LastEventID, &h.LastPos, &h.Depth, &h.Published)
	if errors.Is(err, pgx.ErrNoRows) {
		return h, ErrNotFound
	}
	if err != nil {
		return h, fmt.Errorf("room %s: %w", roomID, err)
	}
	h.LastSeq = uint64(lastSeq)
	return h, nil
}

// CreatePos returns the position of a room's m.room.create event, or
// ErrNotFound when the projection holds none (an unknown room).
func (s *Store) CreatePos(ctx context.Context, roomID string) (int64, error) {
	var pos int64
	err := s.pool.QueryRow(ctx, `SELECT from_pos FROM room_state
		WHERE room_id = $1 AND type = 'm.room.create' AND state_key = '' ORDER BY from_pos LIMIT 1`, roomID).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("room %s create position: %w", roomID, err)
	}
	return pos, nil
}

// atPos is the SQL condition for the state entries of room_state s in
// force just after position $2, or the current ones when $2 is 0.
const atPos = `(CASE WHEN $2::bigint = 0 THEN s.to_pos IS NULL ELSE s.from_pos <= $2 AND (s.to_pos IS NULL OR s.to_pos > $2) END)`

// StateAt returns a room's state just after position pos (0: now).
func (s *Store) StateAt(ctx context.Context, roomID string, pos int64) ([]StoredEvent, error) {
	return s.stateQuery(ctx, `SELECT `+storedEventCols+` FROM room_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND `+atPos+` ORDER BY e.pos`, roomID, pos)
}

// StateEvent returns one state event just after position pos (0: now),
// or ErrNotFound.
func (s *Store) StateEvent(ctx context.Context, roomID string, pos int64, typ, stateKey string) (StoredEvent, error) {
	evs, err := s.stateQuery(ctx, `SELECT `+storedEventCols+` FROM room_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND s.type = $3 AND s.state_key = $4 AND `+atPos, roomID, pos, typ, stateKey)
	if err != nil {
		return StoredEvent{}, err
	}
	if len(evs) == 0 {
		return StoredEvent{}, ErrNotFound
	}
	return evs[0], nil
}

// Members returns a room's membership events at pos (0: current), those
// with a membership in include (if any) and not in exclude.
func (s *Store) Members(ctx context.Context, roomID string, pos int64, include, exclude []string) ([]StoredEvent, error) {
	q := `SELECT ` + storedEventCols + ` FROM room_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND s.type = 'm.room.member'
		AND ` + atPos + `
		AND (cardinality($3::text[]) = 0 OR s.membership = ANY($3))
		AND NOT (s.membership = ANY($4))
		ORDER BY s.state_key`
	if include == nil {
		include = []string{}
	}
	if exclude == nil {
		exclude = []string{}
	}
	return s.stateQuery(ctx, q, roomID, pos, include, exclude)
}

func (s *Store) stateQuery(ctx context.Context, q string, args ...any) ([]StoredEvent, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("state query: %w", err)
	}
	evs, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("state query: %w", err)
	}
	return evs, nil
}

// MembershipSpan is one period of a user's membership in a room.
type MembershipSpan struct {
	Membership string
	FromPos    int64
	ToPos      int64 // 0: still current
}

// VisibilitySpan is one period of a room's history visibility.
type VisibilitySpan struct {
	Visibility string
	FromPos    int64
	ToPos      int64 // 0: still current
}

// RoomHistory is what history-visibility checks need about one user and
// one room: every membership period of the user and every history
// visibility period of the room, in order.
type RoomHistory struct {
	Memberships []MembershipSpan
	Visibility  []VisibilitySpan
}

// UserRoomHistory reads a user's membership periods and the room's
// history-visibility periods in one round trip.
func (s *Store) UserRoomHistory(ctx context.Context, roomID, userID string) (RoomHistory, error) {
	var h RoomHistory
	rows, err := s.pool.Query(ctx, `SELECT s.type, COALESCE(s.membership, ''),
			COALESCE(convert_from(e.client, 'UTF8')::jsonb #>> '{content,history_visibility}', ''), s.from_pos, COALESCE(s.to_pos, 0)
		FROM room_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND ((s.type = 'm.room.member' AND s.state_key = $2) OR (s.type = 'm.room.history_visibility' AND s.state_key = ''))
		ORDER BY s.from_pos`, roomID, userID)
	if err != nil {
		return h, fmt.Errorf("room history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ, membership, vis string
		var from, to int64
		if err := rows.Scan(&typ, &membership, &vis, &from, &to); err != nil {
			return h, fmt.Errorf("room history: %w", err)
		}
		if typ == "m.room.member" {
			h.Memberships = append(h.Memberships, MembershipSpan{membership, from, to})
		} else {
			h.Visibility = append(h.Visibility, VisibilitySpan{vis, from, to})
		}
	}
	return h, rows.Err()
}

// JoinedRooms lists the rooms a user is joined to.
func (s *Store) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	return joinedRooms(ctx, s.pool, userID)
}

// joinedRooms is JoinedRooms through q (the pool, or a snapshot).
func joinedRooms(ctx context.Context, q rowsQueryer, userID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT room_id FROM room_state
		WHERE type = 'm.room.member' AND state_key = $1 AND to_pos IS NULL AND membership = 'join' ORDER BY room_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("joined rooms: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("joined rooms: %w", err)
	}
	return ids, nil
}

// RoomsWithMembership lists the rooms where a user's current membership is
// one of memberships.
func (s *Store) RoomsWithMembership(ctx context.Context, userID string, memberships []string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT room_id FROM room_state
		WHERE type = 'm.room.member' AND state_key = $1 AND to_pos IS NULL AND membership = ANY($2) ORDER BY room_id`, userID, memberships)
	if err != nil {
		return nil, fmt.Errorf("rooms with membership: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("rooms with membership: %w", err)
	}
	return ids, nil
}

// SharesRoom reports whether two users are both joined to some room.
func (s *Store) SharesRoom(ctx context.Context, a, b string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM room_state x JOIN room_state y
		ON y.room_id = x.room_id AND y.type = 'm.room.member' AND y.state_key = $2 AND y.to_pos IS NULL AND y.membership = 'join'
		WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.to_pos IS NULL AND x.membership = 'join')`, a, b).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("shares room: %w", err)
	}
	return ok, nil
}

// Forgotten reports whether a user has forgotten a room.
func (s *Store) Forgotten(ctx context.Context, userID, roomID string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2)", userID, roomID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("forgotten: %w", err)
	}
	return ok, nil
}

// RoomEventRow is one room event as the projector writes it.
type RoomEventRow struct {
	Pos            int64
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	OriginServerTS int64
	Depth          int64
	Membership     string // for m.room.member
	Client         []byte // client-format JSON, without unsigned
	PDU            []byte
	TxnDevice      string
	TxnID          string
	// For unread counts past their bound: the user IDs in m.mentions.
	Mentions []string
}

// CreateRoom inserts the room row of a create event.
func (t *Tx) CreateRoom(roomID, version, creator string, ts int64) {
	t.queue(`INSERT INTO rooms (room_id, room_version, creator, created_ts, last_seq, last_event_id, last_pos, depth)
		VALUES ($1, $2, $3, $4, 0, '', 0, 0) ON CONFLICT DO NOTHING`, roomID, version, creator, ts)
}

// AddRoomEvent stores an event and, for a state event, makes it the
// current state entry for its key.
func (t *Tx) AddRoomEvent(e *RoomEventRow) {
	t.events = append(t.events, e)
	if e.StateKey == nil {
		return
	}
	var membership *string
	if e.Type == "m.room.member" {
		membership = &e.Membership
	}
	if e.Type != "m.room.member" {
		t.queue(`UPDATE room_state SET to_pos = $4 WHERE room_id = $1 AND type = $2 AND state_key = $3 AND to_pos IS NULL`,
			e.RoomID, e.Type, *e.StateKey, e.Pos)
	} else {
		// Close the member's previous entry and adjust the member counts
		// by what it was and what it becomes: constant work per change,
		// however large the room.
		t.queue(`WITH closed AS (
				UPDATE room_state SET to_pos = $3 WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2 AND to_pos IS NULL
				RETURNING membership)
			UPDATE rooms SET
				joined_members = joined_members + (CASE WHEN $4 = 'join' THEN 1 ELSE 0 END)
					- (SELECT count(*) FROM closed WHERE membership = 'join'),
				invited_members = invited_members + (CASE WHEN $4 = 'invite' THEN 1 ELSE 0 END)
					- (SELECT count(*) FROM closed WHERE membership = 'invite')
			WHERE room_id = $1`, e.RoomID, *e.StateKey, e.Pos, e.Membership)
	}
	t.queue(`INSERT INTO room_state (room_id, type, state_key, event_id, membership, from_pos) VALUES ($1, $2, $3, $4, $5, $6)`,
		e.RoomID, e.Type, *e.StateKey, e.EventID, membership, e.Pos)
	if e.Type == "m.room.member" {
		if e.Membership == "join" || e.Membership == "invite" {
			t.queue("DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2", *e.StateKey, e.RoomID)
		}
	}
}

// summaryColumns maps the state types whose content is denormalised onto
// rooms to the column and content field.
var summaryColumns = map[string][2]string{
	"m.room.name":               {"name", "name"},
	"m.room.topic":              {"topic", "topic"},
	"m.room.avatar":             {"avatar_url", "url"},
	"m.room.canonical_alias":    {"canonical_alias", "alias"},
	"m.room.join_rules":         {"join_rule", "join_rule"},
	"m.room.history_visibility": {"history_visibility", "history_visibility"},
	"m.room.guest_access":       {"guest_access", "guest_access"},
	"m.room.create":             {"room_type", "type"},
}

// UpdateSummary refreshes the denormalised column for a current-state
// event with empty state key (content as it now reads, maybe redacted).
func (t *Tx) UpdateSummary(roomID, typ string, content json.RawMessage) {
	col, ok := summaryColumns[typ]
	if !ok {
		return
	}
	var c map[string]any
	_ = json.Unmarshal(content, &c)
	var val *string
	if s, ok := c[col[1]].(string); ok && s != "" {
		val = &s
	}
	t.queue(fmt.Sprintf("UPDATE rooms SET %s = $2 WHERE room_id = $1", col[0]), roomID, val)
}

// AdvanceRoom records the newest record and event of a room (an empty
// lastEventID: a record without events, which moves only last_seq).
func (t *Tx) AdvanceRoom(roomID string, seq uint64, lastEventID string, lastPos, depth int64) {
	if t.heads == nil {
		t.heads = map[string]roomHead{}
	}
	h, ok := t.heads[roomID]
	if !ok {
		t.order = append(t.order, roomID)
	}
	h.seq = seq
	if lastEventID != "" {
		h.eventID, h.pos, h.depth = lastEventID, lastPos, depth
	}
	t.heads[roomID] = h
}

// pending queues the coalesced writes: the batch's room events in one
// multi-row insert, then each room's head once. With copyLater, a bulk
// transaction's last send (ProjectFresh) keeps the events for a COPY after
// the queued statements instead, which is the same order.
func (t *Tx) pending(copyLater bool) {
	if n := len(t.events); n > 0 && !(copyLater && t.copier != nil) {
		pos := make([]int64, n)
		ids, rooms, types, senders := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		keys, txnDevs, txnIDs := make([]*string, n), make([]*string, n), make([]*string, n)
		ts := make([]int64, n)
		clients, pdus := make([][]byte, n), make([][]byte, n)
		// text[][] needs rectangular arrays, so mentions travel as one
		// joined string per event and are split back in SQL.
		mentions := make([]string, n)
		for i, e := range t.events {
			pos[i], ids[i], rooms[i], types[i], keys[i], senders[i], ts[i] = e.Pos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.OriginServerTS
			clients[i], pdus[i] = e.Client, e.PDU
			mentions[i] = strings.Join(e.Mentions, "\n")
			if e.TxnID != "" {
				txnDevs[i], txnIDs[i] = &e.TxnDevice, &e.TxnID
			}
		}
		t.queue(`INSERT INTO events (pos, event_id, room_id, type, state_key, sender, origin_server_ts, client, pdu, txn_device, txn_id, mentions)
			SELECT p, id, r, ty, k, se, ts, c, pd, td, ti, CASE WHEN m = '' THEN NULL ELSE string_to_array(m, E'\n') END
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
				$8::bytea[], $9::bytea[], $10::text[], $11::text[], $12::text[])
				AS x(p, id, r, ty, k, se, ts, c, pd, td, ti, m)`,
			pos, ids, rooms, types, keys, senders, ts, clients, pdus, txnDevs, txnIDs, mentions)
		t.events = t.events[:0]
	}
	t.flushSearch()
	if t.keepHeads {
		return // a fresh build writes them at the end (FreshHeads)
	}
	if len(t.order) > 0 {
		t.queue(roomHeadsSQL, roomHeadsArgs(t.order, t.heads)...)
	}
	t.heads, t.order = nil, nil
}

// roomHeadsSQL writes rooms' heads (roomHeadsArgs) in one statement. A
// head without an event (a record that only moves the room's sequence)
// keeps the room's newest event; the sequence only rises (a record set
// aside may have moved it already).
const roomHeadsSQL = `UPDATE rooms r SET last_seq = GREATEST(r.last_seq, x.s),
		last_event_id = CASE WHEN x.e = '' THEN r.last_event_id ELSE x.e END,
		last_pos = CASE WHEN x.e = '' THEN r.last_pos ELSE x.p END,
		depth = CASE WHEN x.e = '' THEN r.depth ELSE x.d END
	FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[]) AS x(id, s, e, p, d)
	WHERE r.room_id = x.id`

// roomHeadsArgs are roomHeadsSQL's arguments for the heads of rooms.
func roomHeadsArgs(rooms []string, heads map[string]roomHead) []any {
	n := len(rooms)
	seqs, ids, pos, depths := make([]int64, n), make([]string, n), make([]int64, n), make([]int64, n)
	for i, roomID := range rooms {
		h := heads[roomID]
		seqs[i], ids[i], pos[i], depths[i] = int64(h.seq), h.eventID, h.pos, h.depth
	}
	return []any{rooms, seqs, ids, pos, depths}
}

// ForgetRoom hides a room from a user.
func (t *Tx) ForgetRoom(userID, roomID string) {
	t.queue("INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", userID, roomID)
}
