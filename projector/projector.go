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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"strand/eventlog"
	"strand/projector/store"
)

// Streams are the streams a projector folds, in no particular order.
var Streams = []string{eventlog.StreamAccounts, eventlog.StreamRooms, eventlog.StreamReceipts}

// Projector applies the log to a Store.
type Projector struct {
	Log    *eventlog.Log
	Store  *store.Store
	Logger *slog.Logger
	// MaxBatch bounds the records applied in one transaction.
	MaxBatch int

	applied, lagEvents, lagSeconds *prometheus.GaugeVec
	setAsideTotal                  *prometheus.CounterVec

	mu   sync.Mutex
	held map[string]bool // lanes this process applies now
}

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
	member, err := p.joinMembers(ctx)
	if err != nil {
		return err
	}
	defer member.Release(ctx)
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range Streams {
		g.Go(func() error { return p.runLane(ctx, s) })
	}
	return g.Wait()
}

// joinMembers takes a free member slot, making this process count in the
// fair share.
func (p *Projector) joinMembers(ctx context.Context) (*store.Lease, error) {
	for {
		for i := range memberSlots {
			l, ok, err := p.Store.TryLease(ctx, fmt.Sprintf("projector-member-%d", i))
			if err != nil {
				return nil, err
			}
			if ok {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
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
	return (len(Streams) + n - 1) / n, nil
}

// Lanes returns the streams this process currently applies.
func (p *Projector) Lanes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, s := range Streams {
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

// highestHeld reports whether stream is the last (in Streams order) of the
// lanes this process holds: the one it gives up first.
func (p *Projector) highestHeld(stream string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(Streams) - 1; i >= 0; i-- {
		if p.held[Streams[i]] {
			return Streams[i] == stream
		}
	}
	return false
}

// runLane takes and applies one lane whenever this process should, until
// ctx ends or applying fails.
func (p *Projector) runLane(ctx context.Context, stream string) error {
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
		lease, ok, err := p.Store.TryLease(ctx, name)
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
		lease.Release(ctx)
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
	defer cancel(nil)
	go func() {
		for {
			if sleepCtx(lctx, LaneRetry) != nil {
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
	}()
	err := p.runStream(lctx, stream, 0, true, nil)
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
	pos, err := p.Store.Position(ctx, stream)
	if err != nil {
		return err
	}
	if stopAt != 0 && pos >= stopAt {
		return nil
	}
	if p.Logger != nil {
		p.Logger.Info("projecting from", eventlog.LogStream, stream, eventlog.LogSeq, pos+1)
	}
	expect := pos
	return p.Log.Read(ctx, stream, eventlog.ReadOptions{From: pos + 1, MaxBatch: p.MaxBatch, StopAt: stopAt},
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
			if announce {
				if err := p.Log.PublishApplied(stream, applied, setAside...); err != nil && p.Logger != nil {
					p.Logger.Warn("announce applied position", eventlog.LogStream, stream, eventlog.LogSeq, applied, eventlog.LogErr, err)
				}
			}
			if progress != nil {
				progress(stream, applied, stopAt, time.Since(start))
			}
			if p.applied != nil {
				last := batch[len(batch)-1]
				p.applied.WithLabelValues(stream).Set(float64(applied))
				p.lagEvents.WithLabelValues(stream).Set(float64(last.Pending))
				p.lagSeconds.WithLabelValues(stream).Set(time.Since(last.Time).Seconds())
			}
			return nil
		})
}

// project applies batch in one transaction. If that fails because of what
// a record holds (store.IsUnappliable), it applies the batch again one
// record at a time, so that every record before the culprit is applied,
// and sets the culprit aside (invariant 11); the next batch goes on after
// it. Replay takes the same path, so it sets aside the same records. A
// transient failure is returned: the lane ends and starts again from its
// committed position.
func (p *Projector) project(ctx context.Context, stream string, expect uint64, batch []eventlog.Msg) (applied uint64, setAside []uint64, err error) {
	applied, err = p.Store.Project(ctx, stream, expect, batch, apply)
	if err == nil || !store.IsUnappliable(err) {
		return applied, nil, err
	}
	for i := range batch {
		applied, err = p.Store.Project(ctx, stream, expect, batch[i:i+1], apply)
		if err != nil && store.IsUnappliable(err) {
			if applied, err = p.setAside(ctx, stream, expect, batch[i], err); err == nil && applied == batch[i].Seq {
				setAside = append(setAside, applied)
			}
		}
		if err != nil {
			return 0, nil, err
		}
		expect = applied
	}
	return expect, setAside, nil
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
		p.setAsideTotal.WithLabelValues(stream).Inc()
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

// ReplayTo applies every stream from the stored position up to exactly
// to[stream] (streams absent from to are left alone), then returns.
func (p *Projector) ReplayTo(ctx context.Context, to map[string]uint64, progress Progress) error {
	for _, s := range Streams {
		if to[s] == 0 {
			continue
		}
		if err := p.runStream(ctx, s, to[s], false, progress); err != nil {
			return fmt.Errorf("replay %s: %w", s, err)
		}
	}
	return nil
}
