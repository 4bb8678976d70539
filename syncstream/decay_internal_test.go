package syncstream

import (
	"context"
	"errors"
	"strings"
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p, ok := eph.presenceOf(user); ok && p.Presence == "offline" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("presence never went offline")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// One record per step, whatever the number of workers, read off the
	// log (polling the view could miss a step on a slow machine).
	head, err := l.Head(ctx, eventlog.StreamEphemeral)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	if err := l.Read(ctx, eventlog.StreamEphemeral, eventlog.ReadOptions{From: 1, StopAt: head}, func(_ context.Context, batch []eventlog.Msg) error {
		for _, m := range batch {
			rec, err := m.Decode()
			if err != nil {
				return err
			}
			seen = append(seen, rec.(*eventlog.PresenceSet).Presence)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "online,unavailable,offline" {
		t.Fatalf("presence records %v, want online, unavailable, offline", seen)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}
