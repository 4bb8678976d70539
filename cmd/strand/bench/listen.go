package bench

import (
	"context"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
)

// pollTimeout is the long-poll timeout listeners ask for.
const pollTimeout = 90 * time.Second

// listener is one long-poll loop: a client, its sync position, and when
// each tagged message (by sequence number) reached it.
type listener struct {
	c       *Client
	since   string
	got     []time.Time // by seq; zero: not (yet) received
	ids     []string    // event IDs of the tagged messages, in arrival order
	limited int         // incremental responses with limited timelines
}

// listenerSet runs long-poll loops on one room and counts, per tagged
// message, how many listeners have it. Every message must reach every
// listener exactly once.
type listenerSet struct {
	r      *runner
	room   string
	filter string
	n      int // tagged messages have seq 0..n-1
	ls     []*listener
	held   atomic.Int64 // requests written and not yet answered
	counts []atomic.Int32
	all    []chan struct{} // closed when every listener has seq i
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

func newListenerSet(r *runner, room, filter string, n int, clients []*Client, sinces []string) *listenerSet {
	s := &listenerSet{r: r, room: room, filter: filter, n: n, counts: make([]atomic.Int32, n), all: make([]chan struct{}, n)}
	for i := range s.all {
		s.all[i] = make(chan struct{})
	}
	for i, c := range clients {
		s.ls = append(s.ls, &listener{c: c, since: sinces[i], got: make([]time.Time, n)})
	}
	return s
}

// start launches every listener's loop; stop ends them.
func (s *listenerSet) start(ctx context.Context) {
	s.startEach(ctx, nil)
}

// startEach launches a goroutine per listener that first runs setup (when
// not nil), which gives the listener's initial position, then its loop:
// each listener starts polling as soon as its own set-up is done, as
// independent clients do. A set-up error fails the run and ends that
// listener.
func (s *listenerSet) startEach(ctx context.Context, setup func(ctx context.Context, i int) (string, error)) {
	ctx, s.cancel = context.WithCancel(ctx)
	for i := range s.ls {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if setup != nil {
				since, err := setup(ctx, i)
				if err != nil {
					if ctx.Err() == nil {
						s.r.chk.fail("set-up of %s: %v", s.ls[i].c.UserID, err)
					}
					return
				}
				s.ls[i].since = since
			}
			s.loop(ctx, i)
		}()
	}
}

func (s *listenerSet) stop() {
	s.cancel()
	s.wg.Wait()
}

func (s *listenerSet) loop(ctx context.Context, li int) {
	l := s.ls[li]
	for ctx.Err() == nil {
		var wrote atomic.Bool
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) {
				if wrote.CompareAndSwap(false, true) {
					s.held.Add(1)
				}
			},
		})
		resp, _, err := l.c.Sync(tctx, l.since, pollTimeout, s.filter)
		if wrote.Load() {
			s.held.Add(-1)
		}
		now := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				s.r.chk.fail("long-poll of %s: %v", l.c.UserID, err)
			}
			return
		}
		l.since = resp.NextBatch
		jr, ok := resp.Rooms.Join[s.room]
		if !ok {
			continue
		}
		if jr.Timeline.Limited {
			l.limited++
		}
		for _, ev := range jr.Timeline.Events {
			tag, ok := ev.tagOf(s.r.run)
			if !ok {
				continue
			}
			if tag.Seq < 0 || tag.Seq >= s.n {
				s.r.chk.fail("%s received a message with unexpected seq %d (%s)", l.c.UserID, tag.Seq, ev.EventID)
				continue
			}
			if !l.got[tag.Seq].IsZero() {
				s.r.chk.fail("%s received message %d twice (%s)", l.c.UserID, tag.Seq, ev.EventID)
				continue
			}
			l.got[tag.Seq] = now
			l.ids = append(l.ids, ev.EventID)
			if int(s.counts[tag.Seq].Add(1)) == len(s.ls) {
				close(s.all[tag.Seq])
			}
		}
	}
}

// waitHeld waits until every listener has a request written and not
// answered, or timeout.
func (s *listenerSet) waitHeld(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for int(s.held.Load()) < len(s.ls) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		sleep(ctx, 5*time.Millisecond)
	}
	return true
}

// waitAll waits until every listener has message seq, or the deadline.
func (s *listenerSet) waitAll(ctx context.Context, seq int, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-s.all[seq]:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// initialSinces gives each client's position after an initial sync with
// filter, SetupInFlight at a time; nil on failure.
func (r *runner) initialSinces(ctx context.Context, clients []*Client, filter string) []string {
	sinces := make([]string, len(clients))
	var failed atomic.Bool
	parallel(ctx, len(clients), r.p.SetupInFlight, func(ctx context.Context, i int) {
		resp, _, err := clients[i].Sync(ctx, "", 0, filter)
		if err != nil {
			if failed.CompareAndSwap(false, true) {
				r.chk.fail("set-up: initial sync: %v", err)
			}
			return
		}
		sinces[i] = resp.NextBatch
	})
	if failed.Load() || ctx.Err() != nil {
		return nil
	}
	return sinces
}
