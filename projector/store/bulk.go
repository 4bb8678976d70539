package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"strand/eventlog"
)

// Building a projection from nothing (projector.Projector.Replay into an
// empty database, and the first replay of "strand replay --swap"): the
// room events are loaded with COPY, the secondary indexes that no write
// reads are built once after the load instead of row by row, and the
// partitions of ROOMS are applied by several transactions at once.

// copier is what a bulk transaction COPYs room events through.
type copier interface {
	CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error)
}

// eventColumns are the events columns a bulk transaction COPYs, in the
// order of copyEvents' rows.
var eventColumns = []string{"pos", "event_id", "room_id", "type", "state_key", "sender", "origin_server_ts", "client", "pdu",
	"txn_device", "txn_id", "mentions"}

// copyEvents COPYs the room events queued in a bulk transaction. It runs
// after the statements queued with them, as the live path's insert does
// (pending queues it last), so that a statement reading events (a
// relation's parent) sees the same rows in both. A read within the
// transaction (a redaction's target) sends the events before it as the
// live path does, with the insert: a COPY costs more round trips than it
// saves on a handful of rows.
func (t *Tx) copyEvents(ctx context.Context) error {
	if t.copier == nil || len(t.events) == 0 {
		return nil
	}
	rows := make([][]any, len(t.events))
	for i, e := range t.events {
		var txnDev, txnID, mentions any
		if e.TxnID != "" {
			txnDev, txnID = e.TxnDevice, e.TxnID
		}
		if len(e.Mentions) > 0 {
			mentions = e.Mentions
		}
		rows[i] = []any{e.Pos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.OriginServerTS, e.Client, e.PDU, txnDev, txnID, mentions}
	}
	t.events = t.events[:0]
	_, err := t.copier.CopyFrom(ctx, pgx.Identifier{"events"}, eventColumns, pgx.CopyFromRows(rows))
	return err
}

// ProjectFresh applies msgs, records of stream in order, in one
// transaction, as Project does, for a projection being built from nothing:
// room events go in with COPY, and the stream's position is neither read
// nor moved, because several of these transactions run at once on records
// of different rooms. The builder stores the position through Project once
// every record up to it is applied. A failure caused by a record is
// returned as Project's is (IsUnappliable), with nothing of msgs applied.
//
// heads, when not nil, keeps the rooms' heads (their newest record and
// event) instead of writing them with every batch: only the last value of
// each counts, and WriteFreshHeads writes them once the build is done.
func (s *Store) ProjectFresh(ctx context.Context, stream string, msgs []eventlog.Msg, heads *FreshHeads, apply func(ctx context.Context, tx *Tx, m eventlog.Msg) error) error {
	if err := s.projectFresh(ctx, stream, msgs, heads, apply); err != nil {
		return fmt.Errorf("project %s: %w", stream, err)
	}
	return nil
}

func (s *Store) projectFresh(ctx context.Context, stream string, msgs []eventlog.Msg, heads *FreshHeads, apply func(ctx context.Context, tx *Tx, m eventlog.Msg) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// As in project: a connection released inside a transaction is closed.
	defer conn.Release()
	c := conn.Conn()
	open := &pgx.Batch{}
	open.Queue("BEGIN")
	open.Queue("SET LOCAL synchronous_commit TO OFF")
	if err := c.SendBatch(ctx, open).Close(); err != nil {
		return err
	}
	rollback := func(err error) error {
		_, _ = c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	}
	// With heads, the batch's heads are kept back from every pending
	// write, and handed to heads only once the batch has committed.
	tx := &Tx{tx: c, copier: c, keepHeads: heads != nil}
	for _, m := range msgs {
		if err := apply(ctx, tx, m); err != nil {
			// The same text as project's: it is what set_aside keeps.
			return rollback(fmt.Errorf("apply %s seq %d (%s): %w", stream, m.Seq, m.Type, err))
		}
	}
	tx.pending(true)
	if tx.batch.Len() > 0 {
		if err := c.SendBatch(ctx, &tx.batch).Close(); err != nil {
			return rollback(err)
		}
	}
	if err := tx.copyEvents(ctx); err != nil {
		return rollback(err)
	}
	if _, err := c.Exec(ctx, "COMMIT"); err != nil {
		return rollback(err)
	}
	if c.PgConn().TxStatus() != 'I' {
		return rollback(errors.New("transaction did not commit"))
	}
	if heads != nil {
		heads.merge(tx.heads, tx.order)
	}
	return nil
}

// FreshHeads are the rooms' heads of a fresh build, kept by ProjectFresh
// and written at the end by WriteFreshHeads: a fresh build reads no head
// while it applies records, and writing each room's head with every batch
// cost as much as inserting the events.
type FreshHeads struct {
	mu    sync.Mutex
	heads map[string]roomHead
}

// merge takes a committed batch's heads: the record sequence always, the
// event only where the batch moved it (AdvanceRoom's rule).
func (f *FreshHeads) merge(heads map[string]roomHead, order []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.heads == nil {
		f.heads = map[string]roomHead{}
	}
	for _, roomID := range order {
		h, prev := heads[roomID], f.heads[roomID]
		prev.seq = max(prev.seq, h.seq)
		if h.eventID != "" {
			prev.eventID, prev.pos, prev.depth = h.eventID, h.pos, h.depth
		}
		f.heads[roomID] = prev
	}
}

