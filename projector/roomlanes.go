package projector

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"strand/eventlog"
	"strand/projector/store"
)

// The ROOMS lanes a process holds are applied together: one reader over
// all of them (a consumer filtered on their subjects) and one transaction
// per batch that advances each lane's position. Lanes exist to spread
// ROOMS over processes; within one process, committing each lane on its
// own would only turn one transaction into up to seventeen smaller ones
// (and seventeen readers), which is what every write waits for.
//
// Leases stay per lane (runLane): taking or giving up a lane changes the
// set, and the reader starts again with the new set from the lowest of
// its lanes' positions, skipping in each lane what that lane has applied.

// roomLanes is the set of ROOMS lanes this process holds.
type roomLanes struct {
	mu      sync.Mutex
	held    map[string]bool
	changed chan struct{} // closed when held changes
	run     chan struct{} // closed when the reader that last started stops
}

// errLanesChanged ends a reader whose set of lanes is out of date.
var errLanesChanged = errors.New("the held ROOMS lanes changed")

func (r *roomLanes) setLocked(lane string, held bool) {
	if r.held == nil {
		r.held = map[string]bool{}
	}
	r.held[lane] = held
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// join adds lane to what the reader applies.
func (r *roomLanes) join(lane string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setLocked(lane, true)
}

// leave removes lane, then waits until no reader of this process applies
// it any more (or ctx ends), so that the lane's lease is given up only
// after this process stopped applying it.
func (r *roomLanes) leave(ctx context.Context, lane string) {
	r.mu.Lock()
	r.setLocked(lane, false)
	run := r.run
	r.mu.Unlock()
	if run == nil {
		return
	}
	select {
	case <-run:
	case <-ctx.Done():
	}
}

// start begins a reader's run: the lanes it applies (in lane order), a
// channel closed when they change, and the channel the reader closes when
// the run ends.
func (r *roomLanes) start() (lanes []string, changed <-chan struct{}, done chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range eventlog.RoomLanes {
		if r.held[l] {
			lanes = append(lanes, l)
		}
	}
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	r.run = make(chan struct{})
	return lanes, r.changed, r.run
}

// runRoomLanes applies the ROOMS lanes this process holds until ctx ends
// or applying fails.
func (p *Projector) runRoomLanes(ctx context.Context) error {
	for {
		lanes, changed, done := p.rooms.start()
		if len(lanes) == 0 {
			close(done)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changed:
				continue
			}
		}
		rctx, cancel := context.WithCancelCause(ctx)
		go func() {
			select {
			case <-changed:
				cancel(errLanesChanged)
			case <-rctx.Done():
			}
		}()
		err := p.readRoomLanes(rctx, lanes)
		changedUnder := errors.Is(context.Cause(rctx), errLanesChanged)
		cancel(nil)
		close(done)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case changedUnder:
		case errors.Is(err, store.ErrPositionBehind):
			if p.Logger != nil {
				p.Logger.Warn("stored position went back under the projector; reading again from it", eventlog.LogStream, eventlog.StreamRooms, eventlog.LogErr, err)
			}
		case err != nil:
			return err
		}
	}
}

// laneOfRecord names the ROOMS lane of a record read from ROOMS.
func laneOfRecord(m eventlog.Msg) string { return eventlog.RoomLanes[eventlog.SubjectLane(m.Subject)] }

// readRoomLanes reads ROOMS for lanes, from the lowest of their positions,
// and applies each batch in one transaction, announcing every lane that
// moved.
func (p *Projector) readRoomLanes(ctx context.Context, lanes []string) error {
	expect, err := p.Store.AppliedPositions(ctx, lanes)
	if err != nil {
		return err
	}
	from := expect[lanes[0]]
	subjects := make([]string, len(lanes))
	for i, l := range lanes {
		from = min(from, expect[l])
		subjects[i] = eventlog.LaneFilter(eventlog.LaneIndex(l))
	}
	if p.Logger != nil {
		p.Logger.Info("projecting ROOMS lanes", "lanes", lanes, eventlog.LogSeq, from+1)
	}
	opts := eventlog.ReadOptions{From: from + 1, MaxBatch: p.MaxBatch, Subjects: subjects}
	return p.Log.Read(ctx, eventlog.StreamRooms, opts, func(ctx context.Context, batch []eventlog.Msg) error {
		// The read delivers the lanes' records in stream order, so after
		// a batch every lane is complete through its last record.
		through := batch[len(batch)-1].Seq
		pos, setAside, err := p.projectLanes(ctx, expect, through, batch, laneOfRecord)
		if err != nil {
			return err
		}
		p.roomsApplied.Add(uint64(len(batch)))
		last := map[string]eventlog.Msg{}
		for _, m := range batch {
			last[laneOfRecord(m)] = m
		}
		for _, l := range lanes {
			p.announce(l, max(pos[l], through), setAside[l], last[l])
		}
		expect = pos
		return nil
	})
}

// announce tells every process a lane's new position (and the records it
// set aside), and updates the lane's metrics from last, the lane's newest
// record in the batch (if it had one).
func (p *Projector) announce(lane string, pos uint64, setAside []uint64, last eventlog.Msg) {
	if err := p.Log.PublishApplied(lane, pos, setAside...); err != nil && p.Logger != nil {
		p.Logger.Warn("announce applied position", eventlog.LogStream, lane, eventlog.LogSeq, pos, eventlog.LogErr, err)
	}
	if p.applied != nil && last.Seq != 0 {
		p.applied.WithLabelValues(lane).Set(float64(pos))
		p.lagEvents.WithLabelValues(lane).Set(float64(last.Pending))
		p.lagSeconds.WithLabelValues(lane).Set(time.Since(last.Time).Seconds())
	}
}

// projectLanes applies batch, records of the lanes in expect (laneOf names
// each record's lane), in one transaction (recording every lane in expect
// complete through through, if not 0: store.ProjectLanes). If that fails because of what a
// record holds (store.IsUnappliable), it applies the batch again one
// record at a time, so that every record before the culprit is applied,
// and sets the culprit aside (invariant 11); the next batch goes on after
// it. Replay takes the same path, so it sets aside the same records. A
// transient failure is returned: the reader ends and starts again from the
// committed positions.
func (p *Projector) projectLanes(ctx context.Context, expect map[string]uint64, through uint64, batch []eventlog.Msg, laneOf func(eventlog.Msg) string) (pos map[string]uint64, setAside map[string][]uint64, err error) {
	release, err := p.slot(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer release()
	pos, err = p.Store.ProjectLanes(ctx, expect, through, batch, laneOf, apply)
	if err == nil || !store.IsUnappliable(err) {
		return pos, nil, err
	}
	pos = maps.Clone(expect)
	for i, m := range batch {
		l := laneOf(m)
		applied, err := p.Store.Project(ctx, l, pos[l], batch[i:i+1], apply)
		if err != nil && store.IsUnappliable(err) {
			if applied, err = p.setAside(ctx, l, pos[l], m, err); err == nil && applied == m.Seq {
				if setAside == nil {
					setAside = map[string][]uint64{}
				}
				setAside[l] = append(setAside[l], applied)
			}
		}
		if err != nil {
			return nil, nil, err
		}
		pos[l] = applied
	}
	return pos, setAside, nil
}
