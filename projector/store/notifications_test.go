package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"strand/projector/store"
	"strand/projector/store/storetest"
)

// The scan behind GET /notifications reads a bounded number of rows
// however many rooms the user is in: about one per room plus what the
// page can hold, not up to the examined bound per room (10,000 rooms were
// 2,000,000 rows a request). Its answer is the newest qualifying events
// across the rooms, each after the user's join, not their own, not
// redacted: checked against the same selection made in Go.
func TestNotificationScanBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, u := storetest.Open(t)
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx) // one backend: its transaction's statistics
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()

	// The user's rooms are a few of the server's: step-1 of every step
	// positions are other rooms' events.
	const rooms, perRoom, step, user = 30, 12, 100 * 1024, "@u:x"
	type ev struct {
		pos          int64
		room, sender string
		redacted     bool
	}
	var evs []ev
	var ids []string
	joins := make([]int64, rooms)
	for r := range rooms {
		ids = append(ids, fmt.Sprintf("!r%d:x", r))
		joins[r] = int64(r%3) * step * rooms // some rooms joined later
	}
	// Round-robin over the rooms, as a busy account sees it; every
	// seventh event the user's own, every eleventh redacted.
	for i := range rooms * perRoom {
		e := ev{pos: int64(i+1) * step, room: ids[i%rooms], sender: "@s:x", redacted: i%11 == 5}
		if i%7 == 3 {
			e.sender = user
		}
		evs = append(evs, e)
		var because []byte
		if e.redacted {
			because = []byte(`{}`)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO events (pos, event_id, room_id, type, sender, origin_server_ts, client, pdu, redacted_because)
			VALUES ($1, $2, $3, 'm.room.message', $4, 0, '{}', '{}', $5)`, e.pos, fmt.Sprintf("$e%d", i), e.room, e.sender, because); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `INSERT INTO events (pos, event_id, room_id, type, sender, origin_server_ts, client, pdu)
		SELECT k * 1024, '$n' || k, '!other' || (k % 50) || ':x', 'm.room.message', '@s:x', 0, '{}', '{}'
		FROM generate_series(1, $1::bigint) AS k WHERE k % 100 <> 0`, rooms*perRoom*100+500); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		t.Fatal(err)
	}
	want := func(hi int64, n int) []int64 {
		var out []int64
		for i := len(evs) - 1; i >= 0 && len(out) < n; i-- {
			e := evs[i]
			r := slices.Index(ids, e.room)
			if e.pos < hi && e.pos > joins[r] && e.sender != user && !e.redacted {
				out = append(out, e.pos)
			}
		}
		return out
	}
	for _, tc := range []struct {
		hi int64
		n  int
	}{{1 << 40, 5}, {1 << 40, 40}, {rooms * perRoom / 2 * step, 8}, {1 << 40, 1000}, {3 * step, 5}} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fetched := func() int64 {
			var n int64
			if err := tx.QueryRow(ctx, `SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'events'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		before := fetched()
		rows, err := tx.Query(ctx, store.NotificationPositionsSQL, ids, joins, tc.hi, user, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		read := fetched() - before
		_ = tx.Rollback(ctx)
		if w := want(tc.hi, tc.n); !slices.Equal(got, w) {
			t.Errorf("below %d, %d: positions %v, want %v", tc.hi, tc.n, got, w)
		}
		// One probe per room (skipping the few rows that do not qualify),
		// then at most n rows of the rooms that can hold the answer.
		if bound := int64(2*rooms + 2*tc.n); tc.n < perRoom && read > bound {
			t.Errorf("below %d, %d: %d rows read, bound %d", tc.hi, tc.n, read, bound)
		}
	}
}
