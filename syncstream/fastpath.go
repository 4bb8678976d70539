package syncstream

import (
	"sync"

	"strand/eventlog"
)

// roomsCache remembers, per user, the rooms and window base of the last
// few responses this worker made and the tokens they ended at. When a user
// comes back with one of those tokens and the notifier has seen nothing
// concerning them or those rooms since, the answer is known without
// reading the projection: nothing. That keeps idle syncs and idle
// long-polls off the database. A few tokens, not one, because a user's
// devices (or a client's overlapping requests) often poll with the same
// token: the first answer must not make the others miss.
type roomsCache struct {
	mu sync.Mutex
	m  map[string]*userEntries
}

type cachedRooms struct {
	next  Token
	rooms []string
	base  windowBase
}

// userEntries are a user's newest responses, newest first.
type userEntries struct {
	e [tokensPerUser]cachedRooms
	n int
}

const (
	roomsCacheMax = 100000
	tokensPerUser = 4
)

func (c *roomsCache) put(user string, next Token, rooms []string, base windowBase) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= roomsCacheMax {
		c.m = make(map[string]*userEntries)
	}
	u := c.m[user]
	if u == nil {
		u = &userEntries{}
		c.m[user] = u
	}
	entry := cachedRooms{next: next, rooms: rooms, base: base}
	for i := 0; i < u.n; i++ {
		if u.e[i].next == next {
			// Move it to the front with what is now known of it.
			copy(u.e[1:i+1], u.e[:i])
			u.e[0] = entry
			return
		}
	}
	copy(u.e[1:], u.e[:tokensPerUser-1])
	u.e[0] = entry
	u.n = min(u.n+1, tokensPerUser)
}

// get returns what the worker remembers of the user's response that
// ended at since.
func (c *roomsCache) get(user string, since Token) (cachedRooms, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.m[user]
	if u == nil {
		return cachedRooms{}, false
	}
	for i := 0; i < u.n; i++ {
		if u.e[i].next == since {
			return u.e[i], true
		}
	}
	return cachedRooms{}, false
}

func seenOf(t Token) map[string]uint64 {
	return map[string]uint64{eventlog.StreamRooms: t.Rooms, eventlog.StreamAccounts: t.Accounts,
		eventlog.StreamReceipts: t.Receipts, eventlog.StreamEphemeral: t.Ephemeral}
}
