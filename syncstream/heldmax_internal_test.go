package syncstream

import (
	"testing"

	"strand/eventlog"
)

// While ROOMS stands still (a lane's projector is down), a consumer holds
// at most heldMax changes: past that, the oldest go to the notifier at
// once, as if applied, and the rest stay held in order.
func TestHeldChangesBounded(t *testing.T) {
	c := &Consumer{Notifier: NewNotifier(DefaultRecent), Watermark: &eventlog.Watermark{}}
	const extra = 10
	for i := range heldMax + extra {
		c.held = append(c.held, change{stream: eventlog.StreamRooms, seq: uint64(i + 1), rooms: []string{"!r:x"}})
	}
	next := c.release()
	if len(c.held) != heldMax || next != extra+1 {
		t.Fatalf("after release: %d held, oldest %d; want %d held from %d", len(c.held), next, heldMax, extra+1)
	}
	if got := c.Notifier.Consumed(eventlog.StreamRooms); got != extra {
		t.Fatalf("the notifier has ROOMS through %d, want %d (the changes passed on)", got, extra)
	}
	// Nothing more is passed on while G stands still.
	if next := c.release(); len(c.held) != heldMax || next != extra+1 {
		t.Fatalf("second release: %d held, oldest %d", len(c.held), next)
	}
}
