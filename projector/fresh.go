package projector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"strand/eventlog"
	"strand/projector/store"
)

// A fresh build is a replay into a projection that holds nothing yet. It
// produces what applying the records one batch after the other produces
// (the same apply, the same records set aside), faster:
//
//   - the secondary indexes that applying never reads are dropped first and
//     built once at the end (store.DropDeferredIndexes);
//   - room events go in with COPY (store.ProjectFresh);
//   - ROOMS is read once and its records are dealt to FreshWorkers
//     workers by the partition of their subject, so each room's records
//     stay in order on one worker while the workers' transactions run at
//     once on their own connections. What one room's records do never
//     depends on another room's: a redaction or relation naming an event
//     of another room has no effect whether or not that event is there
//     yet, so the interleaving changes nothing;
//   - the other streams are applied meanwhile, each as usual.
//
// Because the ROOMS workers commit out of stream order, their transactions
// leave the stream's position alone; it is stored once, through Project,
// when every record up to the end is applied. A build that stops half way
// leaves a projection that says so (store.ErrInterruptedBuild) rather than
// one that could be continued wrongly.

// FreshWorkers is how many transactions apply ROOMS at once in a fresh
// build.
var FreshWorkers = 4

// freshQueue bounds the records dealt to one worker and not yet applied.
const freshQueue = 4096

