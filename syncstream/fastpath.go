package syncstream

import (
	"hash/maphash"
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
//
// It is sharded by user: every answered long-poll reads and writes it, and
// a message to a big room answers thousands at once.
type roomsCache struct {
	seed   maphash.Seed
	once   sync.Once
	shards [roomsCacheShards]roomsShard
}

type roomsShard struct {
	mu sync.Mutex
	m  map[string]*userEntries
}

const roomsCacheShards = 64

func (c *roomsCache) shard(user string) *roomsShard {
	c.once.Do(func() { c.seed = maphash.MakeSeed() })
	return &c.shards[maphash.String(c.seed, user)%roomsCacheShards]
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
	roomsCacheMax = 100000 // users, over all shards
	tokensPerUser = 4
)

func (c *roomsCache) put(user string, next Token, rooms []string, base windowBase) {
	sh := c.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil || len(sh.m) >= roomsCacheMax/roomsCacheShards {
		sh.m = make(map[string]*userEntries)
	}
	u := sh.m[user]
	if u == nil {
		u = &userEntries{}
		sh.m[user] = u
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
	sh := c.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.m[user]
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
