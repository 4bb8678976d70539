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

// eventCache keeps parsed events by ID. Events never change, so cached
// entries never go stale; the cache only saves re-parsing and re-hashing
// the same state events on every write.
type eventCache struct {
	mu sync.Mutex
	m  map[string]*matrix.Event
}

const eventCacheMax = 50000

func (c *eventCache) parse(v matrix.RoomVersion, k string, pdu []byte) (*matrix.Event, error) {
	c.mu.Lock()
	ev, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return ev, nil
	}
	ev, err := matrix.ParseEvent(v, pdu)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= eventCacheMax {
		c.m = make(map[string]*matrix.Event)
	}
	c.m[k] = ev
	c.mu.Unlock()
	return ev, nil
}

// loadRoom reads a room's head and the state needed to authorise events
// by users.
func (s *Server) loadRoom(ctx context.Context, roomID string, users []string) (*roomState, error) {
	snap, err := s.store.RoomAuthSnapshot(ctx, roomID, users)
	if errors.Is(err, store.ErrNotFound) {
		return nil, matrix.NotFound("room %s not found", roomID)
	}
	if err != nil {
		return nil, err
	}
	v := matrix.RoomVersion(snap.Head.Version)
	st := matrix.State{}
	for _, e := range snap.Events {
		ev, err := s.events.parse(v, e.EventID, e.PDU)
		if err != nil {
			return nil, fmt.Errorf("room %s: stored state event: %w", roomID, err)
		}
		st = matrix.Apply(st, ev)
	}
	return &roomState{head: snap.Head, state: st}, nil
}

// txnRef identifies the client transaction behind a write.
type txnRef struct {
	sender, device, id string
}

// buildFunc returns the events to append given the room's state; it
// returns errors for requests the state makes invalid.
type buildFunc func(rs *roomState) ([]*matrix.ProtoEvent, error)

// writeRoom appends events to an existing room: it builds them against
// the current state, authorises each against the state before it, and
// appends them with the room's last sequence as the expected one. Losing
// that race means someone else changed the room: re-read and re-check.
// It returns the appended events once the projection shows them.
func (s *Server) writeRoom(ctx context.Context, roomID string, users []string, txn *txnRef, build buildFunc) ([]*matrix.Event, error) {
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		rs, err := s.loadRoom(ctx, roomID, users)
		if err != nil {
			return nil, err
		}
		protos, err := build(rs)
		if err != nil {
			return nil, err
		}
		if len(protos) == 0 {
			return nil, nil
		}
		events, err := s.buildEvents(rs, protos)
		if err != nil {
			return nil, err
		}
		rec := &eventlog.RoomEvents{RoomID: roomID, RoomVersion: rs.head.Version}
		for _, ev := range events {
			rec.Events = append(rec.Events, ev.JSON())
		}
		opts := eventlog.AppendOptions{ExpectSeq: eventlog.Expect(rs.head.LastSeq), Room: roomID}
		if txn != nil {
			rec.Sender, rec.DeviceID, rec.TxnID = txn.sender, txn.device, txn.id
			opts.MsgID = "txn:" + txn.sender + "|" + txn.device + "|" + txn.id
		}
		seq, dup, err := s.log.AppendDedup(ctx, eventlog.RoomSubject(roomID), rec, opts)
		if errors.Is(err, eventlog.ErrConflict) {
			if err := s.catchUpRoom(ctx, roomID); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			s.logger.Error("append room events failed", "room_id", roomID, "err", err)
			return nil, logUnavailable(err)
		}
		if err := s.awaitApplied(ctx, eventlog.StreamRooms, seq); err != nil {
			return nil, err
		}
		if dup {
			return nil, errDuplicateTxn
		}
		return events, nil
	}
	return nil, matrix.Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests, "the room is too busy; retry")
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
	return s.awaitApplied(ctx, eventlog.StreamRooms, last)
}

// buildEvents fills in the graph fields, signs, and authorises protos in
// order against rs, which it advances.
func (s *Server) buildEvents(rs *roomState, protos []*matrix.ProtoEvent) ([]*matrix.Event, error) {
	v := matrix.RoomVersion(rs.head.Version)
	prev := rs.head.LastEventID
	depth := rs.head.Depth
	now := time.Now().UnixMilli()
	events := make([]*matrix.Event, 0, len(protos))
	for _, p := range protos {
		if p.RoomID == "" && p.Type != matrix.TypeCreate {
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
		rs.state = matrix.Apply(rs.state, ev)
		if rs.head.RoomID == "" {
			rs.head.RoomID = string(ev.RoomID())
		}
		prev = string(ev.ID())
		events = append(events, ev)
	}
	rs.head.LastEventID, rs.head.Depth = prev, depth
	return events, nil
}

// stateKeyPtr returns a pointer to k.
func stateKeyPtr(k string) *string { return &k }

// content marshals v as event content.
func content(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
