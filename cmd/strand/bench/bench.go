// Package bench is Strand's load generator (BENCHMARKS.md). It speaks only the
// public Matrix client-server API over HTTP, so it can be pointed at any
// homeserver, and every scenario checks correctness while it measures:
// status codes, every event received exactly once, order where the
// protocol defines one. A scenario with any correctness failure reports
// it, and the run is not OK.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Params are a scale's sizes for every scenario.
type Params struct {
	// send: Msgs messages from Users users into Rooms rooms, InFlight at once.
	SendMsgs, SendUsers, SendRooms, SendInFlight int
	// delivery: Receivers long-poll one room while Msgs messages are sent
	// Interval apart.
	DeliveryReceivers, DeliveryMsgs int
	DeliveryInterval                time.Duration
	// fanout: one message to a room of Members members, all long-polling;
	// Rounds such messages, one after the other.
	FanoutMembers, FanoutRounds int
	// population: Members join a new room concurrently and sync as clients
	// do; Rounds messages, half a second apart.
	PopMembers, PopRounds int
	// initialsync: a user in Rooms rooms with Msgs messages each, initial
	// sync with timeline limit Limit, Repeats times.
	InitRooms, InitMsgs, InitLimit, InitRepeats int
	// idlesync: Requests of since=<latest>&timeout=0 InFlight at once, by a
	// user in Rooms rooms.
	IdleRooms, IdleRequests, IdleInFlight int
	// history: back-paginate Events events with Limit per page, Repeats times.
	HistEvents, HistLimit, HistRepeats int
	// register, login: Count of each, InFlight at once.
	RegCount, RegInFlight     int
	LoginCount, LoginInFlight int
	// heldpolls: Polls concurrent idle long-polls spread over Users users.
	HeldPolls, HeldUsers int
	// holds: Users users in one room, each holding one long-poll.
	HoldUsers int
	// push: a room of Members members, each with a pusher; Msgs
	// messages from one of them, InFlight at once.
	PushMembers, PushMsgs, PushInFlight int
	// bigroom: a room of Members members (joined through the API); New
	// members join it one after the other, each then syncing once with
	// lazy-loaded members and reading /members; Listeners of the members
	// long-poll for Rounds messages; Sends messages (SendInFlight at once)
	// into it and into a 2-member room, alternately, Repeats times each.
	BigMembers, BigNew, BigListeners, BigRounds, BigSends, BigRepeats int
	// fill: a log of FillOps writes by FillUsers users in FillRooms rooms
	// (plus a quarter as many users who only join and leave), SendInFlight
	// at once, for the replay scenario to rebuild.
	FillUsers, FillRooms, FillOps int
	// SetupInFlight bounds the concurrency of set-up work (registrations,
	// joins, filler messages).
	SetupInFlight int
}

// Scales are the named sizes: tiny for the test suite, small for a quick
// look, medium for the numbers of BENCHMARKS.md's targets.
var Scales = map[string]Params{
	"tiny": {
		SendMsgs: 24, SendUsers: 3, SendRooms: 2, SendInFlight: 4,
		DeliveryReceivers: 3, DeliveryMsgs: 6, DeliveryInterval: 20 * time.Millisecond,
		FanoutMembers: 4, FanoutRounds: 2,
		PopMembers: 4, PopRounds: 2,
		InitRooms: 3, InitMsgs: 12, InitLimit: 10, InitRepeats: 2,
		IdleRooms: 2, IdleRequests: 40, IdleInFlight: 4,
		HistEvents: 30, HistLimit: 10, HistRepeats: 1,
		RegCount: 4, RegInFlight: 2,
		LoginCount: 4, LoginInFlight: 2,
		HeldPolls: 20, HeldUsers: 2, HoldUsers: 10,
		PushMembers: 4, PushMsgs: 5, PushInFlight: 2,
		BigMembers: 12, BigNew: 2, BigListeners: 4, BigRounds: 2, BigSends: 20, BigRepeats: 1,
		FillUsers: 6, FillRooms: 4, FillOps: 300,
		SetupInFlight: 4,
	},
	"small": {
		SendMsgs: 1000, SendUsers: 10, SendRooms: 5, SendInFlight: 16,
		DeliveryReceivers: 5, DeliveryMsgs: 50, DeliveryInterval: 20 * time.Millisecond,
		FanoutMembers: 20, FanoutRounds: 3,
		PopMembers: 20, PopRounds: 3,
		InitRooms: 20, InitMsgs: 20, InitLimit: 10, InitRepeats: 10,
		IdleRooms: 10, IdleRequests: 2000, IdleInFlight: 8,
		HistEvents: 300, HistLimit: 100, HistRepeats: 3,
		RegCount: 40, RegInFlight: 8,
		LoginCount: 40, LoginInFlight: 8,
		HeldPolls: 500, HeldUsers: 20, HoldUsers: 500,
		PushMembers: 100, PushMsgs: 50, PushInFlight: 8,
		BigMembers: 1000, BigNew: 3, BigListeners: 100, BigRounds: 3, BigSends: 500, BigRepeats: 2,
		FillUsers: 100, FillRooms: 200, FillOps: 50000,
		SetupInFlight: 8,
	},
	"medium": {
		SendMsgs: 10000, SendUsers: 50, SendRooms: 20, SendInFlight: 32,
		DeliveryReceivers: 20, DeliveryMsgs: 200, DeliveryInterval: 20 * time.Millisecond,
		FanoutMembers: 100, FanoutRounds: 5,
		PopMembers: 100, PopRounds: 3,
		InitRooms: 100, InitMsgs: 50, InitLimit: 10, InitRepeats: 20,
		IdleRooms: 20, IdleRequests: 20000, IdleInFlight: 8,
		HistEvents: 1000, HistLimit: 100, HistRepeats: 5,
		RegCount: 200, RegInFlight: 8,
		LoginCount: 200, LoginInFlight: 8,
		HeldPolls: 5000, HeldUsers: 100, HoldUsers: 5000,
		PushMembers: 1000, PushMsgs: 100, PushInFlight: 8,
		BigMembers: 10000, BigNew: 5, BigListeners: 1000, BigRounds: 3, BigSends: 2000, BigRepeats: 2,
		FillUsers: 400, FillRooms: 2000, FillOps: 1000000,
		SetupInFlight: 16,
	},
}