// ReplayFresh builds an empty projection from the log up to exactly
// to[stream] for each stream (absent: left alone). The store must be empty
// (store.Empty); Replay chooses this path by itself when it is.
func (p *Projector) ReplayFresh(ctx context.Context, to map[string]uint64, progress Progress) error {
	if empty, err := p.Store.Empty(ctx); err != nil {
		return err
	} else if !empty {
		return errNotEmpty
	}
	deferred, err := p.Store.DropDeferredIndexes(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	var mu sync.Mutex
	report := func(stream string, applied, head uint64, elapsed time.Duration) {
		if progress != nil {
			mu.Lock()
			defer mu.Unlock()
			progress(stream, applied, head, elapsed)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	// ACCOUNTS writes and reads only account tables, ROOMS only room
	// tables, so the two go at once; RECEIPTS reads the events its
	// receipts name, so it follows ROOMS, as it does in Streams' order.
	g.Go(func() error { return p.freshStream(gctx, eventlog.StreamAccounts, to, report, start) })
	g.Go(func() error {
		if to[eventlog.StreamRooms] > 0 {
			if err := p.buildRooms(gctx, to[eventlog.StreamRooms], report, start); err != nil {
				return err
			}
		}
		return p.freshStream(gctx, eventlog.StreamReceipts, to, report, start)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	return p.Store.CreateDeferredIndexes(ctx, deferred)
}

// freshStream applies a stream other than ROOMS up to to[stream] as
// ReplayTo does, reporting progress only at the end: the one progress
// display is ROOMS'.
func (p *Projector) freshStream(ctx context.Context, stream string, to map[string]uint64, progress Progress, start time.Time) error {
	if to[stream] == 0 {
		return nil
	}
	if err := p.runStream(ctx, stream, to[stream], false, nil); err != nil {
		return fmt.Errorf("replay %s: %w", stream, err)
	}
	progress(stream, to[stream], to[stream], time.Since(start))
	return nil
}

// buildRooms applies ROOMS from its first record up to stopAt on
// FreshWorkers workers, then stores the position.
func (p *Projector) buildRooms(ctx context.Context, stopAt uint64, progress Progress, start time.Time) error {
	stream := eventlog.StreamRooms
	maxBatch := p.MaxBatch
	if maxBatch <= 0 {
		maxBatch = 2048
	}
	n := max(FreshWorkers, 1)
	queues := make([]chan eventlog.Msg, n)
	for i := range queues {
		queues[i] = make(chan eventlog.Msg, freshQueue)
	}
	var applied atomic.Uint64
	heads := &store.FreshHeads{}
	// The newest record dealt of each lane: a lane's position is its own
	// last record (applied or set aside), as a lane applied batch by batch
	// stores it. Written by the reader only, read after it ends.
	var laneLast [eventlog.RoomLaneCount]uint64
	g, gctx := errgroup.WithContext(ctx)
	for _, q := range queues {
		g.Go(func() error {
			return p.freshWorker(gctx, stream, q, maxBatch, heads, func(k int) {
				progress(stream, applied.Add(uint64(k)), stopAt, time.Since(start))
			})
		})
	}
	g.Go(func() error {
		defer func() {
			for _, q := range queues {
				close(q)
			}
		}()
		return p.Log.Read(gctx, stream, eventlog.ReadOptions{From: 1, MaxBatch: maxBatch, StopAt: stopAt},
			func(ctx context.Context, batch []eventlog.Msg) error {
				for _, m := range batch {
					if m.Seq > stopAt {
						return nil
					}
					laneLast[eventlog.SubjectLane(m.Subject)] = m.Seq
					select {
					case queues[eventlog.SubjectLane(m.Subject)%n] <- m:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return nil
			})
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("replay %s: %w", stream, err)
	}
	if err := p.Store.WriteFreshHeads(ctx, heads); err != nil {
		return fmt.Errorf("replay %s: %w", stream, err)
	}
	// Every record up to stopAt is applied or set aside: store each lane's
	// position (its last record), as a batch of nothing but the position
	// would, and that each lane is complete through stopAt.
	for i, last := range laneLast {
		lane := eventlog.LaneName(i)
		if last > 0 {
			if _, err := p.Store.Project(ctx, lane, 0, []eventlog.Msg{{Stream: stream, Seq: last}},
				func(context.Context, *store.Tx, eventlog.Msg) error { return nil }); err != nil {
				return fmt.Errorf("replay %s: %w", lane, err)
			}
		}
		if _, _, err := p.Store.AdvanceLane(ctx, lane, 0, stopAt); err != nil {
			return fmt.Errorf("replay %s: %w", lane, err)
		}
	}
	return nil
}

// freshWorker applies the records dealt to it, in batches of up to
// maxBatch, until its queue is closed.
func (p *Projector) freshWorker(ctx context.Context, stream string, in <-chan eventlog.Msg, maxBatch int, heads *store.FreshHeads, done func(int)) error {
	batch := make([]eventlog.Msg, 0, maxBatch)
	for {
		batch = batch[:0]
		closed := false
		for len(batch) < maxBatch && !closed {
			select {
			case m, ok := <-in:
				if !ok {
					closed = true
					break
				}
				batch = append(batch, m)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if len(batch) > 0 {
			if err := p.projectFresh(ctx, stream, batch, heads); err != nil {
				return err
			}
			done(len(batch))
		}
		if closed {
			return nil
		}
	}
}

// projectFresh is project for a fresh build: a batch that a record cannot
// be applied in is applied again one record at a time, and the culprit
// set aside, exactly as project does, so the same records are set aside.
func (p *Projector) projectFresh(ctx context.Context, stream string, batch []eventlog.Msg, heads *store.FreshHeads) error {
	err := p.Store.ProjectFresh(ctx, stream, batch, heads, apply)
	if err == nil || !store.IsUnappliable(err) {
		return err
	}
	for i := range batch {
		// One record at a time under its own lane's name, as a lane
		// applied batch by batch names it: the set-aside error text is
		// part of the projection.
		lane := stream
		if stream == eventlog.StreamRooms {
			lane = eventlog.LaneName(eventlog.SubjectLane(batch[i].Subject))
		}
		err := p.Store.ProjectFresh(ctx, lane, batch[i:i+1], heads, apply)
		if err != nil && store.IsUnappliable(err) {
			m, cause := batch[i], err
			if err = p.Store.SetAsideFresh(ctx, lane, m, cause); err == nil {
				p.logSetAside(lane, m, cause)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// errNotEmpty is ReplayFresh's refusal of a projection that holds rows.
var errNotEmpty = errors.New("a fresh build needs an empty projection")
