package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Swapping a rebuilt projection in while servers keep serving.
//
// A rebuild ("strand replay --swap") replays the log into a fresh schema of
// the live database (OpenFresh) and then SwapInto exchanges the two schemas
// with ALTER SCHEMA ... RENAME in one transaction. Running servers need no
// restart: a schema change invalidates every cached plan in PostgreSQL, and
// re-analysis resolves the unqualified table names through the search path
// again, so the servers' prepared statements reach the new tables. Their
// definitions are the same (the same migrations built them, which SwapInto
// checks), so the statements' result shapes do not change.

// ErrPauseExceeded means a swap could not finish within the pause it was
// allowed to impose on the live projection; nothing was swapped, and the
// caller can catch up again and retry.
var ErrPauseExceeded = errors.New("the swap did not fit in the allowed pause")

// maxLockWait bounds one attempt at taking the live tables' ACCESS
// EXCLUSIVE locks, during which readers of those tables wait.
const maxLockWait = 500 * time.Millisecond

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func validSchemaName(s string) bool { return schemaName.MatchString(s) }

// SwapInto makes this store's schema (a rebuild opened with OpenFresh) the
// live schema: the schema named live is renamed to old and this store's
// schema to live, in one transaction that happens when the rebuild equals
// the live projection. In that transaction it
//
//  1. locks live's projector_positions in EXCLUSIVE mode, which pauses the
//     live projectors (each projection transaction starts by writing that
//     table) but no reader;
//  2. reads the live positions and calls catchUp(ctx, to), which must bring
//     this store to exactly those positions and commit (on this store's
//     other connections), and checks that it did;
//  3. takes ACCESS EXCLUSIVE locks on every live table, waiting for the
//     readers in flight and holding back new ones, and renames the schemas.
//
// Step 3 is what keeps readers consistent. A REPEATABLE READ snapshot
// (a sync response, a room's auth state) that read the old tables finishes
// before the rename; one that starts later finds the new tables already
// holding the caught-up rows, committed in step 2 before any of its
// statements could get past the lock. A statement blocked on the lock
// resolves its tables again once it gets it, and so reads the new ones.
//
// pause bounds how long the live projectors are held (writes wait for
// them); a swap that does not fit returns ErrPauseExceeded. Each attempt
// at the locks of step 3 gives up after less than PostgreSQL's
// deadlock_timeout (a reader that holds one table and wants another one
// already locked here would otherwise be chosen as a deadlock victim and
// fail its request): the swap, not the reader, yields and tries again.
// It returns the positions at which the projections were swapped.
func (s *Store) SwapInto(ctx context.Context, live, old string, pause time.Duration, catchUp func(ctx context.Context, to map[string]uint64) error) (map[string]uint64, error) {
	if !validSchemaName(old) {
		return nil, fmt.Errorf("swap: schema name %q: want lower-case letters, digits and underscores", old)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	defer conn.Release()
	var fresh *string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&fresh); err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	if fresh == nil || *fresh == live {
		return nil, fmt.Errorf("swap: this store is not on a rebuild schema of its own")
	}
	tables, err := checkSameSchema(ctx, conn.Conn(), live, *fresh)
	if err != nil {
		return nil, err
	}
	qualified := func(t string) string { return pgx.Identifier{live, t}.Sanitize() }
	lockList := make([]string, len(tables))
	for i, t := range tables {
		lockList[i] = qualified(t)
	}

	deadline := time.Now().Add(pause)
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	exec := func(sql string) error {
		_, err := tx.Exec(ctx, sql)
		return err
	}

	// 1. Pause the live projectors. Waiting for a projection transaction
	// in flight is part of the pause.
	if err := exec(fmt.Sprintf("SET LOCAL lock_timeout = %d", max(pause.Milliseconds(), 1))); err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	if err := exec("LOCK TABLE " + qualified("projector_positions") + " IN EXCLUSIVE MODE"); err != nil {
		if isLockWait(err) && ctx.Err() == nil {
			return nil, fmt.Errorf("%w: pausing the live projectors: %v", ErrPauseExceeded, err)
		}
		return nil, fmt.Errorf("swap: pause the live projectors: %w", err)
	}

	// 2. Catch the rebuild up to the paused live projection.
	to, err := positions(ctx, tx, qualified("projector_positions"))
	if err != nil {
		return nil, fmt.Errorf("swap: live %w", err)
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	err = catchUp(cctx, to)
	cancel()
	if err != nil {
		if ctx.Err() == nil && !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: catching up: %v", ErrPauseExceeded, err)
		}
		return nil, fmt.Errorf("swap: catch up: %w", err)
	}
	got, err := positions(ctx, tx, "projector_positions")
	if err != nil {
		return nil, fmt.Errorf("swap: rebuild %w", err)
	}
	if !maps.Equal(got, to) {
		return nil, fmt.Errorf("swap: the rebuild is at %v, the live projection at %v", got, to)
	}

	// 3. Hold back every reader of the live tables, then rename.
	waitMax := maxLockWait
	var dl float64
	if err := tx.QueryRow(ctx, "SELECT EXTRACT(EPOCH FROM current_setting('deadlock_timeout')::interval)::float8").Scan(&dl); err == nil && dl > 0 {
		waitMax = min(waitMax, time.Duration(dl*float64(time.Second))/2)
	}
	lockAll := "LOCK TABLE " + strings.Join(lockList, ", ") + " IN ACCESS EXCLUSIVE MODE"
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return nil, fmt.Errorf("%w: locking the live tables against readers", ErrPauseExceeded)
		}
		// A savepoint, so that a failed attempt releases the locks it
		// took but keeps the projectors paused and the catch-up valid.
		if err := exec("SAVEPOINT swap_lock"); err != nil {
			return nil, fmt.Errorf("swap: %w", err)
		}
		if err := exec(fmt.Sprintf("SET LOCAL statement_timeout = %d", max(min(waitMax, remaining).Milliseconds(), 1))); err != nil {
			return nil, fmt.Errorf("swap: %w", err)
		}
		err := exec(lockAll)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !isLockWait(err) {
			return nil, fmt.Errorf("swap: lock the live tables: %w", err)
		}
		if err := exec("ROLLBACK TO SAVEPOINT swap_lock"); err != nil {
			return nil, fmt.Errorf("swap: %w", err)
		}
		// Let the readers that queued behind the failed attempt through.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, sql := range []string{
		"SET LOCAL statement_timeout = 0",
		"ALTER SCHEMA " + pgx.Identifier{live}.Sanitize() + " RENAME TO " + pgx.Identifier{old}.Sanitize(),
		"ALTER SCHEMA " + pgx.Identifier{*fresh}.Sanitize() + " RENAME TO " + pgx.Identifier{live}.Sanitize(),
	} {
		if err := exec(sql); err != nil {
			return nil, fmt.Errorf("swap: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("swap: commit: %w", err)
	}
	return to, nil
}

// checkSameSchema returns the tables of live, projector_positions first,
// after checking that fresh has the same tables built by the same
// migrations: anything else in live would be lost or hidden by the swap,
// and a different schema version would break the servers' statements.
func checkSameSchema(ctx context.Context, conn *pgx.Conn, live, fresh string) ([]string, error) {
	names := func(schema string) ([]string, error) {
		rows, err := conn.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	lt, err := names(live)
	if err != nil {
		return nil, fmt.Errorf("swap: tables of %s: %w", live, err)
	}
	ft, err := names(fresh)
	if err != nil {
		return nil, fmt.Errorf("swap: tables of %s: %w", fresh, err)
	}
	if !slices.Contains(lt, "projector_positions") {
		return nil, fmt.Errorf("swap: schema %s holds no Strand projection", live)
	}
	if !slices.Equal(lt, ft) {
		return nil, fmt.Errorf("swap: schema %s has tables %v, the rebuild %v: refusing to swap", live, lt, ft)
	}
	versions := func(schema string) ([]string, error) {
		rows, err := conn.Query(ctx, "SELECT version FROM "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+" ORDER BY version")
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	lv, err := versions(live)
	if err != nil {
		return nil, fmt.Errorf("swap: migrations of %s: %w", live, err)
	}
	fv, err := versions(fresh)
	if err != nil {
		return nil, fmt.Errorf("swap: migrations of %s: %w", fresh, err)
	}
	if !slices.Equal(lv, fv) {
		return nil, fmt.Errorf("swap: schema %s has migrations %v, the rebuild %v: run replay with the servers' version", live, lv, fv)
	}
	out := []string{"projector_positions"}
	for _, t := range lt {
		if t != "projector_positions" {
			out = append(out, t)
		}
	}
	return out, nil
}

// isLockWait reports whether err ended a wait for a lock: lock_timeout,
// statement_timeout, or PostgreSQL's deadlock detector.
func isLockWait(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "55P03" || pe.Code == "57014" || pe.Code == "40P01")
}

// DropSchema drops a schema and everything in it, such as the one a swap
// renamed the replaced projection to.
func (s *Store) DropSchema(ctx context.Context, schema string) error {
	if !validSchemaName(schema) || schema == "public" {
		return fmt.Errorf("drop schema: refusing %q", schema)
	}
	// A reader whose transaction began before the swap still holds some
	// of the replaced tables and may want more of them: PostgreSQL then
	// ends the drop as a deadlock victim (or its lock wait). Such readers
	// finish within a request, so the drop waits a moment and tries again.
	const attempts = 20
	var err error
	for i := range attempts {
		if _, err = s.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err == nil || !isLockWait(err) || i == attempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop schema %s: %w", schema, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("drop schema %s: %w", schema, err)
	}
	return nil
}
