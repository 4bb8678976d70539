package sessions_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"strand/eventlog"
	"strand/projector/store"
	"strand/sessions"
)

// A session read from a projection that has not applied everything the
// cache's reader has read is not kept: the reader may already have evicted
// for a revocation the row does not reflect yet, and a kept row would then
// outlive that revocation. (The first use of a refreshed token revokes its
// predecessor without anyone waiting for the projection.) The projector is
// played by hand here, to hold the projection behind the reader.
func TestSessionCacheKeepsNothingReadBehindItsReader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, st, wm := logAndStore(t)
	readers, err := eventlog.NewReaders(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	defer readers.Close()
	sess := sessions.New(sessions.Config{Store: st, Log: l, Watermark: wm, Readers: readers})
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); sess.Follow(fctx) }()
	defer func() { stop(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); readers.Count("sessions") < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cache does not follow")
		}
	}

	// The projection holds a device whose token the log has since revoked:
	// the reader has read the revocation, the projector has not applied it.
	hash := store.TokenHash("t")
	if _, err := st.Pool().Exec(ctx, `INSERT INTO users (user_id, created_ts) VALUES ('@a:x', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO devices (user_id, device_id, token_hash, created_ts) VALUES ('@a:x', 'D', $1, 1)`, hash); err != nil {
		t.Fatal(err)
	}
	seq, err := l.Append(ctx, eventlog.UserSubject("@a:x"), &eventlog.DevicesDeleted{UserID: "@a:x", DeviceIDs: []string{"D"}}, eventlog.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.AwaitEvicted(ctx, seq); err != nil {
		t.Fatal(err)
	}
	// The projection's answer is all there is for now, and is not kept.
	if _, err := sess.Lookup(ctx, hash); err != nil {
		t.Fatalf("lookup while the projection is behind: %v", err)
	}
	if n := sess.Len(); n != 0 {
		t.Fatalf("%d sessions kept from a projection behind the reader", n)
	}

	// The projector applies the revocation: the token is gone.
	if _, err := st.Pool().Exec(ctx, `DELETE FROM devices WHERE device_id = 'D'`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO projector_positions (stream, seq) VALUES ($1, $2)
		ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq`, eventlog.StreamAccounts, int64(seq)); err != nil {
		t.Fatal(err)
	}
	if err := wm.Wait(ctx, eventlog.StreamAccounts, seq); err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Lookup(ctx, hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a revoked token is still accepted: %v", err)
	}

	// Records that revoke nothing (account data, keys, to-device) read
	// ahead of the projection do not hold fills back: the cache is kept
	// on the busy ACCOUNTS stream of an E2EE deployment.
	other := store.TokenHash("u")
	if _, err := st.Pool().Exec(ctx, `INSERT INTO devices (user_id, device_id, token_hash, created_ts) VALUES ('@a:x', 'E', $1, 1)`, other); err != nil {
		t.Fatal(err)
	}
	seq2, err := l.Append(ctx, eventlog.UserSubject("@a:x"), &eventlog.AccountDataSet{UserID: "@a:x", Type: "x", Content: []byte(`{}`)}, eventlog.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.AwaitEvicted(ctx, seq2); err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Lookup(ctx, other); err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if n := sess.Len(); n != 1 {
		t.Fatalf("%d sessions kept; a record that revokes nothing held the fill back", n)
	}
}
