package syncstream

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"strand/eventlog"
	"strand/eventlog/logtest"
)

// presenceHandler returns a handler on a fresh log (its streams made) and
// that log; its view reads nothing back from the log.
func presenceHandler(t *testing.T) (*Handler, *eventlog.Log) {
	t.Helper()
	l, err := eventlog.New(logtest.Start(t).Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.EnsureStreams(context.Background(), l.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return &Handler{Log: l, Ephemeral: NewEphemeral(), Logger: slog.New(slog.DiscardHandler)}, l
}

// A client's syncs mark it online once: a request that comes before the
// worker has read back the presence record the previous one wrote does not
// write it again (each write wakes everyone sharing a room with the user).
// The view here reads nothing back at all, as a worker's may lag.
func TestMarkPresenceWritesOnceBeforeReadBack(t *testing.T) {
	ctx := context.Background()
	h, l := presenceHandler(t)
	const alice = "@alice:localhost"
	for range 3 {
		h.markPresence(ctx, alice, "online")
	}
	h.markPresence(ctx, "@bob:localhost", "online")
	if head, err := l.Head(ctx, eventlog.StreamEphemeral); err != nil || head != 2 {
		t.Fatalf("three syncs of alice and one of bob wrote %d presence records (%v), want 2", head, err)
	}
	// A change of presence is written at once.
	h.markPresence(ctx, alice, "unavailable")
	if head, err := l.Head(ctx, eventlog.StreamEphemeral); err != nil || head != 3 {
		t.Fatalf("a change to unavailable: %d records (%v), want 3", head, err)
	}
}

// A presence set since the worker's own write (PUT /presence to
// unavailable, read back by the view) is overridden by the next sync as
// it was before the worker remembered its writes: the remembered write is
// older than what the view holds.
func TestMarkPresenceAfterAnExplicitChange(t *testing.T) {
	ctx := context.Background()
	h, l := presenceHandler(t)
	const alice = "@alice:localhost"
	h.markPresence(ctx, alice, "online")
	// The view reads a later explicit change (its own record, not the
	// sync's, which the view here never reads back).
	later := time.Now().Add(time.Millisecond).UnixMilli()
	h.Ephemeral.apply(100, time.Now(), &eventlog.PresenceSet{UserID: alice, Presence: "unavailable", LastActiveTS: later})
	h.markPresence(ctx, alice, "online")
	if head, err := l.Head(ctx, eventlog.StreamEphemeral); err != nil || head != 2 {
		t.Fatalf("sync after an explicit unavailable: %d presence records (%v), want 2 (online again)", head, err)
	}
}

// The presence writes a worker remembers are bounded: users who sync once
// and never again do not stay in memory for good.
func TestMarkedPresenceBounded(t *testing.T) {
	ctx := context.Background()
	h, l := presenceHandler(t)
	defer func(m int64) { markedMax = m }(markedMax)
	markedMax = 3
	for i := range 10 {
		h.markPresence(ctx, fmt.Sprintf("@u%d:localhost", i), "online")
	}
	n := 0
	h.marked.Range(func(any, any) bool { n++; return true })
	// Bounded, but not by remembering nothing: the newest write is kept
	// (and spares its user a second write), so an empty map fails too.
	if n > 3 || n == 0 {
		t.Fatalf("%d remembered presence writes, want 1 to 3 (bound 3)", n)
	}
	if _, ok := h.marked.Load("@u9:localhost"); !ok {
		t.Fatal("the newest presence write is not remembered")
	}
	head, err := l.Head(ctx, eventlog.StreamEphemeral)
	if err != nil || head != 10 {
		t.Fatalf("%d presence records (%v), want 10", head, err)
	}
	h.markPresence(ctx, "@u9:localhost", "online")
	if again, err := l.Head(ctx, eventlog.StreamEphemeral); err != nil || again != head {
		t.Fatalf("a remembered user's next sync wrote presence again: %d records (%v), want %d", again, err, head)
	}
}
