package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"strand/projector/store/storetest"
)

// A database projected before migration 0015 may hold an m.mentions entry
// longer than a GIN index entry can be (about 2,700 bytes): 0015 must
// drop such entries, which mention no user, before it builds the index.
func TestMentionsIndexMigrationDropsOverlongEntries(t *testing.T) {
	ctx := context.Background()
	st, url := storetest.Open(t)
	conn, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Back to the schema before 0015, with a row it projected then.
	for _, q := range []string{
		`DROP INDEX events_mentions`,
		`DELETE FROM schema_migrations WHERE version = '0015_push_mentions'`,
		`INSERT INTO events (pos, event_id, room_id, type, sender, origin_server_ts, client, pdu, mentions)
			VALUES (1, '$e', '!r:x', 'm.room.message', '@a:x', 0, '\x7b7d', '\x7b7d',
				ARRAY[(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i), '@b:x'])`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var got []string
	if err := conn.QueryRow(ctx, `SELECT mentions FROM events WHERE pos = 1`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "@b:x" {
		t.Fatalf("mentions %q, want [@b:x]", got)
	}
}
