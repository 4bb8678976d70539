package syncstream

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"strand/eventlog"
)

// after must return exactly the ring's changes beyond seen, whatever the
// interleaving of streams, including streams with no change in the ring.
func TestNotifierAfterMatchesFullScan(t *testing.T) {
	streams := []string{eventlog.StreamRooms, eventlog.StreamAccounts, eventlog.StreamReceipts, eventlog.StreamEphemeral}
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 2000; round++ {
		n := NewNotifier(64)
		seqs := map[string]uint64{}
		active := streams[:1+r.IntN(len(streams))] // some streams never change
		for i := 0; i < 10+r.IntN(200); i++ {
			s := active[r.IntN(len(active))]
			seqs[s] += 1 + uint64(r.IntN(3))
			n.Notify(change{stream: s, seq: seqs[s], rooms: []string{"!r"}})
		}
		seen := map[string]uint64{}
		for _, s := range streams {
			seen[s] = uint64(r.IntN(int(seqs[s]) + 2))
		}
		var want []change
		for _, c := range n.recent {
			if c.seq > seen[c.stream] {
				want = append(want, c)
			}
		}
		n.mu.Lock()
		got := n.after(seen)
		n.mu.Unlock()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: after returned %d changes, a full scan %d", round, len(got), len(want))
		}
	}
}

// A woken waiter is out of every set at once (Notify took it out), so its
// Unregister has nothing left to do and the count of waiters stays exact.
func TestNotifierWakeRemovesWaiter(t *testing.T) {
	n := NewNotifier(16)
	seen := map[string]uint64{eventlog.StreamRooms: 0}
	a, _ := n.Register("@a:x", []string{"!r1", "!r2"}, seen)
	b, _ := n.Register("@b:x", []string{"!r2"}, seen)
	if got := n.Waiting(); got != 2 {
		t.Fatalf("waiting %d, want 2", got)
	}
	n.Notify(change{stream: eventlog.StreamRooms, seq: 1, rooms: []string{"!r1"}})
	select {
	case <-a.ch:
	default:
		t.Fatal("waiter in !r1 not woken")
	}
	select {
	case <-b.ch:
		t.Fatal("waiter only in !r2 woken by a change in !r1")
	default:
	}
	if got := n.Waiting(); got != 1 {
		t.Fatalf("waiting after wake %d, want 1", got)
	}
	if _, ok := n.byRoom["!r2"][a]; ok {
		t.Fatal("woken waiter still in the set of its other room")
	}
	if _, ok := n.byRoom["!r1"]; ok {
		t.Fatal("empty set of !r1 kept")
	}
	n.Unregister(a) // after the wake: a no-op
	n.Unregister(b)
	n.Unregister(b) // twice: still a no-op
	if got := n.Waiting(); got != 0 || len(n.byRoom) != 0 || len(n.byUser) != 0 {
		t.Fatalf("after unregistering: waiting %d, rooms %d, users %d", got, len(n.byRoom), len(n.byUser))
	}
	if got := n.Consumed(eventlog.StreamRooms); got != 1 {
		t.Fatalf("consumed %d, want 1", got)
	}
	n.SetFloor(eventlog.StreamReceipts, 7)
	if got := n.Consumed(eventlog.StreamReceipts); got != 7 {
		t.Fatalf("consumed after SetFloor %d, want 7", got)
	}
}
