package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// maxAppendAttempts bounds how often a room write re-reads and re-checks
// after losing the per-room append race.
const maxAppendAttempts = 16

// roomState is what a room write is built and authorised against.
type roomState struct {
	head  store.RoomHead
	state matrix.State
}

// loadRoom reads a room's head and current state from the projection.
func (s *Server) loadRoom(ctx context.Context, roomID string) (*roomState, error) {
	snap, err := s.store.RoomAuthSnapshot(ctx, roomID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, matrix.NotFound("room %s not found", roomID)
	}
	if err != nil {
		return nil, err
	}
	v := matrix.RoomVersion(snap.Head.Version)
	st := matrix.State{}
	for _, e := range snap.Events {
		ev, err := s.events.Parse(v, e.EventID, e.PDU)
		if err != nil {
			return nil, fmt.Errorf("room %s: stored state event: %w", roomID, err)
		}
		st = matrix.Apply(st, ev)
		if e.Redacted {
			// The auth rules read a redacted state event as redacted.
			if st, err = matrix.ApplyRedacted(st, ev); err != nil {
				return nil, fmt.Errorf("room %s: redacted state event: %w", roomID, err)
			}
		}
	}
	return &roomState{head: snap.Head, state: st}, nil
}

// roomEntry is this process's view of one room for writing: a lock that
// serialises this process's writers of the room (so they do not race each
// other on the log), and the room's state as of its last known record.
// The cached state may be stale (another process wrote since): the append
// then fails its expected-sequence check and the entry is reloaded, so a
// stale cache costs a retry, never a wrong event.
type roomEntry struct {
	mu sync.Mutex
	rs *roomState // nil: load from the projection
}

// roomCacheMax bounds the rooms whose state an api process keeps.
const roomCacheMax = 4096

type roomCache struct {
	mu sync.Mutex
	m  map[string]*roomEntry
}

func (c *roomCache) entry(roomID string) *roomEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= roomCacheMax {
		// Dropping everything is crude but safe: an entry still in use
		// only loses its exclusivity, and the log's check still decides.
		c.m = make(map[string]*roomEntry)
	}
	e, ok := c.m[roomID]
	if !ok {
		e = &roomEntry{}
		c.m[roomID] = e
	}
	return e
}

// txnRef identifies the client transaction behind a write.
type txnRef struct {
	sender, device, id string
}

// buildFunc returns the events to append given the room's state; it
// returns errors for requests the state makes invalid.
type buildFunc func(rs *roomState) ([]*matrix.ProtoEvent, error)

// writeRoom appends events to an existing room: it builds them against
// the room's state, authorises each against the state before it, and
// appends them expecting the room's last sequence. Losing that race means
// someone else changed the room: reload and re-check. It returns the
// appended events once the projection shows them.
func (s *Server) writeRoom(ctx context.Context, roomID string, txn *txnRef, build buildFunc) ([]*matrix.Event, error) {
	e := s.rooms.entry(roomID)
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		seq, events, retry, err := s.tryWriteRoom(ctx, e, roomID, txn, build)
		if err != nil {
			return nil, err
		}
		if retry {
			if s.retries != nil {
				s.retries.Inc()
			}
			continue
		}
		if len(events) == 0 && seq == 0 {
			return nil, nil
		}
		if err := s.awaitApplied(ctx, eventlog.RoomLaneOf(roomID), seq); err != nil {
			return nil, err
		}
		if events == nil {
			return nil, errDuplicateTxn
		}
		return events, nil
	}
	return nil, matrix.Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests, "the room is too busy; retry")
}

