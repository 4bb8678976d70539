package store

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
)

// A Lease is a PostgreSQL session advisory lock held on its own
// connection: it lasts until released or until the holder's connection
// ends, so a projector process that dies gives up its leases at once.
type Lease struct {
	conn *pgx.Conn
	key  int64
}

// LeaseKey maps a lease name to an advisory lock key.
func LeaseKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("strand-lease:" + name))
	return int64(h.Sum64())
}

// TryLease takes the named lease if nobody holds it.
func (s *Store) TryLease(ctx context.Context, name string) (*Lease, bool, error) {
	// A connection of its own, outside the pool: a lease holds it for
	// as long as the lease lasts.
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, false, fmt.Errorf("lease %s: %w", name, err)
	}
	key := LeaseKey(name)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, false, fmt.Errorf("lease %s: %w", name, err)
	}
	if !ok {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, false, nil
	}
	return &Lease{conn: conn, key: key}, true, nil
}

// Release gives the lease up: closing its session releases the lock.
func (l *Lease) Release(ctx context.Context) {
	_ = l.conn.Close(context.WithoutCancel(ctx))
}

// HeldLeases counts which of the named leases are held by anyone.
func (s *Store) HeldLeases(ctx context.Context, names []string) (int, error) {
	keys := make([]int64, len(names))
	for i, n := range names {
		keys[i] = LeaseKey(n)
	}
	var n int
	// Advisory locks belong to a database; pg_locks lists every
	// database's, and other Strand databases on the server must not count.
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND ((classid::bigint << 32) | objid::bigint) = ANY($1)`, keys).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("held leases: %w", err)
	}
	return n, nil
}
