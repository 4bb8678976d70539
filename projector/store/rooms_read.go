package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

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

// StoredEvent is an event as readers get it.
type StoredEvent struct {
	Pos             int64
	EventID         string
	RoomID          string
	Type            string
	StateKey        *string
	Sender          string
	OriginServerTS  int64
	Client          []byte
	RedactedBecause []byte
	TxnDevice       string
	TxnID           string
	// PrevPos and PrevClient are the position and stored client form of
	// the state event this one replaced (its state entry was closed at
	// this event's position); zero and nil for anything else.
	PrevPos    int64
	PrevClient []byte
}

// storedEventCols reads an event and, for a state event, the state event
// it replaced: two lookups that the planner skips (a one-time filter on
// e.state_key) for events that are not state.
const storedEventCols = `e.pos, e.event_id, e.room_id, e.type, e.state_key, e.sender, e.origin_server_ts, e.client, e.redacted_because, COALESCE(e.txn_device, ''), COALESCE(e.txn_id, ''),
	COALESCE((SELECT ps.from_pos FROM room_state ps WHERE e.state_key IS NOT NULL AND ps.room_id = e.room_id AND ps.type = e.type
		AND ps.state_key = e.state_key AND ps.to_pos = e.pos), 0),
	(SELECT pe.client FROM room_state ps JOIN events pe ON pe.event_id = ps.event_id WHERE e.state_key IS NOT NULL
		AND ps.room_id = e.room_id AND ps.type = e.type AND ps.state_key = e.state_key AND ps.to_pos = e.pos)`

func scanEvent(row pgx.CollectableRow) (StoredEvent, error) {
	var e StoredEvent
	err := row.Scan(&e.Pos, &e.EventID, &e.RoomID, &e.Type, &e.StateKey, &e.Sender, &e.OriginServerTS, &e.Client, &e.RedactedBecause, &e.TxnDevice, &e.TxnID,
		&e.PrevPos, &e.PrevClient)
	return e, err
}

// Event returns one event of roomID by ID, or ErrNotFound, also when the
// event is in another room: a lookup by event ID never crosses rooms.
func (s *Store) Event(ctx context.Context, roomID, eventID string) (StoredEvent, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+storedEventCols+" FROM events e WHERE e.event_id = $1 AND e.room_id = $2", eventID, roomID)
	if err != nil {
		return StoredEvent{}, fmt.Errorf("event %s: %w", eventID, err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanEvent)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("event %s: %w", eventID, err)
	}
	return e, nil
}

// EventPDU returns the signed PDU of an event of roomID, or ErrNotFound
// (also for an event of another room).
func (s *Store) EventPDU(ctx context.Context, roomID, eventID string) ([]byte, error) {
	var pdu []byte
	err := s.pool.QueryRow(ctx, "SELECT pdu FROM events WHERE event_id = $1 AND room_id = $2", eventID, roomID).Scan(&pdu)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", eventID, err)
	}
	return pdu, nil
}

// EventByTxn finds the event a client transaction sent into a room, or
// ErrNotFound. Transactions are scoped to the room, as the request path is.
func (s *Store) EventByTxn(ctx context.Context, roomID, sender, device, txnID string) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, "SELECT event_id FROM events WHERE room_id = $1 AND sender = $2 AND txn_device = $3 AND txn_id = $4",
		roomID, sender, device, txnID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("event by txn: %w", err)
	}
	return id, nil
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

// RoomEvents pages through a room's events from the point from (a
// position: events before it have pos < from). Backwards it returns events
// with pos < from, newest first; forwards events with pos >= from, oldest
// first. to, when non-zero, bounds the page: backwards pos >= to, forwards
// pos < to.
func (s *Store) RoomEvents(ctx context.Context, roomID string, from int64, backwards bool, to int64, limit int) ([]StoredEvent, error) {
	var q string
	if backwards {
		q = `SELECT ` + storedEventCols + ` FROM events e WHERE e.room_id = $1 AND e.pos < $2 AND ($3::bigint = 0 OR e.pos >= $3)
			ORDER BY e.pos DESC LIMIT $4`
	} else {
		q = `SELECT ` + storedEventCols + ` FROM events e WHERE e.room_id = $1 AND e.pos >= $2 AND ($3::bigint = 0 OR e.pos < $3)
			ORDER BY e.pos ASC LIMIT $4`
	}
	return s.stateQuery(ctx, q, roomID, from, to, limit)
}

// JoinedRooms lists the rooms a user is joined to.
func (s *Store) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT room_id FROM room_state
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

// AliasRoom resolves an alias, or ErrNotFound.
func (s *Store) AliasRoom(ctx context.Context, alias string) (roomID, creator string, err error) {
	// Only aliases of rooms that exist: an alias whose room creation never
	// completed resolves to nothing.
	err = s.pool.QueryRow(ctx, `SELECT a.room_id, a.creator FROM room_aliases a JOIN rooms r ON r.room_id = a.room_id
		WHERE a.alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("alias %s: %w", alias, err)
	}
	return roomID, creator, nil
}

// RoomAliases lists a room's aliases.
func (s *Store) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias", roomID)
	if err != nil {
		return nil, fmt.Errorf("aliases of %s: %w", roomID, err)
	}
	as, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("aliases of %s: %w", roomID, err)
	}
	return as, nil
}

// PublicRoom is one entry of the public room directory.
type PublicRoom struct {
	RoomID            string
	Name              *string
	Topic             *string
	AvatarURL         *string
	CanonicalAlias    *string
	JoinRule          *string
	HistoryVisibility *string
	GuestAccess       *string
	RoomType          *string
	JoinedMembers     int
}

// PublicRooms lists published rooms, most members first, skipping offset,
// optionally filtered by a search term over name, topic and alias. It also
// returns the total number of matching rooms.
func (s *Store) PublicRooms(ctx context.Context, offset, limit int, search string) ([]PublicRoom, int, error) {
	rows, err := s.pool.Query(ctx, `SELECT room_id, name, topic, avatar_url, canonical_alias, join_rule, history_visibility,
			guest_access, room_type, joined_members, count(*) OVER ()
		FROM rooms WHERE published AND ($3 = '' OR
			strpos(lower(coalesce(name, '')), lower($3)) > 0 OR strpos(lower(coalesce(topic, '')), lower($3)) > 0 OR
			strpos(lower(coalesce(canonical_alias, '')), lower($3)) > 0)
		ORDER BY joined_members DESC, room_id OFFSET $1 LIMIT $2`, offset, limit, search)
	if err != nil {
		return nil, 0, fmt.Errorf("public rooms: %w", err)
	}
	defer rows.Close()
	var out []PublicRoom
	total := 0
	for rows.Next() {
		var r PublicRoom
		if err := rows.Scan(&r.RoomID, &r.Name, &r.Topic, &r.AvatarURL, &r.CanonicalAlias, &r.JoinRule, &r.HistoryVisibility,
			&r.GuestAccess, &r.RoomType, &r.JoinedMembers, &total); err != nil {
			return nil, 0, fmt.Errorf("public rooms: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	if len(out) == 0 && offset == 0 {
		total = 0
	} else if len(out) == 0 {
		// Past the end: count separately so the estimate stays right.
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM rooms WHERE published`).Scan(&total); err != nil {
			return nil, 0, err
		}
	}
	return out, total, nil
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
