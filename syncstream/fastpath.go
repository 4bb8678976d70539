package syncstream

import (
	"sync"

	"strand/eventlog"
)

// roomsCache remembers, per user, the rooms of the last response this
// worker built and the token it ended at. When a user comes back with
// exactly that token and the notifier has seen nothing concerning them or
// those rooms since, the answer is known without reading the projection:
// nothing. That keeps idle syncs and idle long-polls off the database.
type roomsCache struct {
	mu sync.Mutex
	m  map[string]cachedRooms
}

type cachedRooms struct {
	next  Token
	rooms []string
	base  windowBase
}

const roomsCacheMax = 100000

func (c *roomsCache) put(user string, next Token, rooms []string, base windowBase) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= roomsCacheMax {
		c.m = make(map[string]cachedRooms)
	}
	c.m[user] = cachedRooms{next: next, rooms: rooms, base: base}
}

// get returns what the worker remembers of the user's last response if
// that response ended at since.
func (c *roomsCache) get(user string, since Token) (cachedRooms, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[user]
	if !ok || e.next != since {
		return cachedRooms{}, false
	}
	return e, true
}

func seenOf(t Token) map[string]uint64 {
	return map[string]uint64{eventlog.StreamRooms: t.Rooms, eventlog.StreamAccounts: t.Accounts,
		eventlog.StreamReceipts: t.Receipts, eventlog.StreamEphemeral: t.Ephemeral}
}
