package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"strand/eventlog"
	"strand/projector/store"
)

// Rebuild replays the log into a fresh schema of the live database while
// the servers keep serving from the live schema, then swaps the two.
type Rebuild struct {
	Log *eventlog.Log
	// Live is a store on the live schema, Fresh one opened with
	// store.OpenFresh on the schema to rebuild into, in the same database.
	Live, Fresh *store.Store
	// Progress reports the first, long replay.
	Progress Progress
	// Logger reports the catch-up rounds and the swap; nil is quiet.
	Logger *slog.Logger
	// MaxPause bounds how long the swap holds back the live projectors
	// (writes wait that long at most) and readers (a fraction of it).
	MaxPause time.Duration
	// OldSchema is the name the replaced live schema gets.
	OldSchema string
}

// Rebuild tuning: how close a catch-up round must come before the swap is
// tried, how many rounds it gets to come that close, and how many swaps
// are tried when one does not fit in MaxPause.
const (
	closeEnough    = 256
	maxCatchUps    = 20
	maxSwapAttempt = 10
)

// Run rebuilds and swaps. It returns the positions at which the rebuilt
// projection took over.
func (r *Rebuild) Run(ctx context.Context) (map[string]uint64, error) {
	live, err := r.Live.Schema(ctx)
	if err != nil {
		return nil, err
	}
	// A rebuild never goes past the live projection: the swap happens when
	// both are at the same positions, so that everything the servers cached
	// or told clients about the live projection stays true of the new one.
	p := &Projector{Log: r.Log, Store: r.Fresh, MaxBatch: 2048}
	// The fresh build takes ACCOUNTS to the live position and ROOMS to the
	// live G (every lane is complete through it; the live rows are the
	// lanes', there is no ROOMS row). RECEIPTS is left to the catch-up,
	// which applies it after every lane has reached its live position: a
	// receipt's projection reads its event's position, and a receipt
	// applied before its event stays without it.
	accounts, err := r.Live.Position(ctx, eventlog.StreamAccounts)
	if err != nil {
		return nil, err
	}
	rooms, err := r.Live.Position(ctx, eventlog.StreamRooms)
	if err != nil {
		return nil, err
	}
	to := map[string]uint64{eventlog.StreamAccounts: accounts, eventlog.StreamRooms: rooms}
	if err := p.ReplayFresh(ctx, to, r.Progress); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		if err := r.catchUp(ctx, p); err != nil {
			return nil, err
		}
		pos, err := r.Fresh.SwapInto(ctx, live, r.OldSchema, r.MaxPause, func(ctx context.Context, to map[string]uint64) error {
			return p.ReplayTo(ctx, to, nil)
		})
		if err == nil {
			r.info("swapped in the rebuilt projection", "schema", live, "replaced_schema", r.OldSchema, "positions", fmt.Sprint(pos))
			return pos, nil
		}
		if !errors.Is(err, store.ErrPauseExceeded) || attempt == maxSwapAttempt {
			return nil, err
		}
		r.info("swap did not fit in the pause; catching up and trying again", "attempt", attempt, "err", err)
	}
}

// catchUp follows the live projection until the rebuild is within
// closeEnough records of it, or stops gaining on it.
func (r *Rebuild) catchUp(ctx context.Context, p *Projector) error {
	prev := uint64(0)
	for round := 0; round < maxCatchUps; round++ {
		to, err := r.Live.Positions(ctx)
		if err != nil {
			return err
		}
		at, err := r.Fresh.Positions(ctx)
		if err != nil {
			return err
		}
		var gap uint64
		for s, seq := range to {
			if seq > at[s] {
				gap += seq - at[s]
			}
		}
		if gap <= closeEnough || (round > 0 && gap >= prev) {
			return nil
		}
		r.info("catching up with the live projection", "records_behind", gap)
		if err := p.ReplayTo(ctx, to, nil); err != nil {
			return err
		}
		prev = gap
	}
	return nil
}

func (r *Rebuild) info(msg string, args ...any) {
	if r.Logger != nil {
		r.Logger.Info(msg, args...)
	}
}
