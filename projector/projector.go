// Package projector folds the log into Postgres. Each stream is read in
// order from the position stored in Postgres, and every batch of records
// is applied in one transaction together with the new position, so a
// record delivered twice changes nothing (invariant 4). After each commit
// the projector announces its position, which is what lets a write wait
// until it is readable (invariant 6).
package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"strand/eventlog"
	"strand/projector/store"
)

// Streams are the streams a projector folds, in no particular order.
var Streams = []string{eventlog.StreamAccounts, eventlog.StreamRooms, eventlog.StreamReceipts}

// Lanes are what projector processes share: ACCOUNTS and RECEIPTS whole,
// ROOMS by lane (eventlog.RoomLanes). Each has its own position.
var Lanes = append([]string{eventlog.StreamAccounts, eventlog.StreamReceipts}, eventlog.RoomLanes...)

// LaneIdleCheck is how often a ROOMS lane with nothing to apply checks
// whether it can move its position up to the stream's head (AdvanceLane).
// Sync workers do not wait for it (they know each record's lane); it keeps
// the lowest lane position, which other readers fall back on, close to
// the head.
var LaneIdleCheck = 250 * time.Millisecond

// Projector applies the log to a Store.
type Projector struct {
	Log    *eventlog.Log
	Store  *store.Store
	Logger *slog.Logger
	// MaxBatch bounds the records applied in one transaction
	// (defaultMaxBatch when 0). A reader of several ROOMS lanes reads up
	// to applySlots times as many and splits them by lane.
	MaxBatch int

	applied, lagEvents, lagSeconds *prometheus.GaugeVec
	setAsideTotal                  *prometheus.CounterVec

	mu    sync.Mutex
	held  map[string]bool // lanes this process applies now
	rooms roomLanes       // the ROOMS lanes among them, applied together

	roomsApplied atomic.Uint64
	slots        chan struct{} // bounds the lanes' concurrent transactions (applySlots)
	slotsOnce    sync.Once
}

// applySlots bounds how many transactions a projector process runs at once
// over all its lanes: with a lane per room partition, unbounded lanes
// would each hold a database connection, and beyond a few the cores, not
// the lanes, are the limit.
const applySlots = 4

// defaultMaxBatch is MaxBatch when it is not set (eventlog.Log.Read's own
// default).
const defaultMaxBatch = 512

// slot waits for a transaction slot; release gives it back.
func (p *Projector) slot(ctx context.Context) (release func(), err error) {
	p.slotsOnce.Do(func() { p.slots = make(chan struct{}, applySlots) })
	select {
	case p.slots <- struct{}{}:
		return func() { <-p.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// RoomsApplied is how many ROOMS records this process has applied (or
// found applied) in its lanes.
func (p *Projector) RoomsApplied() uint64 { return p.roomsApplied.Load() }

// RegisterMetrics exposes each stream's applied position and lag.
func (p *Projector) RegisterMetrics(reg prometheus.Registerer) error {
	p.applied = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strand_projector_applied_seq", Help: "Last stream sequence applied to Postgres.",
	}, []string{"stream"})
	p.lagEvents = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strand_projector_lag_records", Help: "Records on the stream not yet applied, as of the last batch.",
	}, []string{"stream"})
	p.lagSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strand_projector_lag_seconds", Help: "Age of the newest applied record when it was applied.",
	}, []string{"stream"})
	p.setAsideTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strand_projector_set_aside_total", Help: "Records this process set aside because the projection cannot apply them (listed by strand projection set-aside).",
	}, []string{"stream"})
	for _, c := range []prometheus.Collector{p.applied, p.lagEvents, p.lagSeconds, p.setAsideTotal} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Several projector processes share the streams: each stream is a lane,
// applied by whichever process holds the lane's lease (a PostgreSQL
// advisory lock on its own session). A process takes lanes up to its fair
// share of the live projectors and gives up lanes beyond it, so adding a
// projector spreads the lanes and a projector that stops or dies hands its
// lanes over within LaneRetry. Two holders of one lane cannot corrupt it
// anyway: the position row lock serialises their transactions and every
// record is applied once.

// memberSlots bounds how many projector processes count towards the fair
// share.
const memberSlots = 32

// LaneRetry is how often a projector looks for lanes to take or give up.
var LaneRetry = 500 * time.Millisecond

