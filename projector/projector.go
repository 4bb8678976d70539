// Package projector folds the log into Postgres. Each stream is read in
// order from the position stored in Postgres, and every batch of records
// is applied in one transaction together with the new position, so a
// record delivered twice changes nothing (invariant 4). After each commit
// the projector announces its position, which is what lets a write wait
// until it is readable (invariant 6).
package projector

import (
	"context"
	"fmt"
	"log/slog"
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
	for _, c := range []prometheus.Collector{p.applied, p.lagEvents, p.lagSeconds} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Run projects every stream until ctx ends or an error occurs. Errors end
// the role: a crash-only projector restarts from its committed position.
func (p *Projector) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range Streams {
		g.Go(func() error { return p.runStream(ctx, s, 0, nil) })
	}
	return g.Wait()
}

// runStream applies stream from the stored position on; with stopAt > 0
// it returns once stopAt is applied, calling progress after each batch.
func (p *Projector) runStream(ctx context.Context, stream string, stopAt uint64, progress Progress) error {
	pos, err := p.Store.Position(ctx, stream)
	if err != nil {
		return err
	}
	if stopAt != 0 && pos >= stopAt {
		return nil
	}
	if p.Logger != nil {
		p.Logger.Info("projecting", "stream", stream, "from_seq", pos+1)
	}
	start := time.Now()
	return p.Log.Read(ctx, stream, eventlog.ReadOptions{From: pos + 1, MaxBatch: p.MaxBatch, StopAt: stopAt},
		func(ctx context.Context, batch []eventlog.Msg) error {
			applied, err := p.Store.Project(ctx, stream, batch, apply)
			if err != nil {
				return err
			}
			if err := p.Log.PublishApplied(stream, applied); err != nil && p.Logger != nil {
				p.Logger.Warn("announce applied position", "stream", stream, "stream_seq", applied, "err", err)
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

// apply translates one record into projection writes.
func apply(ctx context.Context, tx *store.Tx, m eventlog.Msg) error {
	rec, err := m.Decode()
	if err != nil {
		return err
	}
	switch r := rec.(type) {
	case *eventlog.UserRegistered:
		return tx.AddUser(r)
	case *eventlog.DeviceCreated:
		return tx.PutDevice(r)
	case *eventlog.DeviceUpdated:
		tx.RenameDevice(r)
	case *eventlog.DevicesDeleted:
		tx.DeleteDevices(r)
	case *eventlog.PasswordChanged:
		tx.SetPassword(r)
	case *eventlog.UserDeactivated:
		tx.Deactivate(r)
	case *eventlog.FilterCreated:
		tx.AddFilter(r)
	case *eventlog.AccountDataSet:
		tx.SetAccountData(m.Seq, r)
	case *eventlog.ProfileSet:
		tx.SetProfile(r)
	case *eventlog.RoomForgotten:
		tx.ForgetRoom(r.UserID, r.RoomID)
		tx.AdvanceRoom(r.RoomID, m.Seq, "", 0, 0)
	case *eventlog.RoomEvents:
		return applyRoomEvents(ctx, tx, m.Seq, r)
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
		return fmt.Errorf("no projection for record type %s", m.Type)
	}
	return nil
}

// Progress reports replay progress: the stream position applied so far,
// the position replay runs to, and the time since it started.
type Progress func(stream string, applied, head uint64, elapsed time.Duration)

// Replay applies every stream from the database's stored position (0 for
// an empty database) up to the stream's head as it was when Replay started,
// then returns. Records appended meanwhile are left to a running projector.
func (p *Projector) Replay(ctx context.Context, progress Progress) error {
	for _, s := range Streams {
		head, err := p.Log.Head(ctx, s)
		if err != nil {
			return err
		}
		if head == 0 {
			continue
		}
		if err := p.runStream(ctx, s, head, progress); err != nil {
			return fmt.Errorf("replay %s: %w", s, err)
		}
	}
	return nil
}