// freshHeadsChunk bounds the rooms one statement of WriteFreshHeads
// updates.
const freshHeadsChunk = 10000

// WriteFreshHeads writes the heads a fresh build kept. A record set aside
// during the build (SetAsideFresh) may have moved a room's sequence
// further; the higher one stays.
func (s *Store) WriteFreshHeads(ctx context.Context, f *FreshHeads) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rooms := slices.Sorted(maps.Keys(f.heads))
	for len(rooms) > 0 {
		chunk := rooms[:min(len(rooms), freshHeadsChunk)]
		rooms = rooms[len(chunk):]
		if _, err := s.pool.Exec(ctx, roomHeadsSQL, roomHeadsArgs(chunk, f.heads)...); err != nil {
			return fmt.Errorf("write room heads: %w", err)
		}
	}
	return nil
}

// SetAsideFresh is SetAside for a projection being built by ProjectFresh:
// the record is set aside (and its room's last sequence moved) without
// reading or moving the stream's position.
func (s *Store) SetAsideFresh(ctx context.Context, stream string, m eventlog.Msg, cause error) error {
	if _, err := s.setAside(ctx, stream, 0, m, cause, false); err != nil {
		return fmt.Errorf("set aside %s seq %d: %w", stream, m.Seq, err)
	}
	return nil
}

// deferredIndexes are the secondary indexes a fresh build creates after
// its bulk load. None is read while records are applied, and none can
// refuse a row (they are not unique, and their keys are bounded IDs and
// positions), so building them later changes no outcome. The indexes that
// applying reads (event IDs, current state) or that can refuse a record
// (events_txn) stay.
var deferredIndexes = []string{"events_room_pos", "events_mentions", "room_state_user", "room_state_member_moves",
	"event_relations_by_parent", "event_relations_threads", "event_search_vec", "event_search_room_pos"}

// ErrInterruptedBuild means a fresh build of this projection stopped
// before it finished: rows are there without the stream's position, and
// some indexes are missing. Only a new build, into an empty database or
// schema, can make it whole.
var ErrInterruptedBuild = errors.New("this projection is an interrupted fresh build (indexes missing, positions not stored): drop it and replay into an empty database")

// DeferredIndexes are index definitions dropped for a bulk load.
type DeferredIndexes struct{ defs []string }

// DropDeferredIndexes drops the secondary indexes a bulk load need not
// maintain, returning their definitions for CreateDeferredIndexes.
func (s *Store) DropDeferredIndexes(ctx context.Context) (*DeferredIndexes, error) {
	rows, err := s.pool.Query(ctx, `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ANY($1)
		ORDER BY indexname`, deferredIndexes)
	if err != nil {
		return nil, fmt.Errorf("deferred indexes: %w", err)
	}
	type def struct{ Name, Def string }
	defs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[def])
	if err != nil {
		return nil, fmt.Errorf("deferred indexes: %w", err)
	}
	if len(defs) != len(deferredIndexes) {
		return nil, ErrInterruptedBuild
	}
	d := &DeferredIndexes{}
	names := make([]string, len(defs))
	for i, x := range defs {
		d.defs = append(d.defs, x.Def)
		names[i] = pgx.Identifier{x.Name}.Sanitize()
	}
	if _, err := s.pool.Exec(ctx, "DROP INDEX "+strings.Join(names, ", ")); err != nil {
		return nil, fmt.Errorf("drop deferred indexes: %w", err)
	}
	return d, nil
}

// CreateDeferredIndexes builds the indexes DropDeferredIndexes dropped,
// a few at once, and refreshes the planner's statistics of the loaded
// tables.
func (s *Store) CreateDeferredIndexes(ctx context.Context, d *DeferredIndexes) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	for _, def := range d.defs {
		g.Go(func() error {
			b := &pgx.Batch{}
			b.Queue("BEGIN")
			// A sort in memory instead of on disk; a build is one session.
			b.Queue("SET LOCAL maintenance_work_mem TO '256MB'")
			b.Queue(def)
			b.Queue("COMMIT")
			if err := s.pool.SendBatch(gctx, b).Close(); err != nil {
				return fmt.Errorf("%s: %w", def, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("create deferred indexes: %w", err)
	}
	if _, err := s.pool.Exec(ctx, "ANALYZE events, room_state, rooms, event_search, event_relations"); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	return nil
}

// CheckComplete returns ErrInterruptedBuild for a projection whose fresh
// build stopped half way, which neither a projector nor a replay may
// continue: its ROOMS rows have no position, so they would be applied
// twice.
func (s *Store) CheckComplete(ctx context.Context) error {
	var n int
	err := s.pool.QueryRow(ctx, "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ANY($1)",
		deferredIndexes).Scan(&n)
	if err != nil {
		return fmt.Errorf("check projection: %w", err)
	}
	if n != len(deferredIndexes) {
		return ErrInterruptedBuild
	}
	return nil
}

// Empty reports whether nothing has been projected into this database.
func (s *Store) Empty(ctx context.Context) (bool, error) {
	var any bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM projector_positions WHERE seq > 0) OR EXISTS (SELECT 1 FROM events)
		OR EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM rooms) OR EXISTS (SELECT 1 FROM set_aside)`).Scan(&any)
	if err != nil {
		return false, fmt.Errorf("check projection: %w", err)
	}
	return !any, nil
}
