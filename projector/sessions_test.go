package projector_test

import (
	"context"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"strand/eventlog"
	"strand/projector"
	"strand/projector/store"
	"strand/sessions"
)

// The session cache answers repeat lookups from memory, and a revocation
// on the log takes a token out of it by the time the projection has
// applied the revocation: a cached token never outlives its logout.
func TestSessionCacheFollowsRevocations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, st, _ := testLogAndStore(ctx, t)
	runProjector(ctx, t, &projector.Projector{Log: l, Store: st})
	wm, err := eventlog.NewWatermark(l.Conn(), st.Position)
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	readers, err := eventlog.NewReaders(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	defer readers.Close()
	sess := sessions.New(sessions.Config{Store: st, Log: l, Watermark: wm, Readers: readers})
	fctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() { defer close(followed); sess.Follow(fctx) }()
	defer func() { stopFollow(); <-followed }()

	hashOf := func(tok string) []byte { return store.TokenHash(tok) }
	appendAndWait := func(user string, r eventlog.Record) {
		t.Helper()
		seq, err := l.Append(ctx, eventlog.UserSubject(user), r, eventlog.AppendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := wm.Wait(ctx, eventlog.StreamAccounts, seq); err != nil {
			t.Fatal(err)
		}
	}
	register := func(user, device, tok string) {
		appendAndWait(user, &eventlog.UserRegistered{UserID: user, TS: 1, Device: &eventlog.DeviceCreated{
			UserID: user, DeviceID: device, TokenHash: hex.EncodeToString(hashOf(tok)), TS: 1}})
	}
	register("@a:x", "DA", "token-a")
	register("@b:x", "DB", "token-b")

	// Look both up until they are cached (the reader starts in the
	// background; until it follows, lookups go to the database).
	deadline := time.Now().Add(10 * time.Second)
	for sess.Len() < 2 {
		for _, tok := range []string{"token-a", "token-b"} {
			if ss, err := sess.Lookup(ctx, hashOf(tok)); err != nil {
				t.Fatalf("lookup %s: %v", tok, err)
			} else if ss.DeviceID == "" {
				t.Fatalf("lookup %s: empty session", tok)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions cached after 10 s", sess.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Served from memory: a row removed behind the log's back (never
	// done outside this test) does not change the answer.
	if _, err := st.Pool().Exec(ctx, "DELETE FROM devices WHERE device_id = 'DB'"); err != nil {
		t.Fatal(err)
	}
	if ss, err := sess.Lookup(ctx, hashOf("token-b")); err != nil || ss.UserID != "@b:x" {
		t.Fatalf("cached lookup of token-b: %+v %v", ss, err)
	}

	// Logging a's device out ends token-a at once and leaves b cached.
	appendAndWait("@a:x", &eventlog.DevicesDeleted{UserID: "@a:x", DeviceIDs: []string{"DA"}})
	if _, err := sess.Lookup(ctx, hashOf("token-a")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token-a after its logout: %v", err)
	}
	if ss, err := sess.Lookup(ctx, hashOf("token-b")); err != nil || ss.UserID != "@b:x" {
		t.Fatalf("token-b after a's logout: %+v %v", ss, err)
	}

	// A new login on b's device replaces its token: the old one goes.
	appendAndWait("@b:x", &eventlog.DeviceCreated{UserID: "@b:x", DeviceID: "DB", TokenHash: hex.EncodeToString(hashOf("token-b2")), TS: 2})
	if _, err := sess.Lookup(ctx, hashOf("token-b")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token-b after its device got a new token: %v", err)
	}
	if ss, err := sess.Lookup(ctx, hashOf("token-b2")); err != nil || ss.DeviceID != "DB" {
		t.Fatalf("token-b2: %+v %v", ss, err)
	}

	// Deactivation ends every session of the user.
	if _, err := sess.Lookup(ctx, hashOf("token-b2")); err != nil {
		t.Fatal(err)
	}
	appendAndWait("@b:x", &eventlog.UserDeactivated{UserID: "@b:x"})
	if _, err := sess.Lookup(ctx, hashOf("token-b2")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token-b2 after deactivation: %v", err)
	}

	// Stopping the reader turns the cache off rather than leaving it
	// unwatched: lookups read the database again.
	register("@c:x", "DC", "token-c")
	for i := 0; i < 3; i++ {
		if _, err := sess.Lookup(ctx, hashOf("token-c")); err != nil {
			t.Fatal(err)
		}
	}
	stopFollow()
	<-followed
	if n := sess.Len(); n != 0 {
		t.Fatalf("%d sessions cached after the reader stopped", n)
	}
	if _, err := st.Pool().Exec(ctx, "DELETE FROM devices WHERE device_id = 'DC'"); err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Lookup(ctx, hashOf("token-c")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token-c read from a cache nobody keeps: %v", err)
	}
}