// tryWriteRoom is one attempt of writeRoom under the room's local lock.
// It returns the appended sequence and events; events is nil with a
// non-zero seq when the log recognised the transaction as a duplicate.
func (s *Server) tryWriteRoom(ctx context.Context, e *roomEntry, roomID string, txn *txnRef, build buildFunc) (seq uint64, events []*matrix.Event, retry bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fresh := false
	if e.rs == nil {
		rs, err := s.loadRoom(ctx, roomID)
		if err != nil {
			return 0, nil, false, err
		}
		e.rs, fresh = rs, true
	}
	rs := *e.rs // State is persistent: building on a copy leaves e.rs intact
	protos, err := build(&rs)
	if err == nil && len(protos) > 0 {
		events, err = s.buildEvents(ctx, &rs, protos)
	}
	if err != nil || len(protos) == 0 {
		// A refusal (or a no-op) must not come from a stale view: unless
		// the state was just loaded, check it against the log, and if the
		// room moved on, catch up and decide again.
		if !fresh {
			last, lerr := s.log.LastSeq(ctx, eventlog.StreamRooms, eventlog.RoomSubject(roomID))
			if lerr != nil {
				return 0, nil, false, logUnavailable(lerr)
			}
			if last != e.rs.head.LastSeq {
				e.rs = nil
				return 0, nil, true, s.awaitPosition(ctx, eventlog.RoomLaneOf(roomID), last)
			}
		}
		return 0, nil, false, err
	}
	rec := &eventlog.RoomEvents{RoomID: roomID, RoomVersion: rs.head.Version}
	for _, ev := range events {
		rec.Events = append(rec.Events, ev.JSON())
	}
	opts := eventlog.AppendOptions{ExpectSeq: eventlog.Expect(e.rs.head.LastSeq), Room: roomID}
	if txn != nil {
		rec.Sender, rec.DeviceID, rec.TxnID = txn.sender, txn.device, txn.id
		opts.MsgID = "txn:" + roomID + "|" + txn.sender + "|" + txn.device + "|" + txn.id
	}
	seq, dup, err := s.log.AppendDedup(ctx, eventlog.RoomSubject(roomID), rec, opts)
	if errors.Is(err, eventlog.ErrConflict) {
		e.rs = nil
		return 0, nil, true, s.catchUpRoom(ctx, roomID)
	}
	if err != nil {
		e.rs = nil
		s.logger.Error("append room events failed", "room_id", roomID, "err", err)
		return 0, nil, false, logUnavailable(err)
	}
	if dup {
		e.rs = nil
		return seq, nil, false, nil
	}
	rs.head.LastSeq = seq
	e.rs = &rs
	return seq, events, false, nil
}

// errDuplicateTxn means the log already held this client transaction
// (a concurrent retry won): the caller looks the event up by transaction.
var errDuplicateTxn = errors.New("duplicate transaction")

// catchUpRoom waits until the projection has applied the newest record on
// the room's subject, so the next read sees what beat us.
func (s *Server) catchUpRoom(ctx context.Context, roomID string) error {
	last, err := s.log.LastSeq(ctx, eventlog.StreamRooms, eventlog.RoomSubject(roomID))
	if err != nil {
		return logUnavailable(err)
	}
	return s.awaitPosition(ctx, eventlog.RoomLaneOf(roomID), last)
}

