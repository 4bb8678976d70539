package syncstream

import (
	"sync"
	"sync/atomic"

	"strand/eventlog"
)

// change is what one log record touched.
type change struct {
	stream string
	seq    uint64
	rooms  []string
	users  []string
	// events are a live room record's events, for the window (nil for
	// other records and for records read before the worker started).
	events []windowEvent
	// presence is a live presence record, and typing marks a live typing
	// record, for the window (EPHEMERAL records read before the worker
	// started have neither: their audience is not known).
	presence *eventlog.PresenceSet
	typing   bool
}

// heads are the newest sequences the notifier has seen of the streams the
// window answers from, read together with the changes.
type heads struct{ rooms, ephemeral uint64 }

// Notifier wakes long-polling requests when a log record touches their
// user or one of their rooms. It keeps the most recent changes, so that a
// request registering after a change it has not seen yet (it read an
// older snapshot) is woken at once instead of missing it.
//
// Lock order: Notifier.mu only; waiters' channels are never waited on
// under it.
//
// A message to a busy room wakes thousands of long-polls at once, and each
// of them comes back to the notifier: the wake path is built so that they
// do not queue on its lock. A waiter is one-shot, so Notify takes it out
// of the sets as it wakes it and its Unregister is then lock-free; reads
// share the lock (RWMutex) and the consumed positions are atomics.
type Notifier struct {
	mu      sync.RWMutex
	byUser  map[string]map[*waiter]struct{}
	byRoom  map[string]map[*waiter]struct{}
	recent  []change // ring of the newest changes, oldest first
	max     int
	floor   map[string]uint64 // per stream: changes after this are all in recent
	inRing  map[string]int    // per stream: how many of its changes recent holds
	last    map[string]uint64 // per stream: the newest change recorded
	waiting int
	// consumed mirrors max(floor, last) of the log's streams for readers
	// that must not take the lock; its keys are fixed at construction.
	consumed map[string]*atomic.Uint64
	// members are the rooms' current member events, for the window.
	members memberCache
}

type waiter struct {
	ch    chan struct{}
	user  string
	rooms []string
	// removed is set (under Notifier.mu) once the waiter is out of the
	// sets: Notify took it out when it woke it.
	removed atomic.Bool
}

// NewNotifier keeps up to keep recent changes.
func NewNotifier(keep int) *Notifier {
	n := &Notifier{byUser: map[string]map[*waiter]struct{}{}, byRoom: map[string]map[*waiter]struct{}{},
		max: keep, floor: map[string]uint64{}, inRing: map[string]int{}, last: map[string]uint64{},
		consumed: map[string]*atomic.Uint64{}}
	for _, s := range []string{eventlog.StreamRooms, eventlog.StreamAccounts, eventlog.StreamReceipts, eventlog.StreamEphemeral} {
		n.consumed[s] = new(atomic.Uint64)
	}
	return n
}

// SetFloor records that the notifier has seen every change of stream
// after seq (the position its consumer started from).
func (n *Notifier) SetFloor(stream string, seq uint64) {
	n.mu.Lock()
	n.floor[stream] = seq
	n.publishConsumed(stream)
	n.mu.Unlock()
	if stream == eventlog.StreamRooms {
		n.members.start(seq)
	}
}

// publishConsumed updates the lock-free copy of stream's position. Lock
// held.
func (n *Notifier) publishConsumed(stream string) {
	if a, ok := n.consumed[stream]; ok {
		a.Store(max(n.floor[stream], n.last[stream]))
	}
}

// Floor returns the position after which the notifier knows all changes.
func (n *Notifier) Floor(stream string) uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.floor[stream]
}

// Waiting returns the number of registered long-polls.
func (n *Notifier) Waiting() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.waiting
}

// Notify records a change and wakes the requests it concerns.
func (n *Notifier) Notify(c change) { n.NotifyAll([]change{c}, nil) }

// NotifyAll records changes, in order, then calls recorded (if not nil),
// then wakes the requests they concern. recorded runs without the lock,
// after Consumed shows the changes and before anyone is woken: a writer
// waiting for this worker's report is then not queued behind thousands
// of long-polls its write woke.
func (n *Notifier) NotifyAll(cs []change, recorded func()) {
	for _, c := range cs {
		if c.stream == eventlog.StreamRooms && c.seq != 0 {
			// Before anyone woken by it can look a member event up.
			n.members.changed(c)
		}
	}
	n.mu.Lock()
	for _, c := range cs {
		if c.seq != 0 {
			n.record(c)
		}
	}
	if recorded != nil {
		n.mu.Unlock()
		recorded()
		n.mu.Lock()
	}
	defer n.mu.Unlock()
	for _, c := range cs {
		for _, u := range c.users {
			for w := range n.byUser[u] {
				n.fire(w)
			}
		}
		for _, r := range c.rooms {
			for w := range n.byRoom[r] {
				n.fire(w)
			}
		}
	}
}

// fire wakes a registered waiter and takes it out of the sets (deleting
// from a map being ranged over is allowed). Lock held.
func (n *Notifier) fire(w *waiter) {
	wake(w)
	n.remove(w)
}

