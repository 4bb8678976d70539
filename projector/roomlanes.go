package projector

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

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
// Leases stay per lane (runLane). Taking a lane starts the reader again
// with the new set, from the lowest of its lanes' positions (skipping in
// each lane what that lane has applied); giving one up only drops the
// lane's records from the next batch on, so a process handing lanes to
// others while it catches up does not throw away its read.

// roomLanes is the set of ROOMS lanes this process holds.
type roomLanes struct {
	mu    sync.Mutex
	held  map[string]bool
	added chan struct{} // closed when a lane is added
	idle  chan struct{} // while the reader applies a batch: closed when it is done
}

// errLanesAdded ends a reader that lacks a lane this process now holds.
var errLanesAdded = errors.New("a ROOMS lane was taken")

// errNoLanes ends a reader left with no lane to apply.
var errNoLanes = errors.New("no ROOMS lane held")

// join adds lane to what the reader applies.
func (r *roomLanes) join(lane string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = map[string]bool{}
	}
	r.held[lane] = true
	if r.added != nil {
		close(r.added)
		r.added = nil
	}
}

// leave removes lane, then waits until the batch under way, which may
// hold the lane's records, is done (or ctx ends), so that the lane's lease
// is given up only once this process no longer applies it.
func (r *roomLanes) leave(ctx context.Context, lane string) {
	r.mu.Lock()
	delete(r.held, lane)
	idle := r.idle
	r.mu.Unlock()
	if idle == nil {
		return // no batch under way
	}
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// start returns the lanes a reader starting now applies (in lane order)
// and a channel closed when a lane is added.
func (r *roomLanes) start() (lanes []string, added <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range eventlog.RoomLanes {
		if r.held[l] {
			lanes = append(lanes, l)
		}
	}
	if r.added == nil {
		r.added = make(chan struct{})
	}
	return lanes, r.added
}

// beginBatch marks a batch under way and returns which of lanes are still
// held: the batch applies only their records. endBatch marks it done.
func (r *roomLanes) beginBatch(lanes []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.idle = make(chan struct{})
	var now []string
	for _, l := range lanes {
		if r.held[l] {
			now = append(now, l)
		}
	}
	return now
}

func (r *roomLanes) endBatch() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.idle)
	r.idle = nil
}

