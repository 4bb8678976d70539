package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Room events as readers get them (StoredEvent), by ID, transaction and
// position, and redaction. Rows are written with the room (rooms.go:
// AddRoomEvent).

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
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("event by txn: %w", err)
	}
	l := &txnLookup{room: roomID, sender: sender, device: device, txn: txnID, done: make(chan struct{})}
	s.txns.mu.Lock()
	s.txns.queue = append(s.txns.queue, l)
	if !s.txns.running {
		s.txns.running = true
		go s.drainTxnLookups()
	}
	s.txns.mu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		return "", fmt.Errorf("event by txn: %w", ctx.Err())
	}
	switch {
	case l.err != nil:
		return "", fmt.Errorf("event by txn: %w", l.err)
	case l.id == "":
		return "", ErrNotFound
	}
	return l.id, nil
}

// Every send and redaction looks its transaction ID up before it builds
// its event, and under load many do at once: rather than a round trip
// each, the lookups that arrive while one query runs go together in the
// next (txnLookups).

// txnLookups is the queue of EventByTxn lookups waiting for a query.
type txnLookups struct {
	mu      sync.Mutex
	queue   []*txnLookup
	running bool // a drainTxnLookups goroutine is working the queue
	queries int  // queries made so far (tests check the lookups share them)
}

// txnLookup is one EventByTxn lookup: its key, and its answer (id empty
// for none) once done is closed.
type txnLookup struct {
	room, sender, device, txn string
	id                        string
	err                       error
	done                      chan struct{}
}

// txnLookupBatch bounds the lookups answered by one query, and
// txnLookupTimeout how long the query may take: the callers have given up
// by then (their requests' own deadlines are shorter).
const (
	txnLookupBatch   = 256
	txnLookupTimeout = 30 * time.Second
)

// drainTxnLookups answers the queued lookups, a query for each batch
// taken off the queue, until the queue is empty.
func (s *Store) drainTxnLookups() {
	for {
		s.txns.mu.Lock()
		n := min(len(s.txns.queue), txnLookupBatch)
		if n == 0 {
			s.txns.running = false
			s.txns.mu.Unlock()
			return
		}
		batch := s.txns.queue[:n:n]
		s.txns.queue = s.txns.queue[n:]
		if len(s.txns.queue) == 0 {
			s.txns.queue = nil
		}
		s.txns.queries++
		s.txns.mu.Unlock()
		s.lookupTxns(batch)
	}
}

// lookupTxns answers batch with one query.
func (s *Store) lookupTxns(batch []*txnLookup) {
	defer func() {
		for _, l := range batch {
			close(l.done)
		}
	}()
	n := len(batch)
	rooms, senders, devices, txns := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, l := range batch {
		rooms[i], senders[i], devices[i], txns[i] = l.room, l.sender, l.device, l.txn
	}
	ctx, cancel := context.WithTimeout(context.Background(), txnLookupTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT x.i, e.event_id
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS x(r, s, d, t, i)
		JOIN events e ON e.room_id = x.r AND e.sender = x.s AND e.txn_device = x.d AND e.txn_id = x.t`,
		rooms, senders, devices, txns)
	if err == nil {
		var i int64
		var id string
		_, err = pgx.ForEachRow(rows, []any{&i, &id}, func() error {
			if i < 1 || i > int64(n) {
				return fmt.Errorf("lookup %d of %d answered", i, n)
			}
			batch[i-1].id = id
			return nil
		})
	}
	if err != nil {
		for _, l := range batch {
			l.id, l.err = "", err
		}
	}
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

// EventsByID returns the events with the given IDs that exist in one of
// rooms, by ID.
func (s *Store) EventsByID(ctx context.Context, rooms, ids []string) (map[string]StoredEvent, error) {
	evs, err := s.stateQuery(ctx, `SELECT `+storedEventCols+` FROM events e WHERE e.event_id = ANY($1) AND e.room_id = ANY($2)`, ids, rooms)
	if err != nil {
		return nil, err
	}
	out := make(map[string]StoredEvent, len(evs))
	for _, e := range evs {
		out[e.EventID] = e
	}
	return out, nil
}

// EventsAtPositions returns the events of roomID at the given positions,
// by position.
func (s *Store) EventsAtPositions(ctx context.Context, roomID string, positions []int64) (map[int64]StoredEvent, error) {
	evs, err := s.stateQuery(ctx, `SELECT `+storedEventCols+` FROM events e WHERE e.pos = ANY($1) AND e.room_id = $2`, positions, roomID)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]StoredEvent, len(evs))
	for _, e := range evs {
		out[e.Pos] = e
	}
	return out, nil
}

// RedactionTarget is what applying a redaction needs of the event it
// names.
type RedactionTarget struct {
	RoomID   string
	PDU      []byte
	Type     string
	StateKey *string
	Current  bool // the current state entry for its key
}

// EventForRedaction returns what deciding and applying a redaction in
// roomID needs: the event it names (ok false for an unknown event; a
// redaction may name any event ID), and the room's current m.room.create
// and m.room.power_levels events, with whether each was redacted. It reads
// after everything queued so far, so within a batch the state is as of the
// record being applied. The caller checks that the target is in roomID
// before it uses anything else of it.
func (t *Tx) EventForRedaction(ctx context.Context, eventID, roomID string) (target RedactionTarget, ok bool, auth []IDPDU, err error) {
	// The reads go in one round trip with the writes queued before them,
	// after them in the same pipeline.
	t.pending(false)
	// Whether the target is current state is asked by its state key, so
	// that room_state_current answers it: room_state has no index by
	// event ID, and scanning it once per redaction grows with every room.
	t.batch.Queue(`SELECT e.room_id, e.pdu, e.type, e.state_key,
			EXISTS (SELECT 1 FROM room_state s WHERE s.room_id = e.room_id AND s.type = e.type AND s.state_key = e.state_key
				AND s.event_id = e.event_id AND s.to_pos IS NULL)
		FROM events e WHERE e.event_id = $1`, eventID).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&target.RoomID, &target.PDU, &target.Type, &target.StateKey, &target.Current)
		switch {
		case isNoRows(err):
			target = RedactionTarget{}
			return nil
		case err != nil:
			return fmt.Errorf("redaction target %s: %w", eventID, err)
		}
		ok = true
		return nil
	})
	t.batch.Queue(`SELECT e.event_id, e.pdu, e.redacted_because IS NOT NULL FROM room_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND s.type IN ('m.room.create', 'm.room.power_levels') AND s.state_key = '' AND s.to_pos IS NULL`, roomID).Query(func(rows pgx.Rows) error {
		var err error
		if auth, err = pgx.CollectRows(rows, pgx.RowToStructByPos[IDPDU]); err != nil {
			return fmt.Errorf("room %s auth state: %w", roomID, err)
		}
		return nil
	})
	err = t.tx.SendBatch(ctx, &t.batch).Close()
	t.batch = pgxBatch()
	if err != nil {
		return RedactionTarget{}, false, nil, err
	}
	return target, ok, auth, nil
}

// RedactEvent replaces an event's client form with its redacted form.
func (t *Tx) RedactEvent(eventID string, redactedClient, redactedBecause []byte) {
	t.queue("UPDATE events SET client = $2, redacted_because = $3 WHERE event_id = $1", eventID, redactedClient, redactedBecause)
}