// buildEvents fills in the graph fields, signs, and authorises protos in
// order against rs, which it advances. Every event the api appends passes
// here, whichever endpoint made it, so this is where a redaction is held to
// its own room and to the redact level (authorizeRedaction).
func (s *Server) buildEvents(ctx context.Context, rs *roomState, protos []*matrix.ProtoEvent) ([]*matrix.Event, error) {
	v := matrix.RoomVersion(rs.head.Version)
	prev := rs.head.LastEventID
	depth := rs.head.Depth
	now := time.Now().UnixMilli()
	events := make([]*matrix.Event, 0, len(protos))
	for _, p := range protos {
		if p.RoomID == "" {
			// Empty for a version 12 create event: its ID names the room.
			p.RoomID = matrix.RoomID(rs.head.RoomID)
		}
		if prev != "" {
			p.PrevEvents = []matrix.EventID{matrix.EventID(prev)}
		} else {
			p.PrevEvents = []matrix.EventID{}
		}
		depth++
		p.Depth = depth
		if p.OriginServerTS == 0 {
			p.OriginServerTS = now
		}
		auth, err := matrix.AuthEventsFor(rs.state, p)
		if err != nil {
			return nil, err
		}
		p.AuthEvents = auth
		ev, err := matrix.BuildEvent(v, p, s.cfg.ServerName, s.cfg.SigningKey)
		if err != nil {
			return nil, err
		}
		if err := matrix.Authorize(ev, rs.state); err != nil {
			return nil, err
		}
		if ev.Type() == matrix.TypeRedaction && ev.Redacts() != "" {
			if err := s.authorizeRedaction(ctx, rs, ev, events); err != nil {
				return nil, err
			}
		}
		rs.state = matrix.Apply(rs.state, ev)
		if ev.Type() == matrix.TypeRedaction && ev.Redacts() != "" {
			// Redacting a current state event changes what later events
			// are authorised against.
			for _, cur := range rs.state.All() {
				if cur.ID() == ev.Redacts() {
					if rs.state, err = matrix.ApplyRedacted(rs.state, cur); err != nil {
						return nil, err
					}
					break
				}
			}
		}
		if rs.head.RoomID == "" {
			rs.head.RoomID = string(ev.RoomID())
		}
		prev = string(ev.ID())
		events = append(events, ev)
	}
	rs.head.LastEventID, rs.head.Depth = prev, depth
	return events, nil
}

// authorizeRedaction refuses a redaction that could not take effect: its
// target must be an event of the same room (earlier in this write, or
// projected), and its sender the target's sender or at the room's redact
// level (matrix.AuthorizeRedaction), against rs, the state the redaction
// is appended on. The projector applies the same rule to what is on the
// log; refusing here tells the client instead of appending a redaction
// that redacts nothing. A target in another room is "not found", as if it
// did not exist. Endpoints wait for a lagging projection to show the
// target before they build (awaitRedactionTarget), so this lookup does not
// wait while the room is locked.
func (s *Server) authorizeRedaction(ctx context.Context, rs *roomState, redaction *matrix.Event, earlier []*matrix.Event) error {
	var target *matrix.Event
	for _, ev := range earlier {
		if ev.ID() == redaction.Redacts() {
			target = ev
		}
	}
	if target == nil {
		pdu, err := s.store.EventPDU(ctx, string(redaction.RoomID()), string(redaction.Redacts()))
		if errors.Is(err, store.ErrNotFound) {
			return errRedactionTargetNotFound(redaction.Redacts(), redaction.RoomID())
		}
		if err != nil {
			return err
		}
		if target, err = s.events.Parse(matrix.RoomVersion(rs.head.Version), string(redaction.Redacts()), pdu); err != nil {
			return fmt.Errorf("redaction target %s: %w", redaction.Redacts(), err)
		}
	}
	return matrix.AuthorizeRedaction(rs.state, redaction, target)
}

// errRedactionTargetNotFound is the answer for a redaction of an event
// that is not in the room, whether it exists elsewhere or not.
func errRedactionTargetNotFound(target matrix.EventID, roomID matrix.RoomID) error {
	return matrix.NotFound("event %s not found in room %s", target, roomID)
}

// awaitRedactionTarget waits (bounded) until the projection shows target
// in roomID, and answers 404 if it is not an event of that room.
func (s *Server) awaitRedactionTarget(ctx context.Context, roomID string, target matrix.EventID) error {
	_, err := s.eventByID(ctx, roomID, string(target))
	if errors.Is(err, store.ErrNotFound) {
		return errRedactionTargetNotFound(target, matrix.RoomID(roomID))
	}
	return err
}

// stateKeyPtr returns a pointer to k.
func stateKeyPtr(k string) *string { return &k }

// content marshals v as event content.
func content(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