// runRoomLanes applies the ROOMS lanes this process holds until ctx ends
// or applying fails.
func (p *Projector) runRoomLanes(ctx context.Context) error {
	for {
		lanes, added := p.rooms.start()
		if len(lanes) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-added:
				continue
			}
		}
		rctx, cancel := context.WithCancelCause(ctx)
		go func() {
			select {
			case <-added:
				cancel(errLanesAdded)
			case <-rctx.Done():
			}
		}()
		err := p.readRoomLanes(rctx, ctx, lanes)
		restart := errors.Is(context.Cause(rctx), errLanesAdded) || errors.Is(err, errNoLanes)
		cancel(nil)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case restart:
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
// until ctx ends, and applies each batch, announcing every lane. A batch
// is applied under applyCtx: when the lanes change (ctx ends, not
// applyCtx) the batch under way is finished rather than thrown away, which
// while catching up is thousands of records.
func (p *Projector) readRoomLanes(ctx, applyCtx context.Context, lanes []string) error {
	stored, err := p.Store.Positions(ctx)
	if err != nil {
		return err
	}
	expect := make(map[string]uint64, len(lanes))
	for _, l := range lanes {
		expect[l] = stored[l] // 0 for a lane that has applied nothing
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
	// A batch read while behind is split over up to applySlots
	// transactions (applyRoomBatch): read enough for each to get about
	// MaxBatch.
	batch := p.MaxBatch
	if batch <= 0 {
		batch = defaultMaxBatch
	}
	opts := eventlog.ReadOptions{From: from + 1, MaxBatch: batch * min(applySlots, len(lanes)), Subjects: subjects}
	var completed time.Time // when every lane was last recorded complete
	return p.Log.Read(ctx, eventlog.StreamRooms, opts, func(_ context.Context, batch []eventlog.Msg) error {
		ctx := applyCtx
		now := p.rooms.beginBatch(lanes)
		defer p.rooms.endBatch()
		if len(now) == 0 {
			return errNoLanes
		}
		// The read delivers the lanes' records in stream order, so after
		// a batch every lane is complete through its last record. That is
		// recorded and announced for every lane when the reader has caught
		// up (nothing pending after the batch: it may now idle) and at
		// most every completeEvery in between; otherwise only the lanes
		// with records move, sparing a row per lane and an announcement
		// per lane on every write's path.
		end := batch[len(batch)-1]
		var through uint64
		if end.Pending == 0 || time.Since(completed) >= completeEvery {
			through, completed = end.Seq, time.Now()
		}
		exp := expect
		if len(now) < len(lanes) {
			// Lanes given up since the read began: leave them to the
			// processes that took them.
			exp = make(map[string]uint64, len(now))
			for _, l := range now {
				exp[l] = expect[l]
			}
			batch = slices.DeleteFunc(slices.Clone(batch), func(m eventlog.Msg) bool {
				_, ok := exp[laneOfRecord(m)]
				return !ok
			})
		}
		pos, setAside := exp, map[string][]uint64(nil)
		if len(batch) > 0 {
			var err error
			if pos, setAside, err = p.applyRoomBatch(ctx, exp, through, batch); err != nil {
				return err
			}
		}
		p.roomsApplied.Add(uint64(len(batch)))
		last := map[string]eventlog.Msg{}
		for _, m := range batch {
			last[laneOfRecord(m)] = m
		}
		for _, l := range now {
			if at := max(pos[l], through); at > expect[l] || len(setAside[l]) > 0 {
				p.announce(l, at, setAside[l], last[l])
			}
		}
		maps.Copy(expect, pos)
		return nil
	})
}

// completeEvery bounds how long, under steady writes, a held lane without
// records waits to be recorded complete through what its reader has read
// (readRoomLanes): the lag of ROOMS as a whole for readers that do not
// follow the stream themselves.
const completeEvery = 25 * time.Millisecond

// splitBatch is the size from which a batch of several lanes is applied
// as several transactions at once. A reader that is behind (catching up,
// or a burst) gets full batches: one transaction at a time would leave
// PostgreSQL one backend's worth of work while the others wait, where
// lanes, which never read each other's rooms, can commit side by side. A
// reader that keeps up gets small batches, best applied in one.
const splitBatch = 128

// applyRoomBatch applies a batch of the lanes in expect: in one
// transaction, or, from splitBatch records on, split by lane into up to
// applySlots transactions run at once, each advancing its own lanes (and
// recording them complete through through).
func (p *Projector) applyRoomBatch(ctx context.Context, expect map[string]uint64, through uint64, batch []eventlog.Msg) (map[string]uint64, map[string][]uint64, error) {
	if len(batch) < splitBatch || len(expect) == 1 {
		return p.projectLanes(ctx, expect, through, batch, laneOfRecord)
	}
	var parts [applySlots][]eventlog.Msg
	var expects [applySlots]map[string]uint64
	for _, m := range batch {
		i := eventlog.SubjectLane(m.Subject) % applySlots
		parts[i] = append(parts[i], m)
	}
	for l, seq := range expect {
		i := eventlog.LaneIndex(l) % applySlots
		if expects[i] == nil {
			expects[i] = map[string]uint64{}
		}
		expects[i][l] = seq
	}
	// The lanes of a part without records go with the first part that
	// has some, so that they too are recorded complete through through.
	first := -1
	for i := range applySlots {
		if len(parts[i]) > 0 && first < 0 {
			first = i
		}
	}
	for i := range applySlots {
		if len(parts[i]) == 0 && i != first {
			if expects[first] == nil {
				expects[first] = map[string]uint64{}
			}
			maps.Copy(expects[first], expects[i])
		}
	}
	var results [applySlots]struct {
		pos      map[string]uint64
		setAside map[string][]uint64
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := range applySlots {
		if len(parts[i]) == 0 {
			continue
		}
		g.Go(func() error {
			var err error
			results[i].pos, results[i].setAside, err = p.projectLanes(gctx, expects[i], through, parts[i], laneOfRecord)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	pos := maps.Clone(expect)
	setAside := map[string][]uint64{}
	for _, r := range results {
		maps.Copy(pos, r.pos)
		for l, seqs := range r.setAside {
			setAside[l] = seqs
		}
	}
	return pos, setAside, nil
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