// record keeps c in the ring of recent changes.
func (n *Notifier) record(c change) {
	n.recent = append(n.recent, c)
	n.inRing[c.stream]++
	n.last[c.stream] = max(n.last[c.stream], c.seq)
	if len(n.recent) > n.max {
		drop := n.recent[0]
		n.recent = n.recent[1:]
		n.inRing[drop.stream]--
		if drop.seq > n.floor[drop.stream] {
			n.floor[drop.stream] = drop.seq
		}
	}
	n.publishConsumed(c.stream)
}

func wake(w *waiter) {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func (w *waiter) concerns(c change) bool {
	for _, u := range c.users {
		if u == w.user {
			return true
		}
	}
	for _, r := range c.rooms {
		for _, wr := range w.rooms {
			if r == wr {
				return true
			}
		}
	}
	return false
}

// Register adds a waiter for user and rooms whose response reflected the
// positions in seen. If a change after seen already concerns them, the
// waiter is woken at once; if seen is older than what the notifier
// remembers, stale is true and the caller must catch up first.
func (n *Notifier) Register(user string, rooms []string, seen map[string]uint64) (w *waiter, stale bool) {
	w = &waiter{ch: make(chan struct{}, 1), user: user, rooms: rooms}
	n.mu.Lock()
	defer n.mu.Unlock()
	for stream, seq := range seen {
		if seq < n.floor[stream] {
			stale = true
		}
	}
	for _, c := range n.after(seen) {
		if w.concerns(c) {
			wake(w)
			break
		}
	}
	add := func(m map[string]map[*waiter]struct{}, k string) {
		set, ok := m[k]
		if !ok {
			set = map[*waiter]struct{}{}
			m[k] = set
		}
		set[w] = struct{}{}
	}
	add(n.byUser, user)
	for _, r := range rooms {
		add(n.byRoom, r)
	}
	n.waiting++
	return w, stale
}

// Since returns the changes after the positions in seen that concern user
// or rooms, oldest first, and the newest ROOMS and EPHEMERAL sequences the
// notifier has seen, read together. ok is false if the notifier has
// forgotten changes that recent.
func (n *Notifier) Since(user string, rooms []string, seen map[string]uint64) (changes []change, h heads, ok bool) {
	w := &waiter{user: user, rooms: rooms}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for stream, seq := range seen {
		if seq < n.floor[stream] {
			return nil, heads{}, false
		}
	}
	h = heads{
		rooms:     max(n.floor[eventlog.StreamRooms], n.last[eventlog.StreamRooms]),
		ephemeral: max(n.floor[eventlog.StreamEphemeral], n.last[eventlog.StreamEphemeral]),
	}
	for _, c := range n.after(seen) {
		if w.concerns(c) {
			changes = append(changes, c)
		}
	}
	return changes, h, true
}

// Unregister removes a waiter. A waiter Notify woke is already out, and
// then Unregister does not touch the lock.
func (n *Notifier) Unregister(w *waiter) {
	if w.removed.Load() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.remove(w)
}

// remove takes w out of the sets, once. Lock held.
func (n *Notifier) remove(w *waiter) {
	if w.removed.Load() {
		return
	}
	w.removed.Store(true)
	del := func(m map[string]map[*waiter]struct{}, k string) {
		if set, ok := m[k]; ok {
			delete(set, w)
			if len(set) == 0 {
				delete(m, k)
			}
		}
	}
	del(n.byUser, w.user)
	for _, r := range w.rooms {
		del(n.byRoom, r)
	}
	n.waiting--
}

// Consumed returns the newest sequence of stream the notifier has seen.
func (n *Notifier) Consumed(stream string) uint64 {
	if a, ok := n.consumed[stream]; ok {
		return a.Load()
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return max(n.floor[stream], n.last[stream])
}

// DefaultRecent is how many recent changes a notifier remembers.
const DefaultRecent = 4096

// after returns the recent changes beyond the positions in seen, oldest
// first. Each stream's changes are in order in the ring, so the scan
// walks back from the newest and stops once every stream is behind seen:
// a request with a fresh token looks at a few entries, not the ring.
// Lock held.
func (n *Notifier) after(seen map[string]uint64) []change {
	// Only streams whose newest change is beyond seen contribute; the
	// scan stops once it has met, for each of them, a change at or below
	// seen. A token that is current on every stream costs no scan at all.
	var pending [8]string
	need := 0
	full := false // more streams than pending holds: scan everything
	for s, k := range n.inRing {
		if k > 0 && n.last[s] > seen[s] {
			if need == len(pending) {
				full = true
				break
			}
			pending[need] = s
			need++
		}
	}
	if need == 0 {
		return nil
	}
	var done [8]bool
	passed := 0
	i := len(n.recent)
	for ; i > 0 && (full || passed < need); i-- {
		c := n.recent[i-1]
		if c.seq > seen[c.stream] {
			continue
		}
		for j := 0; j < need; j++ {
			if !done[j] && pending[j] == c.stream {
				done[j] = true
				passed++
			}
		}
	}
	var out []change
	for _, c := range n.recent[i:] {
		if c.seq > seen[c.stream] {
			out = append(out, c)
		}
	}
	return out
}
