package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// The bigroom scenario (issue 17, section 4): a public room of BigMembers
// members, each registered and joined through the API. Then, in the
// room as it stands:
//
//   - BigNew new members join one after the other: the join's time, then
//     their first /sync with lazy-loaded members (time and size: what a
//     client such as Element does first in a big room), then GET /members;
//   - BigListeners members long-poll (with lazy loading, as clients do)
//     while BigRounds messages are sent: first and last delivery;
//   - BigSends messages into the big room and into a room of two, each
//     from two senders with SendInFlight in flight, alternately
//     BigRepeats times: the send rates and their ratio.
//
// Set-up is registrations and joins; their rate and the joins' latency
// early and late (a join whose cost grows with the room shows here) are
// reported too.

// lazyFilter is a client's initial filter in a big room: a short timeline
// and only the members it needs (Element's, in essence).
const lazyFilter = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":20,"lazy_load_members":true}}}`

func runBigRoom(ctx context.Context, r *runner) {
	p := r.p
	t0 := time.Now()
	users := r.newUsers(ctx, p.BigMembers)
	if users == nil {
		return
	}
	r.res.add("set-up registrations/s", float64(len(users))/time.Since(t0).Seconds(), "reg/s")
	r.logf("%d users registered; joining them to one room", len(users))
	room := r.bigRoomJoins(ctx, users)
	if room == "" {
		return
	}
	r.logf("set-up done: a room of %d members", len(users))
	r.beginMeasure()
	if !r.bigRoomNewcomers(ctx, room, len(users)) {
		return
	}
	listeners := users[1:min(len(users), 1+p.BigListeners)]
	if !r.bigRoomFanout(ctx, room, users[0], listeners) {
		return
	}
	r.bigRoomSendRate(ctx, room, users[0], users[1])
}

// bigRoomJoins creates the room and joins every user but its creator,
// SetupInFlight at once; "" (a failure recorded) if any join failed.
func (r *runner) bigRoomJoins(ctx context.Context, users []*Client) string {
	room, err := users[0].CreateRoom(ctx, true)
	if err != nil {
		r.chk.fail("set-up: %v", err)
		return ""
	}
	n := len(users) - 1
	lat := make([]time.Duration, n)
	var failed atomic.Bool
	var done atomic.Int64
	start := time.Now()
	parallel(ctx, n, r.p.SetupInFlight, func(ctx context.Context, i int) {
		t0 := time.Now()
		err := users[i+1].Join(ctx, room)
		// A 503 says "stored, not visible yet" or "database busy": retry,
		// as a client would (set-up is not what is measured).
		for try := 0; try < 3 && isUnavailable(err); try++ {
			sleep(ctx, time.Second)
			err = users[i+1].Join(ctx, room)
		}
		lat[i] = time.Since(t0)
		if err != nil {
			if failed.CompareAndSwap(false, true) {
				r.chk.fail("set-up: join %d: %v", i, err)
			}
			return
		}
		if k := done.Add(1); k%1000 == 0 {
			r.logf("%d joined (%.0f joins/s so far)", k, float64(k)/time.Since(start).Seconds())
		}
	})
	if failed.Load() || ctx.Err() != nil {
		return ""
	}
	if n > 0 {
		r.res.add("set-up joins/s", float64(n)/time.Since(start).Seconds(), "join/s")
		// Joins are taken in order, so the first and last tenth show
		// whether a join's cost grows with the room.
		tenth := max(1, n/10)
		r.res.add("set-up join p50, first tenth", ms(percentile(append([]time.Duration(nil), lat[:tenth]...), 50)), "ms")
		r.res.add("set-up join p50, last tenth", ms(percentile(append([]time.Duration(nil), lat[n-tenth:]...), 50)), "ms")
	}
	return room
}

// memberChunk is a GET /members response, as far as the check needs.
type memberChunk struct {
	Chunk []struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
		Content  struct {
			Membership string `json:"membership"`
		} `json:"content"`
	} `json:"chunk"`
}

