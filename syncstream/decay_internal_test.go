package syncstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/projector/store/storetest"
)

// An inactive user is written down as unavailable, then offline, on the
// log (so that sync can tell the users who share a room with them).
func TestPresenceDecayRecords(t *testing.T) {
	ns := logtest.Start(t)
	l, err := eventlog.New(ns.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := eventlog.EnsureStreams(ctx, l.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	st, _ := storetest.Open(t)
	eph := NewEphemeral()
	eph.IdleAfter, eph.OfflineAfter = 200*time.Millisecond, 600*time.Millisecond
	// Two workers, each with its own view, both decaying.
	eph2 := NewEphemeral()
	eph2.IdleAfter, eph2.OfflineAfter = eph.IdleAfter, eph.OfflineAfter
	readers := func() *eventlog.Readers {
		r, err := eventlog.NewReaders(l.Conn())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return r
	}
	r1, r2 := readers(), readers()
	done := make(chan error, 2)
	go func() {
		done <- (&Consumer{Log: l, Store: st, Notifier: NewNotifier(DefaultRecent), Ephemeral: eph, Readers: r1}).Run(ctx)
	}()
	go func() {
		done <- (&Consumer{Log: l, Store: st, Notifier: NewNotifier(DefaultRecent), Ephemeral: eph2, Readers: r2}).Run(ctx)
	}()

	user := "@idle:localhost"
	if _, err := l.Append(ctx, eventlog.PresenceSubject(user), &eventlog.PresenceSet{UserID: user, Presence: "online",
		LastActiveTS: time.Now().UnixMilli()}, eventlog.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, ok := eph.presenceOf(user)
		if ok && (len(seen) == 0 || seen[len(seen)-1] != p.Presence) {
			seen = append(seen, p.Presence)
		}
		if ok && p.Presence == "offline" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence went %v, never offline", seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(seen) != 3 || seen[0] != "online" || seen[1] != "unavailable" {
		t.Fatalf("presence went %v, want online, unavailable, offline", seen)
	}
	// One record per step, whatever the number of workers.
	head, err := l.Head(ctx, eventlog.StreamEphemeral)
	if err != nil {
		t.Fatal(err)
	}
	if head != 3 {
		t.Fatalf("%d presence records, want 3", head)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}
