// Package store is the sole owner of Strand's Postgres schema: the
// connection pool, the embedded migrations, the writes projectors make and
// the read queries the api and sync workers use. No SQL lives elsewhere.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLockID is the pg_advisory_lock key under which migrations run,
// so that several processes starting at once apply each migration once.
const migrationLockID = 0x5354524e // "STRN"

// defaultMaxConns is the pool size unless the URL sets pool_max_conns.
const defaultMaxConns = 16

// ErrNotFound is returned by reads that find no row.
var ErrNotFound = errors.New("store: not found")

// Store is a pool of connections to one Strand database.
type Store struct {
	pool *pgxpool.Pool
	// pushEvents shares parsed create and power levels events between
	// users' notification counts (pushcounts.go).
	pushEvents matrix.EventCache
	// txns gathers concurrent EventByTxn lookups into one query.
	txns txnLookups
}

// Open connects to the database at url, creating the database if it does
// not exist, and applies pending migrations.
func Open(ctx context.Context, url string) (*Store, error) {
	return open(ctx, url, "", defaultMaxConns)
}

// OpenSized is Open with a pool of maxConns connections (pool_max_conns
// in the URL still wins). A projector that shares its process with
// request handlers gets a pool of its own this way, so that a flood of
// requests queueing for connections cannot hold up the projection every
// write waits for.
func OpenSized(ctx context.Context, url string, maxConns int32) (*Store, error) {
	return open(ctx, url, "", maxConns)
}

// OpenFresh opens a Store on an empty schema of its own in the database at
// url, for a rebuild that is later swapped in (SwapInto): the schema is
// dropped if a previous rebuild left it behind, created, and migrated.
// Every connection of the Store resolves table names in that schema only.
func OpenFresh(ctx context.Context, url, schema string) (*Store, error) {
	if !validSchemaName(schema) {
		return nil, fmt.Errorf("schema name %q: want lower-case letters, digits and underscores", schema)
	}
	return open(ctx, url, schema, defaultMaxConns)
}

func open(ctx context.Context, url, freshSchema string, maxConns int32) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgxpool's default (4 on this kind of machine) starves a server
		// whose requests each hold a connection briefly while others wait
		// on long-polls and projections; pool_max_conns in the URL wins.
		cfg.MaxConns = maxConns
	}
	if err := createDatabase(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	if freshSchema != "" {
		if err := recreateSchema(ctx, cfg.ConnConfig, freshSchema); err != nil {
			return nil, err
		}
		// The migrations and every query name tables unqualified, so a
		// search path of just this schema makes the whole store (writes,
		// reads, Dump) work on it; pg_catalog is always searched first.
		cfg.ConnConfig.RuntimeParams["search_path"] = freshSchema
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s on %s:%d: %w", cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	s := &Store{pool: pool}
	if err := s.Migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close releases all connections.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool for tests and tooling inside this package's tree.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// createDatabase creates cfg.Database by connecting to the server's
// "postgres" database with the same credentials. Losing a creation race to
// another process is fine.
func createDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	name := cfg.Database
	if name == "" || name == "postgres" {
		return nil
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil // created concurrently by another process
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// recreateSchema drops schema with everything in it, if it exists, and
// creates it empty.
func recreateSchema(ctx context.Context, cfg *pgx.ConnConfig, schema string) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to database %s: %w", cfg.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	id := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+id+" CASCADE"); err != nil {
		return fmt.Errorf("drop schema %s: %w", schema, err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+id); err != nil {
		return fmt.Errorf("create schema %s: %w", schema, err)
	}
	return nil
}

type migration struct {
	version string
	sql     string
}

func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var ms []migration
	for _, n := range names {
		b, err := migrationFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		v := strings.TrimSuffix(strings.TrimPrefix(n, "migrations/"), ".sql")
		ms = append(ms, migration{version: v, sql: string(b)})
	}
	return ms, nil
}

// Migrate applies, in order and each in its own transaction, every
// embedded migration not yet recorded in schema_migrations. Migrations are
// forward-only.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockID); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLockID) //nolint:errcheck // released with the session anyway
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, m := range ms {
		var done bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", m.version).Scan(&done); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if done {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", m.version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.version, err)
		}
	}
	return nil
}

// Position returns the last sequence of stream applied to this database:
// for a ROOMS lane, how far it is complete through (its applied position
// or, if higher, what its idle check recorded); for ROOMS itself, the
// lowest of its lanes (everything at or below it is applied).
func (s *Store) Position(ctx context.Context, stream string) (uint64, error) {
	var seq int64
	var err error
	switch {
	case stream == eventlog.StreamRooms:
		err = s.pool.QueryRow(ctx, roomsPositionSQL, eventlog.RoomLanes).Scan(&seq)
	case eventlog.LaneIndex(stream) >= 0:
		err = s.pool.QueryRow(ctx, `SELECT GREATEST(COALESCE((SELECT seq FROM projector_positions WHERE stream = $1), 0),
			COALESCE((SELECT seq FROM projector_lane_complete WHERE lane = $1), 0))`, stream).Scan(&seq)
	default:
		err = s.pool.QueryRow(ctx, "SELECT seq FROM projector_positions WHERE stream = $1", stream).Scan(&seq)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("position of %s: %w", stream, err)
	}
	return uint64(seq), nil
}

// roomsPositionSQL reads the position of ROOMS as a whole: the lowest of
// its lanes' positions (Position of a lane), 0 for a lane with neither.
const roomsPositionSQL = `SELECT COALESCE(min(GREATEST(COALESCE(p.seq, 0), COALESCE(c.seq, 0))), 0)
	FROM unnest($1::text[]) AS l(lane)
	LEFT JOIN projector_positions p ON p.stream = l.lane
	LEFT JOIN projector_lane_complete c ON c.lane = l.lane`

// Positions returns the applied position of every stream and ROOMS lane
// in this database (those never applied are absent).
func (s *Store) Positions(ctx context.Context) (map[string]uint64, error) {
	return positions(ctx, s.pool, "projector_positions")
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// positions reads a projector_positions table (table is a sanitised,
// possibly schema-qualified name).
func positions(ctx context.Context, q querier, table string) (map[string]uint64, error) {
	rows, err := q.Query(ctx, "SELECT stream, seq FROM "+table)
	if err != nil {
		return nil, fmt.Errorf("positions: %w", err)
	}
	out := map[string]uint64{}
	for rows.Next() {
		var stream string
		var seq int64
		if err := rows.Scan(&stream, &seq); err != nil {
			rows.Close()
			return nil, fmt.Errorf("positions: %w", err)
		}
		if seq > 0 {
			out[stream] = uint64(seq)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("positions: %w", err)
	}
	return out, nil
}

// Schema returns the schema this store's tables live in: public for a
// server on PostgreSQL's default search path.
func (s *Store) Schema(ctx context.Context) (string, error) {
	var name *string
	if err := s.pool.QueryRow(ctx, "SELECT current_schema()").Scan(&name); err != nil {
		return "", fmt.Errorf("current schema: %w", err)
	}
	if name == nil {
		return "", errors.New("current schema: no schema on the search path exists")
	}
	return *name, nil
}

// Unavailable reports whether err means the database could not be reached
// or is restarting, as opposed to a query that failed on its own: the
// request may succeed if retried.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08: connection exception; 57P0x: shutdown or starting up.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// A connection the server dropped (a restart) surfaces as EOF.
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}