// Run projects its share of the streams until ctx ends or an error occurs.
// Errors end the role: a crash-only projector restarts from its committed
// positions.
func (p *Projector) Run(ctx context.Context) error {
	if err := p.Store.CheckComplete(ctx); err != nil {
		return err
	}
	leases, err := p.Store.LeaseSession(ctx)
	if err != nil {
		return err
	}
	defer leases.Close(ctx)
	if err := p.joinMembers(ctx, leases); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.runRoomLanes(ctx) })
	for _, s := range Lanes {
		g.Go(func() error { return p.runLane(ctx, leases, s) })
	}
	return g.Wait()
}

// joinMembers takes a free member slot, making this process count in the
// fair share. The slot is held until the lease session closes.
func (p *Projector) joinMembers(ctx context.Context, leases *store.LeaseSession) error {
	for {
		for i := range memberSlots {
			ok, err := leases.TryLease(ctx, fmt.Sprintf("projector-member-%d", i))
			if err != nil {
				return err
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(LaneRetry):
		}
	}
}

// fairShare is how many lanes this process should hold.
func (p *Projector) fairShare(ctx context.Context) (int, error) {
	names := make([]string, memberSlots)
	for i := range names {
		names[i] = fmt.Sprintf("projector-member-%d", i)
	}
	n, err := p.Store.HeldLeases(ctx, names)
	if err != nil {
		return 0, err
	}
	n = max(n, 1)
	return (len(Lanes) + n - 1) / n, nil
}

// Lanes returns the lanes this process currently applies.
func (p *Projector) Lanes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, s := range Lanes {
		if p.held[s] {
			out = append(out, s)
		}
	}
	return out
}

func (p *Projector) setHeld(stream string, held bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = map[string]bool{}
	}
	p.held[stream] = held
	n := 0
	for _, h := range p.held {
		if h {
			n++
		}
	}
	return n
}

// holdsAllRoomLanes reports whether this process applies every ROOMS lane.
func (p *Projector) holdsAllRoomLanes() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range eventlog.RoomLanes {
		if !p.held[l] {
			return false
		}
	}
	return true
}

// highestHeld reports whether stream is the last (in Lanes order) of the
// lanes this process holds: the one it gives up first.
func (p *Projector) highestHeld(stream string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(Lanes) - 1; i >= 0; i-- {
		if p.held[Lanes[i]] {
			return Lanes[i] == stream
		}
	}
	return false
}

// runLane takes and applies one lane whenever this process should, until
// ctx ends or applying fails.
func (p *Projector) runLane(ctx context.Context, leases *store.LeaseSession, stream string) error {
	name := "projector-lane-" + stream
	for {
		if err := sleepCtx(ctx, 0); err != nil {
			return err
		}
		fair, err := p.fairShare(ctx)
		if err != nil {
			return err
		}
		if len(p.Lanes()) >= fair {
			if err := sleepCtx(ctx, LaneRetry); err != nil {
				return err
			}
			continue
		}
		ok, err := leases.TryLease(ctx, name)
		if err != nil {
			return err
		}
		if !ok {
			if err := sleepCtx(ctx, LaneRetry); err != nil {
				return err
			}
			continue
		}
		p.setHeld(stream, true)
		if p.Logger != nil {
			p.Logger.Info("took lane", eventlog.LogStream, stream)
		}
		err = p.applyLane(ctx, stream)
		p.setHeld(stream, false)
		if rerr := leases.Release(ctx, name); rerr != nil && ctx.Err() == nil {
			return rerr
		}
		if err != nil && !errors.Is(err, errGiveUp) {
			return err
		}
		if p.Logger != nil && ctx.Err() == nil {
			p.Logger.Info("gave up lane", eventlog.LogStream, stream)
		}
	}
}

// errGiveUp ends applying a lane so that another process can take it.
var errGiveUp = errors.New("giving the lane to another projector")

