package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"

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

// LeaseSession holds many leases on one connection of its own: a projector
// process holds a lease per lane it applies (ROOMS has a lane per
// partition), and a connection for each would spend the server's
// connections. Advisory locks are re-entrant within a session, so one
// session must not take a lease twice; a projector takes each lane's from
// one goroutine. Closing the session (or the process dying) releases all.
type LeaseSession struct {
	mu   sync.Mutex
	conn *pgx.Conn
}

// LeaseSession opens a session for leases.
func (s *Store) LeaseSession(ctx context.Context) (*LeaseSession, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("lease session: %w", err)
	}
	return &LeaseSession{conn: conn}, nil
}

// TryLease takes the named lease if nobody holds it.
func (l *LeaseSession) TryLease(ctx context.Context, name string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ok bool
	if err := l.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", LeaseKey(name)).Scan(&ok); err != nil {
		return false, fmt.Errorf("lease %s: %w", name, err)
	}
	return ok, nil
}

// Release gives the named lease up.
func (l *LeaseSession) Release(ctx context.Context, name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", LeaseKey(name)); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// Close ends the session, releasing every lease it holds.
func (l *LeaseSession) Close(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
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
