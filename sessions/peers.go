package sessions

import (
	"context"
	"time"

	"strand/eventlog"
)

// Revocation across processes. A session cache is exact within its
// process (see Cache); so that a logout answered by one process also
// holds at once on every other, each following cache reports how far it
// has read ACCOUNTS (eventlog.Readers, topic "sessions"), and the process
// that appended a revocation waits, before answering, until every cache
// heard from recently has read past it (AwaitEvicted).

const (
	sessionsTopic = "sessions"
	// evictWait bounds how long a revocation waits for other processes.
	evictWait = 5 * time.Second
)

// position is how far this cache has read (HoldsNothing when it is not
// following, so holds nothing).
func (c *Cache) position() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.following {
		return eventlog.HoldsNothing
	}
	return c.consumed
}

// AwaitEvicted waits until every session cache heard from recently has
// read the ACCOUNTS stream through seq, the position of a revocation: from
// then on no process answers from a session the revocation ended. It
// gives up after evictWait and names the caches still behind.
func (c *Cache) AwaitEvicted(ctx context.Context, seq uint64) error {
	wait := evictWait
	if c.evictWait > 0 {
		wait = c.evictWait
	}
	return c.readers.Await(ctx, sessionsTopic, seq, wait)
}