// Options configure a run.
type Options struct {
	// HS is the homeserver's base URL.
	HS string
	// Scale names an entry of Scales.
	Scale string
	// Scenarios to run, in order; empty or "all" means every scenario.
	Scenarios []string
	// PIDs of the server processes whose CPU and memory to report.
	PIDs []int
	// Progress receives one line per scenario step (nil: discarded).
	Progress io.Writer
	// PushListen is the address the push scenario's gateway listens on
	// (default 127.0.0.1:0); the server's pusher role must be allowed to
	// reach it (--outbound-allow).
	PushListen string
}

// Names are the scenarios, in the order "all" runs them (then those that
// run only when named).
func Names() []string {
	out := make([]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.name
	}
	return out
}

// Run runs the chosen scenarios one after the other and returns the
// report. An error means the run could not start (bad options); failures
// of scenarios are in the report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	p, ok := Scales[opts.Scale]
	if !ok {
		return nil, fmt.Errorf("unknown scale %q (tiny, small or medium)", opts.Scale)
	}
	hs := strings.TrimRight(opts.HS, "/")
	if !strings.HasPrefix(hs, "http://") && !strings.HasPrefix(hs, "https://") {
		return nil, fmt.Errorf("--hs must be an http:// or https:// URL, not %q", opts.HS)
	}
	var chosen []scenario
	if len(opts.Scenarios) == 0 || (len(opts.Scenarios) == 1 && opts.Scenarios[0] == "all") {
		for _, sc := range scenarios {
			if !sc.whenNamed {
				chosen = append(chosen, sc)
			}
		}
	} else {
		for _, name := range opts.Scenarios {
			i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
			if i < 0 {
				return nil, fmt.Errorf("unknown scenario %q (one of %s, or all)", name, strings.Join(Names(), ", "))
			}
			chosen = append(chosen, scenarios[i])
		}
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	maxConns := max(p.HeldPolls, p.SendInFlight, p.FanoutMembers, p.DeliveryReceivers, p.BigListeners) + 64
	tr := newTransport(maxConns)
	defer tr.CloseIdleConnections()
	if opts.PushListen == "" {
		opts.PushListen = "127.0.0.1:0"
	}
	rep := &Report{HS: hs, Scale: opts.Scale, Date: time.Now().UTC().Truncate(time.Second), PIDs: opts.PIDs}
	run := randomID(4)
	for _, sc := range chosen {
		r := &runner{
			hs: hs, p: p, pids: opts.PIDs, http: &http.Client{Transport: tr},
			run:      run + sc.short,
			progress: progress, name: sc.name, pushListen: opts.PushListen,
			res: &Result{Scenario: sc.name, Params: sc.params(p)},
		}
		r.logf("start [%s]", r.res.Params)
		start := time.Now()
		sc.run(ctx, r)
		if r.watch != nil {
			r.endMeasure()
		}
		r.res.Seconds = time.Since(start).Seconds()
		r.chk.into(r.res)
		if ctx.Err() != nil && r.res.FailureCount == 0 {
			r.res.Failures = append(r.res.Failures, "interrupted: "+ctx.Err().Error())
			r.res.FailureCount++
		}
		r.logf("done in %.1f s, %d failures", r.res.Seconds, r.res.FailureCount)
		rep.Scenarios = append(rep.Scenarios, r.res)
		if ctx.Err() != nil {
			break
		}
	}
	rep.AllOK = rep.OK()
	return rep, nil
}

