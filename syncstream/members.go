package syncstream

import (
	"sync"

	"strand/eventlog"
	"strand/projector/store"
)

// memberCache is a worker's memory of rooms' current member events, as the
// projection stores them, shared by all its users: a lazy-loading response
// from the window carries the member events of its timeline's senders
// (window.go), and those are the same for every member of a room.
//
// It used to be per user (in each user's windowBase): every member of a
// big room kept its own copy of the member events its builds had read
// (about 100 per user with a timeline of joins, 60 KB), and a message from
// a sender whose member event a user had not been sent made every one of
// them a build. Shared, each member event is held once, and a miss is
// filled by one small query for all the polls that miss it (fill).
//
// Entries come from projection snapshots (builds and fills), never from
// the log, because the stored form carries what the log does not
// (unsigned.prev_content). An entry is exact as of a ROOMS position: the
// consumer drops the entries a member event or redaction supersedes
// before it wakes anyone (changed), and a snapshot older than the newest
// such change in its room is not learned from, so an entry that is
// present is the current one through everything the consumer has read.
type memberCache struct {
	mu      sync.Mutex
	started bool // the consumer has set the floor: before, nothing is learned
	// floor: snapshots at or below it may predate member changes the
	// consumer did not read (before it started, or forgotten in a clear).
	floor uint64
	seen  uint64 // the newest ROOMS sequence passed to changed
	// rooms holds, per room, the current member events by user and the
	// sequence of the newest change that superseded any of them.
	rooms   map[string]*roomMembers
	entries int
}

type roomMembers struct {
	byUser  map[string]store.StoredEvent
	changed uint64
}

// memberCacheMax bounds the entries (about 1 KB each) and the rooms;
// past it the cache starts again empty.
const memberCacheMax = 20000

// start clears the cache and takes the position after which the
// consumer reads every ROOMS record.
func (c *memberCache) start(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rooms, c.entries = nil, 0
	c.started, c.floor, c.seen = true, seq, seq
}

// changed takes in a live ROOMS record, before anyone is woken by it: a
// member event drops its user's entry, a redaction (or events this
// worker could not parse) drops the room's.
func (c *memberCache) changed(ch change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = max(c.seen, ch.seq)
	for _, roomID := range ch.rooms {
		r := c.rooms[roomID]
		drop := func(r *roomMembers, user string) {
			if _, ok := r.byUser[user]; ok {
				delete(r.byUser, user)
				c.entries--
			}
		}
		touched := false
		if ch.events == nil {
			touched = true // not parsed here: what it changed is unknown
			if r != nil {
				for u := range r.byUser {
					drop(r, u)
				}
			}
		}
		for i := range ch.events {
			e := &ch.events[i]
			switch {
			case e.RoomID != roomID:
			case e.Type == "m.room.member" && e.StateKey != nil:
				touched = true
				if r != nil {
					drop(r, *e.StateKey)
				}
			case e.Type == "m.room.redaction":
				touched = true
				if r != nil {
					for u := range r.byUser {
						drop(r, u)
					}
				}
			}
		}
		if !touched {
			continue
		}
		if r == nil {
			if c.rooms == nil {
				c.rooms = map[string]*roomMembers{}
			}
			r = &roomMembers{byUser: map[string]store.StoredEvent{}}
			c.rooms[roomID] = r
		}
		r.changed = ch.seq
	}
	if len(c.rooms) > memberCacheMax {
		// Rooms whose members change but whose events nobody reads.
		c.rooms, c.entries, c.floor = nil, 0, c.seen
	}
}

// learn takes member events read from a projection snapshot at ROOMS
// position at (each current there). Those of rooms with a member change
// after at, and all of them if at predates what the consumer has read
// from the start, are not learned.
func (c *memberCache) learn(at uint64, evs map[string]map[string]store.StoredEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started || at < c.floor {
		return
	}
	for roomID, byUser := range evs {
		r := c.rooms[roomID]
		if r != nil && r.changed > at {
			continue
		}
		for user, e := range byUser {
			if c.entries >= memberCacheMax {
				// Start again: forgetting the rooms' changes too, snapshots
				// before what has been read can no longer be checked.
				c.rooms, c.entries, c.floor = nil, 0, c.seen
				if at < c.floor {
					return
				}
				r = nil
			}
			if r == nil {
				if c.rooms == nil {
					c.rooms = map[string]*roomMembers{}
				}
				r = &roomMembers{byUser: map[string]store.StoredEvent{}}
				c.rooms[roomID] = r
			}
			cur, ok := r.byUser[user]
			if ok && cur.Pos >= e.Pos {
				continue
			}
			if !ok {
				c.entries++
			}
			r.byUser[user] = e
		}
	}
}

// get returns user's current member event in room as of ROOMS position
// through (which the consumer has read), if the cache holds it.
func (c *memberCache) get(roomID, user string, through uint64) (store.StoredEvent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rooms[roomID]
	if r == nil {
		return store.StoredEvent{}, false
	}
	e, ok := r.byUser[user]
	if !ok || e.Pos >= eventlog.EventPos(through+1, 0) {
		return store.StoredEvent{}, false
	}
	return e, true
}
