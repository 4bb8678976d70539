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
	for round := 0; round < 200; round++ {
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
