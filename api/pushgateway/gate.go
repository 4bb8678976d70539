package pushgateway

import (
	"context"
	"sync"
	"time"
)

// pusherGate answers "does any user have an http pusher?" for the match
// stage, so that a server where nobody has one does not read every room
// record's events and look up each event's pushers (two queries per
// event on the send path, for nothing).
//
// Exactness: a pusher whose pusher.set was acknowledged before an event
// was appended must be seen when that event is matched. The api answers
// POST /pushers/set only once the projection has applied the record, so
// any read of the projection that starts after the event was appended
// sees the pusher. The gate therefore answers a record only with a query
// that started after the record was delivered to this process (so after
// it was appended): a query already running when the record arrived may
// have read the projection too early and is not used for it. Concurrent
// records share the next query instead of each making one.
//
// Only "no" needs that fresh read. A "yes" that has gone stale (the last
// pusher deleted since) costs the match one pushers query that finds
// nobody, so a "yes" is trusted for holdYes without asking again: on a
// server where someone has a pusher, the gate costs no query per record.
// gateHoldYes is how long the pusher role trusts a "yes, someone has an
// http pusher" before asking the projection again.
const gateHoldYes = 10 * time.Second

type pusherGate struct {
	query   func(ctx context.Context) (bool, error)
	holdYes time.Duration // how long a "yes" answers without a query

	yesUntil time.Time // guarded by mu

	mu      sync.Mutex
	started uint64        // queries started so far
	done    uint64        // number of the newest query that answered
	any     bool          // its answer
	running bool          // a query is under way
	wake    chan struct{} // closed when the running query ends
	waiters int           // callers waiting for a query (tests watch it)
}

// anyPushers reports whether any http pusher exists, as of a read of the
// projection that began after the call.
func (g *pusherGate) anyPushers(ctx context.Context) (bool, error) {
	if g.query == nil {
		return true, nil // no way to tell: match everything
	}
	g.mu.Lock()
	if time.Now().Before(g.yesUntil) {
		g.mu.Unlock()
		return true, nil
	}
	want := g.started + 1 // the next query to start; a running one began too early
	for {
		if g.done >= want {
			any := g.any
			g.mu.Unlock()
			return any, nil
		}
		if !g.running {
			return g.run(ctx)
		}
		wake := g.wake
		g.waiters++
		g.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			g.mu.Lock()
			g.waiters--
			g.mu.Unlock()
			return false, ctx.Err()
		}
		g.mu.Lock()
		g.waiters--
	}
}

// waiting returns how many callers wait for a query.
func (g *pusherGate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiters
}

// run makes the next query; it is called with g.mu held and returns with
// it released.
func (g *pusherGate) run(ctx context.Context) (bool, error) {
	g.started++
	n := g.started
	g.running = true
	g.wake = make(chan struct{})
	g.mu.Unlock()
	any, err := g.query(ctx)
	g.mu.Lock()
	g.running = false
	close(g.wake)
	if err == nil && n > g.done {
		g.done, g.any = n, any
		if any && g.holdYes > 0 {
			g.yesUntil = time.Now().Add(g.holdYes)
		}
	}
	g.mu.Unlock()
	return any, err
}
