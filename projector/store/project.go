package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// queryer is what a projection transaction reads and writes through.
type queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Tx is one projection transaction. Writes are queued and sent to Postgres
// in a single pipelined batch at commit, so applying a batch of records
// costs one round trip, not one per record.
type Tx struct {
	tx    queryer
	batch pgx.Batch

	// Coalesced writes, sent by pending(): room events go in one
	// multi-row insert, and each room's head is written once per batch.
	events []*RoomEventRow
	heads  map[string]roomHead
	// copier, in a bulk transaction (ProjectFresh), takes the room events
	// as a COPY instead of the multi-row insert.
	copier copier
	order  []string // rooms in the order their heads were first set
}

type roomHead struct {
	seq     uint64
	eventID string
	pos     int64
	depth   int64
}

// ErrPositionBehind means the stored position of a stream is lower than
// the position its reader had applied: the projection was replaced under
// the reader (a schema swap by "strand replay --swap", a restore), and
// applying the reader's next records would leave a gap. The reader must
// start again from the stored position.
var ErrPositionBehind = errors.New("stored position is behind the reader")

// Project applies msgs, all from stream and in order, in one transaction
// that also advances the stream's position. expect is the position the
// reader believes is stored: where it started reading, or what its last
// Project returned. Records at or below the stored position were applied
// before (redelivery, or a second projector) and are skipped, which makes
// applying exactly-once in effect (invariant 4). A stored position below
// expect returns ErrPositionBehind and applies nothing. Project returns the
// position after the batch.
func (s *Store) Project(ctx context.Context, stream string, expect uint64, msgs []eventlog.Msg, apply func(ctx context.Context, tx *Tx, m eventlog.Msg) error) (uint64, error) {
	pos, err := s.project(ctx, stream, expect, msgs, apply)
	if err != nil {
		return 0, fmt.Errorf("project %s: %w", stream, err)
	}
	return pos, nil
}

// project runs the transaction in two round trips, whatever the batch
// holds (reads made by apply, such as a redaction's target, add theirs):
// the first opens it and locks the position row, the second carries every
// write, the new position and the commit. This is on every write's path.
func (s *Store) project(ctx context.Context, stream string, expect uint64, msgs []eventlog.Msg, apply func(ctx context.Context, tx *Tx, m eventlog.Msg) error) (pos uint64, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	// A connection released inside a transaction (an error below) is
	// closed by the pool rather than reused, so no half transaction
	// survives.
	defer conn.Release()
	c := conn.Conn()

	open := &pgx.Batch{}
	open.Queue("BEGIN")
	// The projection is derived from the log and its position commits
	// with its rows, so a commit lost in a Postgres crash is applied
	// again from the log: waiting for the WAL flush buys nothing but
	// latency on every write's path (the log's append was the durable
	// step). Other sessions see the commit at once either way.
	open.Queue("SET LOCAL synchronous_commit TO OFF")
	open.Queue("INSERT INTO projector_positions (stream, seq) VALUES ($1, 0) ON CONFLICT DO NOTHING", stream)
	// FOR UPDATE serialises projectors of the same stream: the second one
	// waits here, then sees the first one's position and skips.
	var cur int64
	open.Queue("SELECT seq FROM projector_positions WHERE stream = $1 FOR UPDATE", stream).QueryRow(func(row pgx.Row) error {
		return row.Scan(&cur)
	})
	if err := c.SendBatch(ctx, open).Close(); err != nil {
		return 0, err
	}
	rollback := func(err error) (uint64, error) {
		_, _ = c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return 0, err
	}
	if uint64(cur) < expect {
		return rollback(fmt.Errorf("%w: %s is stored at %d, the reader applied up to %d", ErrPositionBehind, stream, cur, expect))
	}
	pos = uint64(cur)
	tx := &Tx{tx: c}
	for _, m := range msgs {
		if m.Seq <= pos {
			continue
		}
		if err := apply(ctx, tx, m); err != nil {
			return rollback(fmt.Errorf("apply %s seq %d (%s): %w", stream, m.Seq, m.Type, err))
		}
		pos = m.Seq
	}
	if pos == uint64(cur) {
		if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
			return 0, err
		}
		return pos, nil
	}
	tx.pending(false)
	tx.batch.Queue("UPDATE projector_positions SET seq = $2 WHERE stream = $1", stream, int64(pos))
	tx.batch.Queue("COMMIT")
	if err := c.SendBatch(ctx, &tx.batch).Close(); err != nil {
		return rollback(err)
	}
	// A COMMIT of a transaction that failed is answered as a rollback,
	// not an error: make sure this one committed.
	if c.PgConn().TxStatus() != 'I' {
		return rollback(errors.New("transaction did not commit"))
	}
	return pos, nil
}

func (t *Tx) queue(sql string, args ...any) { t.batch.Queue(sql, args...) }

func pgxBatch() pgx.Batch { return pgx.Batch{} }

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// AdvanceLane records that a ROOMS lane is complete through to, provided
// its applied position (its own last record) covers last, the newest
// record of the lane on the log as read after to was: then every record
// of the lane at or below to is applied (one at or below to was stored
// before last was read). last 0 is for a caller that knows it (a replay
// that read the lane up to to). It returns the lane's position (the higher
// of the two) and whether it moved. The applied position itself is left
// as it is: it is what a replay of the log reproduces.
func (s *Store) AdvanceLane(ctx context.Context, lane string, last, to uint64) (uint64, bool, error) {
	var applied, done int64
	err := s.pool.QueryRow(ctx, `SELECT COALESCE((SELECT seq FROM projector_positions WHERE stream = $1), 0),
		COALESCE((SELECT seq FROM projector_lane_complete WHERE lane = $1), 0)`, lane).Scan(&applied, &done)
	if err != nil {
		return 0, false, fmt.Errorf("advance %s: %w", lane, err)
	}
	cur := uint64(max(applied, done))
	if uint64(applied) < last || cur >= to {
		return cur, false, nil
	}
	// The commit does not wait for its WAL flush: the fact is re-derived
	// by the next check after a crash.
	_, err = s.pool.Exec(ctx, `WITH s AS (SELECT set_config('synchronous_commit', 'off', true))
		INSERT INTO projector_lane_complete (lane, seq) SELECT $1, $2 FROM s
		ON CONFLICT (lane) DO UPDATE SET seq = GREATEST(projector_lane_complete.seq, EXCLUDED.seq)`, lane, int64(to))
	if err != nil {
		return 0, false, fmt.Errorf("advance %s: %w", lane, err)
	}
	return to, true, nil
}

// AppliedPosition is a lane's (or a stream's) own applied position: where
// its reader resumes, and what Project checks its expectation against.
func (s *Store) AppliedPosition(ctx context.Context, stream string) (uint64, error) {
	var seq int64
	err := s.pool.QueryRow(ctx, "SELECT seq FROM projector_positions WHERE stream = $1", stream).Scan(&seq)
	if isNoRows(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("position of %s: %w", stream, err)
	}
	return uint64(seq), nil
}
