package sessions_test

import (
	"context"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"strand/eventlog"
	"strand/projector/store"
	"strand/sessions"
)

// A revocation waits until every process's session cache has read it: a
// cache whose reader is held back holds the revocation's answer back too,
// and a cache that stops following no longer counts.
func TestRevocationWaitsForEverySessionCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, st, wm := logAndStore(t)

	follow := func(c *sessions.Cache) (stop func()) {
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); c.Follow(fctx) }()
		return func() { cancel(); <-done }
	}
	// Two processes' caches: each reports through its own Readers.
	newReaders := func() *eventlog.Readers {
		r, err := eventlog.NewReaders(l.Conn())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return r
	}
	ra := newReaders()
	a, b := sessions.New(sessions.Config{Store: st, Log: l, Watermark: wm, Readers: ra}), sessions.New(sessions.Config{Store: st, Log: l, Watermark: wm, Readers: newReaders()})
	held := make(chan struct{})
	release := make(chan struct{})
	var holdFrom atomic.Uint64
	holdFrom.Store(1 << 62)
	sessions.SetBeforeEvict(b, func(seq uint64) {
		if seq >= holdFrom.Load() {
			close(held)
			<-release
		}
	})
	stopA, stopB := follow(a), follow(b)
	defer stopA()
	// Both follow (and so read everything appended from now on) once
	// they have announced themselves.
	for deadline := time.Now().Add(10 * time.Second); ra.Count("sessions") < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("caches heard of: %d", ra.Count("sessions"))
		}
	}

	appendRec := func(r eventlog.Record) uint64 {
		t.Helper()
		seq, err := l.Append(ctx, eventlog.UserSubject("@a:x"), r, eventlog.AppendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	first := appendRec(&eventlog.UserRegistered{UserID: "@a:x", TS: 1, Device: &eventlog.DeviceCreated{
		UserID: "@a:x", DeviceID: "D", TokenHash: hex.EncodeToString(store.TokenHash("t")), TS: 1}})
	if err := a.AwaitEvicted(ctx, first); err != nil {
		t.Fatal(err)
	}

	holdFrom.Store(first + 1)
	revoked := appendRec(&eventlog.DevicesDeleted{UserID: "@a:x", DeviceIDs: []string{"D"}})
	<-held
	answered := make(chan error, 1)
	go func() { answered <- a.AwaitEvicted(ctx, revoked) }()
	select {
	case err := <-answered:
		t.Fatalf("revocation answered while another cache had not read it: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("revocation still waiting after the other cache read it")
	}

	// A cache that stops following says it holds nothing: a later
	// revocation does not wait for it.
	// Its last word is that it holds nothing (watched on the readers'
	// subject): without it, b would stop counting only when its reports
	// age past eventlog.ReaderTTL, which can come within the bound below.
	reports, err := l.Conn().SubscribeSync("strand.read.sessions.*") // eventlog.Readers' subject for the topic
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reports.Unsubscribe() }()
	if err := l.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	stopB()
	holdsNothing := strconv.FormatUint(eventlog.HoldsNothing, 10)
	for {
		m, err := reports.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("a stopped cache never reported that it holds nothing: %v", err)
		}
		if string(m.Data) == holdsNothing {
			break
		}
	}
	later := appendRec(&eventlog.DevicesDeleted{UserID: "@a:x", DeviceIDs: []string{"E"}})
	start := time.Now()
	if err := a.AwaitEvicted(ctx, later); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("waited %s for a cache that had stopped", waited)
	}
}
