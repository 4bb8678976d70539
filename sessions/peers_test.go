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
	// b is parked before evicting the revocation and cannot read on until
	// released: waiting for it can only end in giving up, however long
	// the wait (shortened here so the test need not sit through 5 s).
	sessions.SetEvictWait(a, 200*time.Millisecond)
	if err := a.AwaitEvicted(ctx, revoked); err == nil {
		t.Fatal("revocation answered while another cache had not read it")
	}
	sessions.SetEvictWait(a, 0)
	close(release)
	if err := a.AwaitEvicted(ctx, revoked); err != nil {
		t.Fatalf("revocation still waiting after the other cache was released: %v", err)
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
	if err := a.AwaitEvicted(ctx, later); err != nil {
		t.Fatal(err)
	}
	// Answered by b's last word, not by its silence: b still counts as a
	// reader heard from (its report has not aged out), and it never read
	// the later revocation, so only "holds nothing" let the wait end.
	if n := ra.Count("sessions"); n != 2 {
		t.Fatalf("readers heard of when the later revocation was answered: %d, want 2 (a, and b holding nothing)", n)
	}
}