// Members reads a room's member events; it returns the response size.
func (c *Client) Members(ctx context.Context, roomID string) (*memberChunk, int, error) {
	var m memberChunk
	n, err := c.do(ctx, http.MethodGet, prefix+"/rooms/"+url.PathEscape(roomID)+"/members", nil, &m)
	return &m, n, err
}

// bigRoomNewcomers: BigNew users (registered before the clock starts)
// join the room one after the other; each then makes a lazy-loading
// initial sync and reads /members. members is the room's size before.
func (r *runner) bigRoomNewcomers(ctx context.Context, room string, members int) bool {
	p := r.p
	var joins, syncs, lists []time.Duration
	var syncSizes, listSizes []time.Duration // bytes, as Durations to share percentile
	for k := range p.BigNew {
		cs := r.newUsers(ctx, 1)
		if cs == nil {
			return false
		}
		c := cs[0]
		t0 := time.Now()
		if err := c.Join(ctx, room); err != nil {
			r.chk.fail("new member %d: %v", k, err)
			return false
		}
		joins = append(joins, time.Since(t0))
		t0 = time.Now()
		resp, n, err := c.Sync(ctx, "", 0, lazyFilter)
		if err != nil {
			r.chk.fail("new member %d: first sync: %v", k, err)
			return false
		}
		syncs, syncSizes = append(syncs, time.Since(t0)), append(syncSizes, time.Duration(n))
		checkLazySync(r, resp, room, c.UserID, members+k+1)
		t0 = time.Now()
		m, n, err := c.Members(ctx, room)
		if err != nil {
			r.chk.fail("new member %d: /members: %v", k, err)
			return false
		}
		lists, listSizes = append(lists, time.Since(t0)), append(listSizes, time.Duration(n))
		joined := 0
		for _, ev := range m.Chunk {
			if ev.Type == "m.room.member" && ev.Content.Membership == "join" {
				joined++
			}
		}
		if joined != members+k+1 {
			r.chk.fail("new member %d: /members lists %d joined members, want %d", k, joined, members+k+1)
		}
	}
	r.res.latencies("new member join", joins)
	r.res.latencies("first lazy sync", syncs)
	r.res.add("first lazy sync size max", float64(percentile(syncSizes, 100)), "bytes")
	r.res.latencies("/members", lists)
	r.res.add("/members size p50", float64(percentile(listSizes, 50)), "bytes")
	return true
}

// checkLazySync: the room is there with its create event; the state holds
// no member event of a user who neither sent a timeline event nor is the
// syncing user (lazy loading); the summary counts every joined member.
func checkLazySync(r *runner, resp *SyncResponse, room, self string, joined int) {
	jr, ok := resp.Rooms.Join[room]
	if !ok {
		r.chk.fail("first sync of %s lacks the room it joined", self)
		return
	}
	senders := map[string]bool{self: true}
	hasCreate, hasSelf := false, false
	for _, ev := range jr.Timeline.Events {
		senders[ev.Sender] = true
		hasCreate = hasCreate || ev.Type == "m.room.create"
		hasSelf = hasSelf || (ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == self)
	}
	extra := 0
	for _, ev := range jr.State.Events {
		hasCreate = hasCreate || ev.Type == "m.room.create"
		if ev.Type != "m.room.member" || ev.StateKey == nil {
			continue
		}
		hasSelf = hasSelf || *ev.StateKey == self
		if !senders[*ev.StateKey] {
			extra++
		}
	}
	if !hasCreate {
		r.chk.fail("first sync of %s: no m.room.create in state or timeline", self)
	}
	if !hasSelf {
		r.chk.fail("first sync of %s: its own member event is in neither state nor timeline", self)
	}
	if extra > 0 {
		r.chk.fail("first sync of %s with lazy_load_members: %d member events of users who sent nothing in the timeline", self, extra)
	}
	if jr.Summary.Joined == nil {
		r.chk.fail("first sync of %s: no m.joined_member_count in the room summary", self)
	} else if n := *jr.Summary.Joined; n != joined {
		r.chk.fail("first sync of %s: m.joined_member_count %d, want %d", self, n, joined)
	}
}

