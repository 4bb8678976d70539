package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

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
	search []searchRow
	// keepHeads keeps the heads in heads and order rather than writing
	// them (a fresh build with FreshHeads).
	keepHeads bool
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
	pos, err := s.project(ctx, map[string]uint64{stream: expect}, 0, msgs, func(eventlog.Msg) string { return stream }, apply)
	if err != nil {
		return 0, fmt.Errorf("project %s: %w", stream, err)
	}
	return pos[stream], nil
}

// ProjectLanes is Project for records of several lanes of one stream (the
// ROOMS lanes one process holds), read together in stream order: one
// transaction applies them all and advances every lane named in expect to
// its own last record, each lane checked and skipped as Project does for
// its stream. laneOf names a record's lane, which must be in expect. It
// returns every lane's position after the batch (a lane with no record in
// it keeps the position expected).
//
// through, when not 0, is how far the reader has read every lane in
// expect (the batch's last record, all of whose lanes' records up to it it
// has delivered): the same transaction records each of them complete
// through it (AdvanceLane), so that a process holding every lane keeps
// every lane up with the stream without checking idle lanes.
func (s *Store) ProjectLanes(ctx context.Context, expect map[string]uint64, through uint64, msgs []eventlog.Msg, laneOf func(eventlog.Msg) string, apply func(ctx context.Context, tx *Tx, m eventlog.Msg) error) (map[string]uint64, error) {
	pos, err := s.project(ctx, expect, through, msgs, laneOf, apply)
	if err != nil {
		return nil, fmt.Errorf("project lanes: %w", err)
	}
	return pos, nil
}

// project runs the transaction in two round trips, whatever the batch
// holds (reads made by apply, such as a redaction's target, add theirs):
// the first opens it and locks the position rows, the second carries every
// write, the new positions and the commit. This is on every write's path.
func (s *Store) project(ctx context.Context, expect map[string]uint64, through uint64, msgs []eventlog.Msg, laneOf func(eventlog.Msg) string, apply func(ctx context.Context, tx *Tx, m eventlog.Msg) error) (map[string]uint64, error) {
	// Only the lanes with records in the batch are locked and written: a
	// lane's position row exists once it has applied something, as a
	// replay of the log would leave it (and as ROOMS lanes of a process
	// that applies none of their records must leave them).
	var lanes []string
	for _, m := range msgs {
		l := laneOf(m)
		if _, ok := expect[l]; !ok {
			return nil, fmt.Errorf("record seq %d is of lane %s, not one of the batch's", m.Seq, l)
		}
		if !slices.Contains(lanes, l) {
			lanes = append(lanes, l)
		}
	}
	if len(msgs) == 0 {
		// Nothing to apply: only check the expectation.
		lanes = slices.Sorted(maps.Keys(expect))
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
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
	open.Queue("INSERT INTO projector_positions (stream, seq) SELECT unnest($1::text[]), 0 ON CONFLICT DO NOTHING", lanes)
	// FOR UPDATE serialises projectors of the same lane: the second one
	// waits here, then sees the first one's position and skips. The rows
	// are locked in name order, so two processes whose lanes overlap (one
	// handing lanes to the other) cannot deadlock.
	cur := make(map[string]uint64, len(lanes))
	open.Queue("SELECT stream, seq FROM projector_positions WHERE stream = ANY($1) ORDER BY stream FOR UPDATE", lanes).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var l string
			var seq int64
			if err := rows.Scan(&l, &seq); err != nil {
				return err
			}
			cur[l] = uint64(seq)
		}
		return rows.Err()
	})
	if err := c.SendBatch(ctx, open).Close(); err != nil {
		return nil, err
	}
	rollback := func(err error) (map[string]uint64, error) {
		_, _ = c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return nil, err
	}
	for _, l := range lanes {
		if cur[l] < expect[l] {
			return rollback(fmt.Errorf("%w: %s is stored at %d, the reader applied up to %d", ErrPositionBehind, l, cur[l], expect[l]))
		}
	}
	pos := maps.Clone(expect)
	maps.Copy(pos, cur)
	tx := &Tx{tx: c}
	for _, m := range msgs {
		l := laneOf(m)
		if m.Seq <= pos[l] {
			continue
		}
		if err := apply(ctx, tx, m); err != nil {
			return rollback(fmt.Errorf("apply %s seq %d (%s): %w", l, m.Seq, m.Type, err))
		}
		pos[l] = m.Seq
	}
	var moved []string
	var seqs []int64
	for _, l := range lanes {
		if pos[l] != cur[l] {
			moved = append(moved, l)
			seqs = append(seqs, int64(pos[l]))
		}
	}
	if len(moved) == 0 {
		if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
			return nil, err
		}
		return pos, nil
	}
	tx.pending(false)
	tx.batch.Queue(`UPDATE projector_positions p SET seq = x.seq
		FROM unnest($1::text[], $2::bigint[]) AS x(stream, seq) WHERE p.stream = x.stream`, moved, seqs)
	if through != 0 {
		all := slices.Sorted(maps.Keys(expect))
		tx.batch.Queue(`INSERT INTO projector_lane_complete (lane, seq) SELECT unnest($1::text[]), $2
			ON CONFLICT (lane) DO UPDATE SET seq = GREATEST(projector_lane_complete.seq, EXCLUDED.seq)`, all, int64(through))
	}
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