// scenario is one named measurement.
type scenario struct {
	name   string
	short  string // goes into user names and tags, so runs never collide
	params func(Params) string
	run    func(context.Context, *runner)
	// whenNamed scenarios need more than a homeserver (push: a pusher
	// role allowed to reach the bench's gateway) or take minutes to set up
	// (bigroom), so "all" leaves them out.
	whenNamed bool
}

// runner is one scenario's run: its clients' HTTP, its checker, its result.
type runner struct {
	hs       string
	p        Params
	pids     []int
	http     *http.Client
	run      string // unique per run and scenario: user-name prefix and event tag
	progress io.Writer
	name     string
	res      *Result
	chk      checker
	watch    *procWatch
	users    atomic.Int64
	// pushListen is where the push scenario's gateway listens.
	pushListen string
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.progress, "%s  %-11s %s\n", time.Now().Format("15:04:05.000"), r.name, fmt.Sprintf(format, args...))
}

// beginMeasure starts the measured phase: server CPU and memory from here.
func (r *runner) beginMeasure() {
	if len(r.pids) > 0 && r.watch == nil {
		r.watch = startProcWatch(r.pids)
	}
}

// endMeasure ends the measured phase.
func (r *runner) endMeasure() {
	if r.watch != nil {
		r.res.Processes = r.watch.finish()
		r.watch = nil
	}
}

func (r *runner) client() *Client { return &Client{HS: r.hs, HTTP: r.http} }

// newUsers registers n users, SetupInFlight at a time. It fails the
// scenario and returns nil if any registration fails.
func (r *runner) newUsers(ctx context.Context, n int) []*Client {
	users := make([]*Client, n)
	var failed atomic.Bool
	parallel(ctx, n, r.p.SetupInFlight, func(ctx context.Context, i int) {
		c := r.client()
		if _, err := c.Register(ctx, r.localpart(), r.password()); err != nil {
			if failed.CompareAndSwap(false, true) {
				r.chk.fail("set-up: register: %v", err)
			}
			return
		}
		users[i] = c
	})
	if failed.Load() || ctx.Err() != nil {
		return nil
	}
	return users
}

// localpart is a fresh user name: random run prefix, scenario, counter.
func (r *runner) localpart() string {
	return fmt.Sprintf("bench_%s_%d", r.run, r.users.Add(1))
}

func (r *runner) password() string { return "bench-pw-" + r.run }

// room creates a room by owner and joins members to it (SetupInFlight at
// a time); it fails the scenario and returns "" on any error.
func (r *runner) room(ctx context.Context, owner *Client, members []*Client) string {
	roomID, err := owner.CreateRoom(ctx, true)
	if err != nil {
		r.chk.fail("set-up: %v", err)
		return ""
	}
	var failed atomic.Bool
	parallel(ctx, len(members), r.p.SetupInFlight, func(ctx context.Context, i int) {
		if members[i] == owner {
			return
		}
		if err := members[i].Join(ctx, roomID); err != nil && failed.CompareAndSwap(false, true) {
			r.chk.fail("set-up: %v", err)
		}
	})
	if failed.Load() || ctx.Err() != nil {
		return ""
	}
	return roomID
}

// parallel runs fn(0..n-1) with at most inFlight calls at once.
func parallel(ctx context.Context, n, inFlight int, fn func(ctx context.Context, i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(max(inFlight, 1), n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				fn(ctx, i)
			}
		}()
	}
	wg.Wait()
}

// settle waits after n requests were written for the server to have
// taken them up: a fixed pause proportional to n, then, when the server's
// PIDs are known, until its CPU use drops to idle.
func (r *runner) settle(ctx context.Context, n int) {
	sleep(ctx, max(200*time.Millisecond, time.Duration(n)*200*time.Microsecond))
	if len(r.pids) == 0 {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	prev, err := cpuSumTicks(r.pids)
	for err == nil && time.Now().Before(deadline) && ctx.Err() == nil {
		sleep(ctx, 250*time.Millisecond)
		cur, err2 := cpuSumTicks(r.pids)
		if err2 != nil {
			return
		}
		// Under 10% of one core over the window: idle.
		if cur-prev <= 2 {
			return
		}
		prev = cur
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