// bigRoomFanout: listeners (members of the room) long-poll with lazy
// loading while rounds of one message each are sent.
func (r *runner) bigRoomFanout(ctx context.Context, room string, sender *Client, listeners []*Client) bool {
	p := r.p
	filter := fmt.Sprintf(`{"room":{"rooms":[%q],"state":{"lazy_load_members":true},"timeline":{"limit":100,"lazy_load_members":true}}}`, room)
	t0 := time.Now()
	sinces := r.initialSinces(ctx, listeners, filter)
	if sinces == nil {
		return false
	}
	r.res.add("listeners' initial syncs/s", float64(len(listeners))/time.Since(t0).Seconds(), "sync/s")
	ls := newListenerSet(r, room, filter, p.BigRounds, listeners, sinces)
	ls.start(ctx)
	defer ls.stop()
	starts := make([]time.Time, p.BigRounds)
	ids := make([]string, p.BigRounds)
	for k := range p.BigRounds {
		if !ls.waitHeld(ctx, 60*time.Second) {
			r.chk.fail("round %d: the listeners' long-polls were not all sent within 60 s (%d of %d)", k, ls.held.Load(), len(listeners))
			return false
		}
		r.settle(ctx, len(listeners))
		if !sendRound(ctx, r, ls, sender, room, k, starts, ids) {
			return false
		}
	}
	ls.stop()
	reportDeliveries(r, ls, starts, ids)
	return !r.chk.failed()
}

// bigRoomSendRate sends BigSends messages from two senders into the big
// room and into a fresh room of the same two, alternately BigRepeats
// times, and reports both rates and their ratio (best of each).
func (r *runner) bigRoomSendRate(ctx context.Context, big string, a, b *Client) {
	p := r.p
	small, err := a.CreateRoom(ctx, true)
	if err == nil {
		err = b.Join(ctx, small)
	}
	if err != nil {
		r.chk.fail("set-up of the 2-member room: %v", err)
		return
	}
	seq := p.BigRounds // the fan-out rounds used the first tags
	rate := func(room string) (float64, float64) {
		r.settle(ctx, p.BigSends)
		cpu0, _ := cpuSumTicks(r.pids)
		start := time.Now()
		base := seq
		seq += p.BigSends
		parallel(ctx, p.BigSends, p.SendInFlight, func(ctx context.Context, k int) {
			c := a
			if k%2 == 1 {
				c = b
			}
			if _, err := c.Send(ctx, room, r.txn(base+k), Tag{Run: r.run, Seq: base + k}); err != nil {
				r.chk.fail("send %d to %s: %v", k, room, err)
			}
		})
		el := time.Since(start)
		// The CPU until the server is idle again: what the sends set
		// off behind them (projection, sync, the pusher role) counts.
		r.settle(ctx, p.BigSends)
		cpu1, _ := cpuSumTicks(r.pids)
		return float64(p.BigSends) / el.Seconds(), float64(cpu1-cpu0) / clockTicks / float64(p.BigSends) * 1000
	}
	var bigBest, smallBest, bigCPU, smallCPU float64
	for range p.BigRepeats {
		s, sc := rate(small)
		g, gc := rate(big)
		r.logf("send rate: 2 members %.0f msg/s, %d members %.0f msg/s", s, p.BigMembers, g)
		if s > smallBest {
			smallBest, smallCPU = s, sc
		}
		if g > bigBest {
			bigBest, bigCPU = g, gc
		}
	}
	r.res.add("send rate, 2-member room", smallBest, "msg/s")
	r.res.add("send rate, big room", bigBest, "msg/s")
	if smallBest > 0 {
		r.res.add("big room / 2-member room", bigBest/smallBest, "")
	}
	if len(r.pids) > 0 {
		r.res.add("server CPU per message, 2-member room", smallCPU, "ms")
		r.res.add("server CPU per message, big room", bigCPU, "ms")
	}
}

// isUnavailable reports whether err is a 503 answer.
func isUnavailable(err error) bool {
	var he *HTTPError
	return errors.As(err, &he) && he.Status == http.StatusServiceUnavailable
}
