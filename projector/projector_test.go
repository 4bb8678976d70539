package projector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/projector"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// testLogAndStore starts a JetStream server and returns a log on it with the
// streams declared, and a store on a new database.
func testLogAndStore(ctx context.Context, t *testing.T) (*eventlog.Log, *store.Store, string) {
	t.Helper()
	ns := logtest.Start(t)
	l, err := eventlog.New(ns.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.EnsureStreams(ctx, l.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	url := storetest.NewURL(t)
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return l, st, url
}

const testUser = "@a:example.org"

// appendAccountData appends account data records from..to, which must land
// at those stream sequences.
func appendAccountData(ctx context.Context, t *testing.T, l *eventlog.Log, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		rec := &eventlog.AccountDataSet{UserID: testUser, Type: fmt.Sprintf("org.example.t%02d", i), Content: json.RawMessage(`{}`)}
		seq, err := l.Append(ctx, eventlog.UserSubject(testUser), rec, eventlog.AppendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("record %d appended at %d", i, seq)
		}
	}
}

// waitPosition waits until st has applied ACCOUNTS up to want.
func waitPosition(ctx context.Context, t *testing.T, st *store.Store, want uint64) {
	t.Helper()
	for {
		pos, err := st.Position(ctx, eventlog.StreamAccounts)
		if err != nil {
			t.Fatal(err)
		}
		if pos == want {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("position %d, want %d", pos, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runProjector runs a projector on st until the returned stop.
func runProjector(ctx context.Context, t *testing.T, p *projector.Projector) (stop func()) {
	t.Helper()
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("projector: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// checkEqualsReplay compares st with a replay of the log into a new
// database.
func checkEqualsReplay(ctx context.Context, t *testing.T, l *eventlog.Log, st *store.Store) {
	t.Helper()
	replayed, err := store.Open(ctx, storetest.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer replayed.Close()
	if err := (&projector.Projector{Log: l, Store: replayed}).Replay(ctx, nil); err != nil {
		t.Fatal(err)
	}
	a, err := st.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := replayed.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("projection differs from a replay:\n%s\n---\n%s", a, b)
	}
}

// A projection replaced under a running projector by one that lacks some
// records the projector had applied (what a schema swap at the wrong
// moment would do): the lane notices that the stored position is behind
// what it applied, reads again from the stored position, and the
// projection ends up complete, equal to a replay, instead of skipping
// ahead and leaving a gap.
func TestLaneReadsAgainWhenStoredPositionGoesBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, st, _ := testLogAndStore(ctx, t)
	appendAccountData(ctx, t, l, 1, 20)
	stop := runProjector(ctx, t, &projector.Projector{Log: l, Store: st})
	waitPosition(ctx, t, st, 20)

	// The projection at position 10, under the projector that applied 20.
	tx, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM account_data WHERE stream_seq > 10"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE projector_positions SET seq = 10 WHERE stream = $1", eventlog.StreamAccounts); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	appendAccountData(ctx, t, l, 21, 21)
	waitPosition(ctx, t, st, 21)
	stop()

	var n int
	if err := st.Pool().QueryRow(ctx, "SELECT count(*) FROM account_data").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 21 {
		t.Fatalf("%d account data rows after the position went back, want 21", n)
	}
	checkEqualsReplay(ctx, t, l, st)

	// Behind is refused without applying anything; ahead is skipped.
	if _, err := st.Project(ctx, eventlog.StreamAccounts, 22, nil, nil); !errors.Is(err, store.ErrPositionBehind) {
		t.Fatalf("Project expecting 22 at 21: %v, want ErrPositionBehind", err)
	}
	old := []eventlog.Msg{{Seq: 5, Type: "account_data.set"}}
	if pos, err := st.Project(ctx, eventlog.StreamAccounts, 4, old, nil); err != nil || pos != 21 {
		t.Fatalf("Project of an applied record: %d, %v; want 21, nil", pos, err)
	}
}

// A live projector whose transaction is paused by a swap (it waits on the
// swap's lock of projector_positions) carries on, after the rename, on the
// new tables at the position it expected: its statements resolve the
// table names again once they get the lock. Nothing lands in the replaced
// schema, and the lane never has to read again.
func TestSwapContinuesPausedProjector(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, st, url := testLogAndStore(ctx, t)
	var logs syncBuffer
	p := &projector.Projector{Log: l, Store: st, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	appendAccountData(ctx, t, l, 1, 10)
	stop := runProjector(ctx, t, p)
	waitPosition(ctx, t, st, 10)

	fresh, err := store.OpenFresh(ctx, url, "strand_rebuild")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	rebuild := &projector.Projector{Log: l, Store: fresh}
	if err := rebuild.ReplayTo(ctx, map[string]uint64{eventlog.StreamAccounts: 5}, nil); err != nil {
		t.Fatal(err)
	}
	pos, err := fresh.SwapInto(ctx, "public", "strand_old_test", 10*time.Second, func(ctx context.Context, to map[string]uint64) error {
		// The live projectors are paused: a new record makes the live
		// lane start a transaction that waits on the lock.
		appendAccountData(ctx, t, l, 11, 11)
		deadline := time.Now().Add(5 * time.Second)
		for {
			var waiting int
			if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_locks
				WHERE NOT granted AND relation = 'public.projector_positions'::regclass`).Scan(&waiting); err != nil {
				return err
			}
			if waiting > 0 {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("the live projector never waited on the swap's lock")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return rebuild.ReplayTo(ctx, to, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if pos[eventlog.StreamAccounts] != 10 {
		t.Fatalf("swapped at %v, want ACCOUNTS 10", pos)
	}
	waitPosition(ctx, t, st, 11)
	stop()
	if strings.Contains(logs.String(), "went back") {
		t.Errorf("the lane had to read again:\n%s", logs.String())
	}
	var oldPos int64
	if err := st.Pool().QueryRow(ctx, "SELECT seq FROM strand_old_test.projector_positions").Scan(&oldPos); err != nil {
		t.Fatal(err)
	}
	if oldPos != 10 {
		t.Errorf("the replaced schema moved on to %d", oldPos)
	}
	checkEqualsReplay(ctx, t, l, st)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