// applyLane applies stream while this process holds more than its fair
// share of lanes only if this is not its last-taken lane.
func (p *Projector) applyLane(ctx context.Context, stream string) error {
	lctx, cancel := context.WithCancelCause(ctx)
	// The lane's helpers end with it (cancel runs before Wait).
	var helpers sync.WaitGroup
	defer helpers.Wait()
	defer cancel(nil)
	retry := LaneRetry
	helpers.Go(func() {
		for {
			if sleepCtx(lctx, retry) != nil {
				return
			}
			fair, err := p.fairShare(lctx)
			if err != nil {
				continue
			}
			if len(p.Lanes()) > fair && p.highestHeld(stream) {
				cancel(errGiveUp)
				return
			}
		}
	})
	var err error
	if eventlog.LaneIndex(stream) >= 0 {
		// The process's ROOMS reader applies the lane (runRoomLanes)
		// until it is given up.
		helpers.Go(func() { p.advanceIdle(lctx, stream) })
		p.rooms.join(stream)
		<-lctx.Done()
		p.rooms.leave(ctx, stream)
		err = lctx.Err()
	} else {
		err = p.runStream(lctx, stream, 0, true, nil)
	}
	if cause := context.Cause(lctx); errors.Is(cause, errGiveUp) {
		return errGiveUp
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d == 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runStream applies stream from the stored position on; with stopAt > 0
// it returns once stopAt is applied, applying nothing past it and calling
// progress after each batch. A live lane (announce) tells every process
// the position after each commit; a replay or rebuild does not, since its
// database may not be the one the servers read.
//
// If the stored position turns out to be behind what this reader applied
// (the projection was swapped for one that lacks those records), it starts
// again from the stored position rather than leave a gap.
func (p *Projector) runStream(ctx context.Context, stream string, stopAt uint64, announce bool, progress Progress) error {
	start := time.Now()
	for {
		err := p.readStream(ctx, stream, stopAt, announce, progress, start)
		if !errors.Is(err, store.ErrPositionBehind) {
			return err
		}
		if p.Logger != nil {
			p.Logger.Warn("stored position went back under the projector; reading again from it", eventlog.LogStream, stream, eventlog.LogErr, err)
		}
	}
}

func (p *Projector) readStream(ctx context.Context, stream string, stopAt uint64, announce bool, progress Progress, start time.Time) error {
	pos, err := p.Store.AppliedPosition(ctx, stream)
	if err != nil {
		return err
	}
	if stopAt != 0 && pos >= stopAt {
		return nil
	}
	opts := eventlog.ReadOptions{From: pos + 1, MaxBatch: p.MaxBatch, StopAt: stopAt}
	lane := eventlog.LaneIndex(stream)
	if lane >= 0 {
		opts.Subjects = []string{eventlog.LaneFilter(lane)}
		if stopAt != 0 {
			// A lane may have no record at or after stopAt (or none at
			// all) for the filtered read to stop at: read up to its last
			// record, then it is complete through stopAt.
			last, err := p.Log.LastSeq(ctx, eventlog.StreamRooms, opts.Subjects[0])
			if err != nil {
				return err
			}
			if last > pos {
				opts.StopAt = min(stopAt, last)
				if err := p.readBatches(ctx, stream, pos, opts, stopAt, announce, progress, start); err != nil {
					return err
				}
			}
			// Everything of the lane up to stopAt is applied now (what
			// was appended after last lies past the stopAt the caller
			// read before): nothing else to check.
			if _, _, err := p.Store.AdvanceLane(ctx, stream, 0, stopAt); err != nil {
				return err
			}
			if progress != nil {
				progress(stream, stopAt, stopAt, time.Since(start))
			}
			return nil
		}
	}
	if p.Logger != nil {
		p.Logger.Info("projecting from", eventlog.LogStream, stream, eventlog.LogSeq, pos+1)
	}
	return p.readBatches(ctx, stream, pos, opts, stopAt, announce, progress, start)
}

// readBatches applies what a read of stream (a stream or a ROOMS lane)
// delivers, from the stored position pos on.
func (p *Projector) readBatches(ctx context.Context, stream string, pos uint64, opts eventlog.ReadOptions, stopAt uint64, announce bool, progress Progress, start time.Time) error {
	expect := pos
	return p.Log.Read(ctx, eventlog.LaneStream(stream), opts,
		func(ctx context.Context, batch []eventlog.Msg) error {
			if stopAt != 0 {
				// A batch is whatever had arrived; a rebuild must stop at
				// exactly the live projection's position.
				n := len(batch)
				for n > 0 && batch[n-1].Seq > stopAt {
					n--
				}
				if batch = batch[:n]; n == 0 {
					return nil
				}
			}
			applied, setAside, err := p.project(ctx, stream, expect, batch)
			if err != nil {
				return err
			}
			expect = applied
			if eventlog.LaneIndex(stream) >= 0 {
				p.roomsApplied.Add(uint64(len(batch)))
			}
			if announce {
				p.announce(stream, applied, setAside, batch[len(batch)-1])
			}
			if progress != nil {
				progress(stream, applied, stopAt, time.Since(start))
			}
			return nil
		})
}

// advanceIdle keeps a ROOMS lane's position up with the stream while the
// lane has nothing to apply: it reads the stream's head H, then the lane's
// newest record L, and if the lane has applied L it is complete through H
// (a record of the lane at or below H was on the log before L was read).
// It runs while the lane is held, next to the lane's reader; the position
// row's lock orders the two.
func (p *Projector) advanceIdle(ctx context.Context, lane string) {
	filter := eventlog.LaneFilter(eventlog.LaneIndex(lane))
	var known uint64
	for sleepCtx(ctx, LaneIdleCheck) == nil {
		if p.holdsAllRoomLanes() {
			// Every ROOMS record is of a lane this process reads, and
			// its reader records every lane complete through each batch.
			known = 0 // announce once more if lanes are given up
			continue
		}
		head, err := p.Log.Head(ctx, eventlog.StreamRooms)
		if err != nil || head <= known {
			continue
		}
		last, err := p.Log.LastSeq(ctx, eventlog.StreamRooms, filter)
		if err != nil {
			continue
		}
		release, err := p.slot(ctx)
		if err != nil {
			return
		}
		pos, moved, err := p.Store.AdvanceLane(ctx, lane, last, head)
		release()
		if err != nil {
			if p.Logger != nil && ctx.Err() == nil {
				p.Logger.Warn("advance an idle lane", eventlog.LogStream, lane, eventlog.LogErr, err)
			}
			continue
		}
		// Announced when it moved, and once when the lane was taken (a
		// lane applied by another process, or by a replay, may be ahead of
		// what the readers heard).
		if moved || known == 0 {
			if err := p.Log.PublishApplied(lane, pos); err != nil && p.Logger != nil {
				p.Logger.Warn("announce applied position", eventlog.LogStream, lane, eventlog.LogSeq, pos, eventlog.LogErr, err)
			}
		}
		known = pos
	}
}

// project applies batch, records of one stream or lane, as projectLanes
// does.
func (p *Projector) project(ctx context.Context, stream string, expect uint64, batch []eventlog.Msg) (applied uint64, setAside []uint64, err error) {
	pos, aside, err := p.projectLanes(ctx, map[string]uint64{stream: expect}, 0, batch, func(eventlog.Msg) string { return stream })
	if err != nil {
		return 0, nil, err
	}
	return pos[stream], aside[stream], nil
}

// setAside keeps m out of the projection, where an operator can see it
// (strand projection set-aside), and moves the lane past it.
func (p *Projector) setAside(ctx context.Context, stream string, expect uint64, m eventlog.Msg, cause error) (uint64, error) {
	applied, err := p.Store.SetAside(ctx, stream, expect, m, cause)
	if err != nil {
		return 0, err
	}
	p.logSetAside(stream, m, cause)
	return applied, nil
}

// logSetAside reports a record set aside.
func (p *Projector) logSetAside(stream string, m eventlog.Msg, cause error) {
	if p.Logger != nil {
		p.Logger.Error("record set aside: the projection cannot apply it", eventlog.LogStream, stream, eventlog.LogSeq, m.Seq,
			"subject", m.Subject, eventlog.LogRecord, m.Type, eventlog.LogErr, cause)
	}
	if p.setAsideTotal != nil {
		p.setAsideTotal.WithLabelValues(eventlog.LaneStream(stream)).Inc()
	}
}

// errNoProjection is apply's answer to a record type it has no case for.
// TestEveryRecordTypeIsProjected holds apply to eventlog's record table.
var errNoProjection = errors.New("no projection for record type")

// apply translates one record into projection writes. An error that the
// record causes, rather than the database, is marked store.Unappliable.
func apply(ctx context.Context, tx *store.Tx, m eventlog.Msg) error {
	rec, err := m.Decode()
	if err != nil {
		return store.Unappliable(err)
	}
	switch r := rec.(type) {
	case *eventlog.UserRegistered:
		return tx.AddUser(r)
	case *eventlog.DeviceCreated:
		return tx.PutDevice(r)
	case *eventlog.TokenRefreshed:
		return tx.RefreshToken(r)
	case *eventlog.TokenUsed:
		return tx.UseToken(r)
	case *eventlog.DeviceUpdated:
		tx.RenameDevice(r)
	case *eventlog.PusherSet:
		tx.SetPusher(m.Seq, m.Time.UnixMilli(), r)
	case *eventlog.DevicesDeleted:
		tx.DeleteDevices(m.Seq, r)
	case *eventlog.PasswordChanged:
		tx.SetPassword(m.Seq, r)
	case *eventlog.UserDeactivated:
		tx.Deactivate(m.Seq, r)
	case *eventlog.FilterCreated:
		tx.AddFilter(r)
	case *eventlog.ContentReported:
		tx.AddReport(m.Seq, m.Time.UnixMilli(), r)
	case *eventlog.AccountDataSet:
		tx.SetAccountData(m.Seq, r)
	case *eventlog.ProfileSet:
		tx.SetProfile(r)
	case *eventlog.KeysUploaded:
		tx.UploadKeys(m.Seq, r)
	case *eventlog.KeysClaimed:
		tx.ClaimKeys(r)
	case *eventlog.ToDeviceSent:
		tx.SendToDevice(m.Seq, r)
	case *eventlog.ToDeviceAcked:
		tx.AckToDevice(r)
	case *eventlog.CrossSigningKeysSet:
		tx.SetCrossSigningKeys(m.Seq, r)
	case *eventlog.SignaturesAdded:
		return tx.AddSignatures(m.Seq, r)
	case *eventlog.KeyBackupVersionSet:
		tx.SetKeyBackupVersion(m.Seq, r)
	case *eventlog.KeyBackupVersionDeleted:
		tx.DeleteKeyBackupVersion(r)
	case *eventlog.RoomKeysPut:
		return tx.PutRoomKeys(m.Seq, r)
	case *eventlog.RoomKeysDeleted:
		tx.DeleteRoomKeys(m.Seq, r)
	case *eventlog.RoomForgotten:
		tx.ForgetRoom(r.UserID, r.RoomID)
		tx.AdvanceRoom(r.RoomID, m.Seq, "", 0, 0)
	case *eventlog.RoomEvents:
		return applyRoomEvents(ctx, tx, m, r)
	case *eventlog.RoomPublished:
		tx.SetPublished(r.RoomID, r.Published)
		tx.AdvanceRoom(r.RoomID, m.Seq, "", 0, 0)
	case *eventlog.AliasSet:
		tx.SetAlias(r.Alias, r.RoomID, r.Creator)
	case *eventlog.AliasDeleted:
		tx.DeleteAlias(r.Alias)
	case *eventlog.ReceiptSet:
		tx.SetReceipt(m.Seq, r)
	default:
		// A type this version does not know: written by hand, or by a
		// newer Strand. Replay with the version that knows it applies it.
		return store.Unappliable(fmt.Errorf("%w %s", errNoProjection, m.Type))
	}
	return nil
}

// Progress reports replay progress: the stream position applied so far,
// the position replay runs to, and the time since it started.
type Progress func(stream string, applied, head uint64, elapsed time.Duration)

// Replay applies every stream from the database's stored position (0 for
// an empty database) up to the stream's head as it was when Replay started,
// then returns. Records appended meanwhile are left to a running projector.
//
// Into an empty database it builds the projection fresh (ReplayFresh);
// otherwise it continues from the stored positions, batch by batch.
func (p *Projector) Replay(ctx context.Context, progress Progress) error {
	if err := p.Store.CheckComplete(ctx); err != nil {
		return err
	}
	to := map[string]uint64{}
	for _, s := range Streams {
		head, err := p.Log.Head(ctx, s)
		if err != nil {
			return err
		}
		to[s] = head
	}
	empty, err := p.Store.Empty(ctx)
	if err != nil {
		return err
	}
	if empty {
		return p.ReplayFresh(ctx, to, progress)
	}
	return p.ReplayTo(ctx, to, progress)
}

// replayLanes bounds how many lanes a replay applies at once.
const replayLanes = 4

// ReplayTo applies every lane from the stored position up to exactly
// to[lane] (a ROOMS lane absent from to goes to to[ROOMS]; lanes with no
// target are left alone), then returns. The streams go in the order live
// writes made visible: ACCOUNTS, then ROOMS, then RECEIPTS (a receipt's
// projection looks up its event's position); ROOMS lanes, which never read
// each other's rooms, are applied in parallel, a few at a time.
func (p *Projector) ReplayTo(ctx context.Context, to map[string]uint64, progress Progress) error {
	if progress != nil {
		// Lanes report from several goroutines; reporters need not be
		// safe for that.
		var mu sync.Mutex
		report := progress
		progress = func(stream string, applied, head uint64, elapsed time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			report(stream, applied, head, elapsed)
		}
	}
	phases := [][]string{{eventlog.StreamAccounts}, eventlog.RoomLanes, {eventlog.StreamReceipts}}
	for _, lanes := range phases {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(replayLanes)
		for _, s := range lanes {
			target, ok := to[s]
			if !ok && eventlog.LaneIndex(s) >= 0 {
				target = to[eventlog.StreamRooms]
			}
			if target == 0 {
				continue
			}
			g.Go(func() error {
				if err := p.runStream(gctx, s, target, false, progress); err != nil {
					return fmt.Errorf("replay %s: %w", s, err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}
