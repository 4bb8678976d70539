package syncstream

import (
	"context"
	"slices"
	"sync"
	"time"

	"strand/eventlog"
)

// Ephemeral is a worker's view of typing and presence. It is built by
// reading the EPHEMERAL stream from its start (the stream keeps only the
// last hour, which is all the state there is), so every worker has the
// same view and a restarted one recovers it.
//
// Lock order: Ephemeral.mu, then (never under it) Notifier.mu.
type Ephemeral struct {
	// IdleAfter and OfflineAfter are when a user without activity is
	// written down as unavailable and as offline (eventlog's presence
	// decay, unless a test shortens them).
	IdleAfter, OfflineAfter time.Duration

	mu       sync.Mutex
	consumed uint64
	advanced chan struct{} // closed and replaced when consumed moves
	typing   map[string]map[string]typingEntry
	roomSeq  map[string]uint64 // newest typing record per room
	presence map[string]presenceEntry
	applies  int           // records folded in, to prune now and then
	caughtUp chan struct{} // closed once the stream's backlog is folded in
}

type typingEntry struct {
	expires int64 // unix ms
	ended   bool  // a stop record ended it (explicitly or on expiry)
}

type presenceEntry struct {
	rec eventlog.PresenceSet
	seq uint64
}

// NewEphemeral returns an empty view.
func NewEphemeral() *Ephemeral {
	return &Ephemeral{IdleAfter: eventlog.PresenceIdleAfter, OfflineAfter: eventlog.PresenceOfflineAfter,
		advanced: make(chan struct{}), typing: map[string]map[string]typingEntry{},
		roomSeq: map[string]uint64{}, presence: map[string]presenceEntry{}, caughtUp: make(chan struct{})}
}

// typingGrace keeps expired typing entries long enough for every client to
// see the stop.
const typingGrace = 2 * time.Minute

// apply folds one EPHEMERAL record into the view.
func (e *Ephemeral) apply(seq uint64, at time.Time, rec eventlog.Record) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch r := rec.(type) {
	case *eventlog.TypingSet:
		users := e.typing[r.RoomID]
		if users == nil {
			users = map[string]typingEntry{}
			e.typing[r.RoomID] = users
		}
		switch {
		case r.Typing:
			users[r.UserID] = typingEntry{expires: r.ExpiresTS}
			e.roomSeq[r.RoomID] = seq
		case r.ExpiresTS == 0:
			users[r.UserID] = typingEntry{expires: at.UnixMilli(), ended: true}
			e.roomSeq[r.RoomID] = seq
		case users[r.UserID].expires == r.ExpiresTS && !users[r.UserID].ended:
			// The expiry of the notice still in force.
			users[r.UserID] = typingEntry{expires: min(r.ExpiresTS, at.UnixMilli()), ended: true}
			e.roomSeq[r.RoomID] = seq
		}
	case *eventlog.PresenceSet:
		e.presence[r.UserID] = presenceEntry{rec: *r, seq: seq}
	}
	e.consumed = seq
	e.applies++
	close(e.advanced)
	e.advanced = make(chan struct{})
	e.prune(at.UnixMilli())
}

func (e *Ephemeral) prune(now int64) {
	if e.applies%4096 != 0 {
		return
	}
	for room, users := range e.typing {
		for u, t := range users {
			if now-t.expires > typingGrace.Milliseconds() {
				delete(users, u)
			}
		}
		if len(users) == 0 {
			delete(e.typing, room)
		}
	}
}

// markCaughtUp records that the view holds every record the stream had
// when the worker started.
func (e *Ephemeral) markCaughtUp() {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.caughtUp:
	default:
		close(e.caughtUp)
	}
}

// Consumed returns the newest EPHEMERAL sequence folded in.
func (e *Ephemeral) Consumed() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.consumed
}

// WaitFor waits, bounded by ctx, until the view has folded in seq: a token
// issued by a worker that is ahead of this one.
func (e *Ephemeral) WaitFor(ctx context.Context, seq uint64) {
	for {
		e.mu.Lock()
		done, ch := e.consumed >= seq, e.advanced
		e.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// view is what a sync response shows of typing and presence, read under
// one lock together with the position it reflects.
type view struct {
	pos      uint64
	typing   map[string][]string
	presence []eventlog.PresenceSet
}

// snapshot reads the typing changes of rooms and the presence changes
// after since, and the position they reflect, atomically.
func (e *Ephemeral) snapshot(rooms []string, since uint64, now time.Time) view {
	e.mu.Lock()
	defer e.mu.Unlock()
	return view{pos: max(e.consumed, since), typing: e.typingSince(rooms, since, now), presence: e.presenceSince(since)}
}

// typingSince returns, for each of rooms whose typing changed after
// ephemeral position since (every room with someone typing, for since 0),
// who is typing now. Callers hold e.mu.
func (e *Ephemeral) typingSince(rooms []string, since uint64, now time.Time) map[string][]string {
	nowMS := now.UnixMilli()
	out := map[string][]string{}
	for _, room := range rooms {
		users := e.typing[room]
		if len(users) == 0 {
			continue
		}
		var typing []string
		for u, t := range users {
			if t.expires > nowMS {
				typing = append(typing, u)
			}
		}
		// Expiries are records too (written by expireTyping), so a change
		// is always a newer sequence: a token never sees the same change
		// twice.
		changed := since == 0 && len(typing) > 0 || since != 0 && e.roomSeq[room] > since
		if changed {
			if typing == nil {
				typing = []string{}
			}
			slices.Sort(typing)
			out[room] = typing
		}
	}
	return out
}

// typingNow returns who is typing in room at now, sorted.
func (e *Ephemeral) typingNow(room string, now time.Time) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	typing := []string{}
	for u, t := range e.typing[room] {
		if t.expires > now.UnixMilli() {
			typing = append(typing, u)
		}
	}
	slices.Sort(typing)
	return typing
}

// presenceSince returns the presence records newer than since. Callers
// hold e.mu.
func (e *Ephemeral) presenceSince(since uint64) []eventlog.PresenceSet {
	var out []eventlog.PresenceSet
	for _, p := range e.presence {
		if p.seq > since {
			out = append(out, p.rec)
		}
	}
	return out
}

// presenceOf returns a user's last presence record, if any.
func (e *Ephemeral) presenceOf(user string) (eventlog.PresenceSet, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.presence[user]
	return p.rec, ok
}
