package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// scenarios are every scenario over the API, in the order "all" runs them.
// (The replay scenario reads the log, not the API: cmd/strand's
// benchreplay.go.)
var scenarios = []scenario{
	{name: "send", short: "s", run: runSend, params: func(p Params) string {
		return fmt.Sprintf("%d msgs, %d users, %d rooms, %d in flight", p.SendMsgs, p.SendUsers, p.SendRooms, p.SendInFlight)
	}},
	{name: "delivery", short: "d", run: runDelivery, params: func(p Params) string {
		return fmt.Sprintf("%d receivers, %d msgs %v apart", p.DeliveryReceivers, p.DeliveryMsgs, p.DeliveryInterval)
	}},
	{name: "fanout", short: "f", run: runFanout, params: func(p Params) string {
		return fmt.Sprintf("%d members long-polling, %d rounds of one message", p.FanoutMembers, p.FanoutRounds)
	}},
	{name: "population", short: "o", run: runPopulation, params: func(p Params) string {
		return fmt.Sprintf("%d members join a new room concurrently and sync as clients do (presence on, inline filter), %d rounds of one message", p.PopMembers, p.PopRounds)
	}},
	{name: "initialsync", short: "i", run: runInitialSync, params: func(p Params) string {
		return fmt.Sprintf("%d rooms x %d msgs, timeline limit %d, %d syncs", p.InitRooms, p.InitMsgs, p.InitLimit, p.InitRepeats)
	}},
	{name: "idlesync", short: "z", run: runIdleSync, params: func(p Params) string {
		return fmt.Sprintf("%d requests since=<latest>&timeout=0, %d in flight, %d rooms", p.IdleRequests, p.IdleInFlight, p.IdleRooms)
	}},
	{name: "history", short: "h", run: runHistory, params: func(p Params) string {
		return fmt.Sprintf("back-paginate %d events, limit %d, %d times", p.HistEvents, p.HistLimit, p.HistRepeats)
	}},
	{name: "register", short: "r", run: runRegister, params: func(p Params) string {
		return fmt.Sprintf("%d registrations (m.login.dummy), %d in flight", p.RegCount, p.RegInFlight)
	}},
	{name: "login", short: "l", run: runLogin, params: func(p Params) string {
		return fmt.Sprintf("%d password logins, %d in flight", p.LoginCount, p.LoginInFlight)
	}},
	{name: "heldpolls", short: "p", run: runHeldPolls, params: func(p Params) string {
		return fmt.Sprintf("%d idle long-polls over %d users, then one message", p.HeldPolls, p.HeldUsers)
	}},
	{name: "holds", short: "w", run: runHolds, whenNamed: true, params: func(p Params) string {
		return fmt.Sprintf("%d users in one room, each holding one long-poll, then one message", p.HoldUsers)
	}},
	{name: "push", short: "n", run: runPush, whenNamed: true, params: func(p Params) string {
		return fmt.Sprintf("%d members each with a pusher, %d msgs from one, %d in flight", p.PushMembers, p.PushMsgs, p.PushInFlight)
	}},
	{name: "bigroom", short: "b", run: runBigRoom, whenNamed: true, params: func(p Params) string {
		return fmt.Sprintf("a room of %d members; %d new members join and sync lazily; %d long-poll %d messages; %d msgs (%d in flight) against a 2-member room, %d times",
			p.BigMembers, p.BigNew, p.BigListeners, p.BigRounds, p.BigSends, p.SendInFlight, p.BigRepeats)
	}},
	{name: "fill", short: "k", run: runFill, whenNamed: true, params: func(p Params) string {
		return fmt.Sprintf("a log of %d writes by %d users in %d rooms, %d in flight, for the replay scenario", p.FillOps, p.FillUsers, p.FillRooms, p.SendInFlight)
	}},
}

// timelineFilter is an inline sync filter with a timeline limit.
func timelineFilter(limit int) string {
	return fmt.Sprintf(`{"room":{"timeline":{"limit":%d}}}`, limit)
}

// listenFilter is what long-polling listeners use: a timeline long enough
// that no burst of the scenarios' messages makes it limited.
var listenFilter = timelineFilter(100)

func (r *runner) txn(seq int) string { return fmt.Sprintf("%s-%d", r.run, seq) }

// send: N messages from U users into R rooms, C in flight.
func runSend(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, p.SendUsers)
	if users == nil {
		return
	}
	rooms := make([]string, p.SendRooms)
	for i := range rooms {
		if rooms[i] = r.room(ctx, users[0], users); rooms[i] == "" {
			return
		}
	}
	r.logf("set-up done: %d users in %d rooms", len(users), len(rooms))
	roomOf := func(k int) int { return k % p.SendRooms }
	senderOf := func(k int) int { return (k / p.SendRooms) % p.SendUsers }
	lat := make([]time.Duration, p.SendMsgs)
	ids := make([]string, p.SendMsgs)
	var errs atomic.Int64
	r.beginMeasure()
	start := time.Now()
	parallel(ctx, p.SendMsgs, p.SendInFlight, func(ctx context.Context, k int) {
		t0 := time.Now()
		id, err := users[senderOf(k)].Send(ctx, rooms[roomOf(k)], r.txn(k), Tag{Run: r.run, Seq: k})
		lat[k] = time.Since(t0)
		if err != nil {
			errs.Add(1)
			r.chk.fail("send %d: %v", k, err)
			return
		}
		ids[k] = id
	})
	elapsed := time.Since(start)
	r.endMeasure()
	r.res.add("messages/s", float64(p.SendMsgs)/elapsed.Seconds(), "msg/s")
	r.res.latencies("send latency", lat)
	r.res.add("errors", float64(errs.Load()), "")
	checkUniqueIDs(r, "send", ids)

	// Every acknowledged message is in its room exactly once, as sent.
	r.logf("verifying %d messages through /messages", p.SendMsgs)
	perRoom := make([]int, p.SendRooms)
	for k := range p.SendMsgs {
		perRoom[roomOf(k)]++
	}
	found := make([]int, p.SendMsgs)
	for ri, room := range rooms {
		evs, err := r.history(ctx, users[0], room, "", 100, -1)
		if err != nil {
			r.chk.fail("verify room %d: %v", ri, err)
			continue
		}
		for _, ev := range evs {
			tag, _ := ev.tagOf(r.run)
			k := tag.Seq
			switch {
			case k < 0 || k >= p.SendMsgs:
				r.chk.fail("room %s holds a message with unexpected seq %d", room, k)
			case roomOf(k) != ri:
				r.chk.fail("message %d (%s) found in room %s, sent to %s", k, ev.EventID, room, rooms[roomOf(k)])
			case ids[k] != "" && ev.EventID != ids[k]:
				r.chk.fail("message %d: /messages has %s, the send answered %s", k, ev.EventID, ids[k])
			default:
				found[k]++
			}
		}
	}
	missing, dup := 0, 0
	for k, n := range found {
		switch {
		case n == 0 && ids[k] != "":
			missing++
			r.chk.fail("acknowledged message %d (%s) is not in /messages of its room", k, ids[k])
		case n > 1:
			dup++
			r.chk.fail("message %d appears %d times in /messages", k, n)
		}
	}
	r.res.add("missing in history", float64(missing), "")
	r.res.add("duplicated in history", float64(dup), "")
}

// checkUniqueIDs fails the scenario if two acknowledged sends got one ID.
func checkUniqueIDs(r *runner, what string, ids []string) {
	seen := make(map[string]int, len(ids))
	for k, id := range ids {
		if id == "" {
			continue
		}
		if j, ok := seen[id]; ok {
			r.chk.fail("%s %d and %d were both answered with event ID %s", what, j, k, id)
		}
		seen[id] = k
	}
}

// history pages a room backwards from from (empty: a sync's next_batch)
// with limit per page, and returns the run's tagged messages newest
// first: stopping after want of them (want < 0: the whole room).
func (r *runner) history(ctx context.Context, c *Client, room, from string, limit, want int) ([]Event, error) {
	if from == "" {
		resp, _, err := c.Sync(ctx, "", 0, timelineFilter(1))
		if err != nil {
			return nil, err
		}
		from = resp.NextBatch
	}
	var out []Event
	for pages := 0; ; pages++ {
		if pages > 100000 {
			return out, fmt.Errorf("/messages of %s did not end after %d pages", room, pages)
		}
		pg, err := c.Messages(ctx, room, from, "b", limit)
		if err != nil {
			return out, err
		}
		if len(pg.Chunk) > limit {
			r.chk.fail("/messages of %s with limit %d returned %d events", room, limit, len(pg.Chunk))
		}
		for _, ev := range pg.Chunk {
			if _, ok := ev.tagOf(r.run); ok {
				out = append(out, ev)
				if len(out) == want {
					return out, nil
				}
			}
		}
		if pg.End == "" || len(pg.Chunk) == 0 {
			return out, nil
		}
		if pg.End == from {
			return out, fmt.Errorf("/messages of %s returned end == from (%s) with %d events", room, from, len(pg.Chunk))
		}
		from = pg.End
	}
}

// delivery: receivers long-poll one room while a sender sends messages
// at a fixed pace; latency from the start of each send to each receiver
// having the event.
func runDelivery(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, p.DeliveryReceivers+1)
	if users == nil {
		return
	}
	sender, receivers := users[0], users[1:]
	room := r.room(ctx, sender, users)
	if room == "" {
		return
	}
	sinces := r.initialSinces(ctx, receivers, listenFilter)
	if sinces == nil {
		return
	}
	ls := newListenerSet(r, room, listenFilter, p.DeliveryMsgs, receivers, sinces)
	ls.start(ctx)
	defer ls.stop()
	if !ls.waitHeld(ctx, 30*time.Second) {
		r.chk.fail("the receivers' long-polls were not all sent within 30 s (%d of %d)", ls.held.Load(), len(receivers))
		return
	}
	r.settle(ctx, len(receivers))
	r.logf("%d receivers long-polling; sending %d messages", len(receivers), p.DeliveryMsgs)

	starts := make([]time.Time, p.DeliveryMsgs)
	sendLat := make([]time.Duration, p.DeliveryMsgs)
	ids := make([]string, p.DeliveryMsgs)
	var wg sync.WaitGroup
	r.beginMeasure()
	t0 := time.Now()
	for i := range p.DeliveryMsgs {
		sleep(ctx, time.Until(t0.Add(time.Duration(i)*p.DeliveryInterval)))
		if ctx.Err() != nil {
			break
		}
		starts[i] = time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := sender.Send(ctx, room, r.txn(i), Tag{Run: r.run, Seq: i})
			sendLat[i] = time.Since(starts[i])
			if err != nil {
				r.chk.fail("send %d: %v", i, err)
				return
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for i := range p.DeliveryMsgs {
		ls.waitAll(ctx, i, deadline)
	}
	r.endMeasure()
	ls.stop()

	var lat []time.Duration
	missed := 0
	for _, l := range ls.ls {
		for i, at := range l.got {
			if at.IsZero() {
				if ids[i] != "" {
					missed++
				}
				continue
			}
			lat = append(lat, at.Sub(starts[i]))
		}
	}
	r.res.latencies("delivery", lat)
	r.res.add("missed events", float64(missed), "")
	r.res.latencies("send latency", sendLat)
	if missed > 0 {
		r.chk.fail("%d of %d (message, receiver) deliveries missed within 10 s of the last send", missed, p.DeliveryMsgs*len(receivers))
	}
	checkUniqueIDs(r, "send", ids)
	checkListenerOrder(r, ls, ids)
}

// checkListenerOrder: every listener that has every message saw them in
// one order (the room's), and with the event IDs the sends were answered.
func checkListenerOrder(r *runner, ls *listenerSet, ids []string) {
	byID := map[string]int{}
	for i, id := range ids {
		if id != "" {
			byID[id] = i
		}
	}
	var ref []string
	var refUser string
	limited, limitedPolls := 0, 0
	for _, l := range ls.ls {
		if l.limited > 0 {
			limited++
			limitedPolls += l.limited
		}
		for _, id := range l.ids {
			if _, ok := byID[id]; !ok {
				r.chk.fail("%s received event %s, which no send was answered with", l.c.UserID, id)
			}
		}
		if len(l.ids) != len(ids) {
			continue
		}
		if ref == nil {
			ref, refUser = l.ids, l.c.UserID
		} else if !slices.Equal(ref, l.ids) {
			r.chk.fail("%s received the room's messages in a different order than %s", l.c.UserID, refUser)
		}
	}
	if limited > 0 {
		r.res.note("%d listeners got %d limited timelines in all", limited, limitedPolls)
	}
}

// fanout: one message to a room whose members all long-poll; the time
// until the last member has it.
func runFanout(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, p.FanoutMembers)
	if users == nil {
		return
	}
	sender := users[0]
	room := r.room(ctx, sender, users)
	if room == "" {
		return
	}
	sinces := r.initialSinces(ctx, users, listenFilter)
	if sinces == nil {
		return
	}
	ls := newListenerSet(r, room, listenFilter, p.FanoutRounds, users, sinces)
	ls.start(ctx)
	defer ls.stop()
	starts := make([]time.Time, p.FanoutRounds)
	ids := make([]string, p.FanoutRounds)
	r.beginMeasure()
	for k := range p.FanoutRounds {
		if !ls.waitHeld(ctx, 30*time.Second) {
			r.chk.fail("round %d: the members' long-polls were not all sent within 30 s (%d of %d)", k, ls.held.Load(), len(users))
			break
		}
		r.settle(ctx, len(users))
		if !sendRound(ctx, r, ls, sender, room, k, starts, ids) {
			break
		}
	}
	r.endMeasure()
	ls.stop()
	reportDeliveries(r, ls, starts, ids)
}

// population: fan-out as a client population does it, unlike fanout's
// orderly set-up. The members join a fresh public room concurrently, right
// after it is made; each then syncs as a client does (presence left to the
// server, so online; an inline filter naming the room; an initial sync with
// timeout=0, then long-polls from the previous next_batch) as soon as its
// own join is done, while the others are still joining. Once every member
// has its initial sync, and after half a second, the creator sends one
// message; the rounds are half a second apart. No waiting for the server
// to go idle: what the members' own joins, syncs and presence set off is
// part of what is measured.
func runPopulation(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, p.PopMembers+1)
	if users == nil {
		return
	}
	creator, members := users[0], users[1:]
	room, err := creator.CreateRoom(ctx, true)
	if err != nil {
		r.chk.fail("set-up: %v", err)
		return
	}
	filter := fmt.Sprintf(`{"room":{"rooms":[%q],"timeline":{"limit":50}}}`, room)
	for _, m := range members {
		m.Online = true
	}
	ls := newListenerSet(r, room, filter, p.PopRounds, members, make([]string, len(members)))
	var synced sync.WaitGroup
	synced.Add(len(members))
	begin := time.Now()
	ls.startEach(ctx, func(ctx context.Context, i int) (string, error) {
		defer synced.Done()
		if err := members[i].Join(ctx, room); err != nil {
			return "", err
		}
		resp, _, err := members[i].Sync(ctx, "", 0, filter)
		if err != nil {
			return "", err
		}
		return resp.NextBatch, nil
	})
	defer ls.stop()
	synced.Wait()
	if r.chk.failed() || ctx.Err() != nil {
		return
	}
	r.res.add("all joined and synced", ms(time.Since(begin)), "ms")
	starts := make([]time.Time, p.PopRounds)
	ids := make([]string, p.PopRounds)
	minHeld := int64(len(members))
	r.beginMeasure()
	for k := range p.PopRounds {
		sleep(ctx, 500*time.Millisecond)
		minHeld = min(minHeld, ls.held.Load())
		if !sendRound(ctx, r, ls, creator, room, k, starts, ids) {
			break
		}
	}
	r.endMeasure()
	ls.stop()
	// Fewer than every member means some were between polls when the
	// message went out: still busy with what the set-up set off.
	r.res.add("polls held at send (min)", float64(minHeld), "")
	reportDeliveries(r, ls, starts, ids)
}

// sendRound sends round k's tagged message, noting when it started and
// its event ID, and waits until every listener has it; false (a failure
// recorded) if the send failed or some listener did not have it in 10 s.
func sendRound(ctx context.Context, r *runner, ls *listenerSet, sender *Client, room string, k int, starts []time.Time, ids []string) bool {
	starts[k] = time.Now()
	id, err := sender.Send(ctx, room, r.txn(k), Tag{Run: r.run, Seq: k})
	if err != nil {
		r.chk.fail("round %d: send: %v", k, err)
		return false
	}
	ids[k] = id
	if !ls.waitAll(ctx, k, time.Now().Add(10*time.Second)) {
		r.chk.fail("round %d: only %d of %d members had the message 10 s after it was sent", k, ls.counts[k].Load(), len(ls.ls))
		return false
	}
	return true
}

// reportDeliveries adds the first- and last-member times per round (from
// the send's start) and checks that every member had every message once,
// in order.
func reportDeliveries(r *runner, ls *listenerSet, starts []time.Time, ids []string) {
	var last, first, all []time.Duration
	missed := 0
	for k := range ids {
		if ids[k] == "" {
			continue
		}
		var lo, hi time.Duration
		complete := true
		for li, l := range ls.ls {
			if l.got[k].IsZero() {
				missed++
				complete = false
				continue
			}
			d := l.got[k].Sub(starts[k])
			all = append(all, d)
			if li == 0 || d < lo {
				lo = d
			}
			hi = max(hi, d)
		}
		if complete {
			last = append(last, hi)
			first = append(first, lo)
		}
	}
	if len(last) > 0 {
		r.res.add("last member p50", ms(percentile(last, 50)), "ms")
		r.res.add("last member max", ms(percentile(last, 100)), "ms")
		r.res.add("first member p50", ms(percentile(first, 50)), "ms")
	}
	if len(all) > 0 {
		r.res.add("all deliveries p50", ms(percentile(all, 50)), "ms")
	}
	r.res.add("missed events", float64(missed), "")
	if missed > 0 {
		r.chk.fail("%d (message, member) deliveries missed", missed)
	}
	checkUniqueIDs(r, "send", ids)
	checkListenerOrder(r, ls, ids)
}

// fill creates n rooms owned by c, each with msgs tagged messages sent
// one after the other (rooms in parallel); it returns the rooms and their
// messages' event IDs in order, or nil on failure.
func (r *runner) fill(ctx context.Context, c *Client, n, msgs int) ([]string, [][]string) {
	rooms := make([]string, n)
	ids := make([][]string, n)
	var failed atomic.Bool
	parallel(ctx, n, r.p.SetupInFlight, func(ctx context.Context, i int) {
		room, err := c.CreateRoom(ctx, false)
		if err != nil {
			if failed.CompareAndSwap(false, true) {
				r.chk.fail("set-up: %v", err)
			}
			return
		}
		rooms[i] = room
		for j := range msgs {
			seq := i*msgs + j
			id, err := c.Send(ctx, room, r.txn(seq), Tag{Run: r.run, Seq: seq})
			if err != nil {
				if failed.CompareAndSwap(false, true) {
					r.chk.fail("set-up: %v", err)
				}
				return
			}
			ids[i] = append(ids[i], id)
		}
	})
	if failed.Load() || ctx.Err() != nil {
		return nil, nil
	}
	return rooms, ids
}

// initialsync: a user in many rooms with many messages each; an initial
// sync with a timeline limit: time and size.
func runInitialSync(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, 1)
	if users == nil {
		return
	}
	u := users[0]
	rooms, ids := r.fill(ctx, u, p.InitRooms, p.InitMsgs)
	if rooms == nil {
		return
	}
	r.logf("set-up done: %d rooms x %d messages", p.InitRooms, p.InitMsgs)
	filter := timelineFilter(p.InitLimit)
	var lat []time.Duration
	var sizes []time.Duration // bytes, kept as Durations to share percentile
	r.beginMeasure()
	for rep := range p.InitRepeats {
		t0 := time.Now()
		resp, n, err := u.Sync(ctx, "", 0, filter)
		d := time.Since(t0)
		if err != nil {
			r.chk.fail("initial sync %d: %v", rep, err)
			continue
		}
		lat = append(lat, d)
		sizes = append(sizes, time.Duration(n))
		if rep == 0 {
			checkInitialSync(r, resp, rooms, ids, p.InitLimit)
		}
	}
	r.endMeasure()
	r.res.latencies("initial sync", lat)
	if len(sizes) > 0 {
		r.res.add("response size p50", float64(percentile(sizes, 50)), "bytes")
	}
}

func checkInitialSync(r *runner, resp *SyncResponse, rooms []string, ids [][]string, limit int) {
	if len(resp.Rooms.Join) != len(rooms) {
		r.chk.fail("initial sync lists %d joined rooms, the user is in %d", len(resp.Rooms.Join), len(rooms))
	}
	for i, room := range rooms {
		jr, ok := resp.Rooms.Join[room]
		if !ok {
			r.chk.fail("initial sync lacks joined room %s", room)
			continue
		}
		var got []string
		for _, ev := range jr.Timeline.Events {
			if _, ok := ev.tagOf(r.run); ok {
				got = append(got, ev.EventID)
			}
		}
		want := ids[i][max(0, len(ids[i])-limit):]
		if len(jr.Timeline.Events) > limit {
			r.chk.fail("room %s: timeline of %d events with limit %d", room, len(jr.Timeline.Events), limit)
		}
		if !slices.Equal(got, want) {
			r.chk.fail("room %s: timeline messages %v, want the last %d sent, in order: %v", room, got, len(want), want)
		}
		if len(ids[i]) > limit && (!jr.Timeline.Limited || jr.Timeline.PrevBatch == "") {
			r.chk.fail("room %s: timeline of the last %d of %d messages not limited with a prev_batch", room, limit, len(ids[i]))
		}
		hasCreate := false
		for _, ev := range append(jr.State.Events, jr.Timeline.Events...) {
			if ev.Type == "m.room.create" {
				hasCreate = true
			}
		}
		if !hasCreate {
			r.chk.fail("room %s: initial sync has no m.room.create in state or timeline", room)
		}
	}
}

// idlesync: incremental syncs with nothing new, timeout 0.
func runIdleSync(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, 1)
	if users == nil {
		return
	}
	u := users[0]
	if rooms, _ := r.fill(ctx, u, p.IdleRooms, 1); rooms == nil {
		return
	}
	resp, _, err := u.Sync(ctx, "", 0, "")
	if err != nil {
		r.chk.fail("set-up: initial sync: %v", err)
		return
	}
	since := resp.NextBatch
	lat := make([]time.Duration, p.IdleRequests)
	var nonEmpty atomic.Int64
	r.beginMeasure()
	start := time.Now()
	parallel(ctx, p.IdleRequests, p.IdleInFlight, func(ctx context.Context, i int) {
		t0 := time.Now()
		resp, _, err := u.Sync(ctx, since, 0, "")
		lat[i] = time.Since(t0)
		if err != nil {
			r.chk.fail("idle sync %d: %v", i, err)
			return
		}
		for room, jr := range resp.Rooms.Join {
			if len(jr.Timeline.Events) > 0 {
				nonEmpty.Add(1)
				r.chk.fail("idle sync %d returned %d timeline events in %s though nothing was sent", i, len(jr.Timeline.Events), room)
			}
		}
	})
	elapsed := time.Since(start)
	r.endMeasure()
	r.res.add("requests/s", float64(p.IdleRequests)/elapsed.Seconds(), "req/s")
	r.res.latencies("latency", lat)
}

// history: back-paginate a room of many messages; order checked.
func runHistory(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, 1)
	if users == nil {
		return
	}
	u := users[0]
	rooms, ids := r.fill(ctx, u, 1, p.HistEvents)
	if rooms == nil {
		return
	}
	room, sent := rooms[0], ids[0]
	resp, _, err := u.Sync(ctx, "", 0, timelineFilter(1))
	if err != nil {
		r.chk.fail("set-up: sync: %v", err)
		return
	}
	r.logf("set-up done: %d messages", len(sent))
	var totals []time.Duration
	r.beginMeasure()
	for rep := range p.HistRepeats {
		t0 := time.Now()
		evs, err := r.history(ctx, u, room, resp.NextBatch, p.HistLimit, p.HistEvents)
		d := time.Since(t0)
		if err != nil {
			r.chk.fail("pagination %d: %v", rep, err)
			continue
		}
		totals = append(totals, d)
		if len(evs) != len(sent) {
			r.chk.fail("pagination %d found %d of %d messages", rep, len(evs), len(sent))
		}
		for j, ev := range evs {
			want := len(sent) - 1 - j
			tag, _ := ev.tagOf(r.run)
			if j < len(sent) && (tag.Seq != want || ev.EventID != sent[want]) {
				r.chk.fail("pagination %d: event %d going back is message %d (%s), want %d (%s): order broken", rep, j, tag.Seq, ev.EventID, want, sent[want])
				break
			}
		}
	}
	r.endMeasure()
	if len(totals) > 0 {
		r.res.add("total p50", ms(percentile(totals, 50)), "ms")
		r.res.add("total max", ms(percentile(totals, 100)), "ms")
		r.res.add("events/s", float64(p.HistEvents)/percentile(totals, 50).Seconds(), "ev/s")
		r.res.add("pages", float64((p.HistEvents+p.HistLimit-1)/p.HistLimit), "")
	}
}

// register: account registrations with m.login.dummy.
func runRegister(ctx context.Context, r *runner) {
	p := r.p
	lat := make([]time.Duration, p.RegCount)
	users := make([]*Client, p.RegCount)
	var twoRounds atomic.Int64
	r.beginMeasure()
	start := time.Now()
	parallel(ctx, p.RegCount, p.RegInFlight, func(ctx context.Context, i int) {
		c := r.client()
		t0 := time.Now()
		rounds, err := c.Register(ctx, r.localpart(), r.password())
		lat[i] = time.Since(t0)
		if err != nil {
			r.chk.fail("registration %d: %v", i, err)
			return
		}
		if rounds > 1 {
			twoRounds.Add(1)
		}
		users[i] = c
	})
	elapsed := time.Since(start)
	r.endMeasure()
	r.res.add("registrations/s", float64(p.RegCount)/elapsed.Seconds(), "reg/s")
	r.res.latencies("latency", lat)
	if n := twoRounds.Load(); n > 0 {
		r.res.note("%d registrations needed a second round trip for the UIA session", n)
	}
	checkSessions(ctx, r, users)
}

// checkSessions: distinct users, tokens and devices; a sample of tokens
// is accepted by whoami as the right user.
func checkSessions(ctx context.Context, r *runner, cs []*Client) {
	tokens := map[string]bool{}
	devices := map[string]bool{}
	checked := 0
	for _, c := range cs {
		if c == nil {
			continue
		}
		if tokens[c.Token] {
			r.chk.fail("access token issued twice (to %s)", c.UserID)
		}
		tokens[c.Token] = true
		if devices[c.UserID+" "+c.DeviceID] {
			r.chk.fail("device %s of %s issued twice", c.DeviceID, c.UserID)
		}
		devices[c.UserID+" "+c.DeviceID] = true
		if checked < 5 {
			checked++
			uid, err := c.WhoAmI(ctx)
			if err != nil {
				r.chk.fail("whoami with a new token: %v", err)
			} else if uid != c.UserID {
				r.chk.fail("whoami answers %s for a token issued to %s", uid, c.UserID)
			}
		}
	}
}

// login: password logins, each a new device.
func runLogin(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, min(p.LoginCount, 10))
	if users == nil {
		return
	}
	lat := make([]time.Duration, p.LoginCount)
	sessions := make([]*Client, p.LoginCount)
	r.beginMeasure()
	start := time.Now()
	parallel(ctx, p.LoginCount, p.LoginInFlight, func(ctx context.Context, i int) {
		u := users[i%len(users)]
		t0 := time.Now()
		s, err := u.Login(ctx, u.Local, u.Password)
		lat[i] = time.Since(t0)
		if err != nil {
			r.chk.fail("login %d: %v", i, err)
			return
		}
		if s.UserID != u.UserID {
			r.chk.fail("login %d as %s answered user_id %s", i, u.UserID, s.UserID)
		}
		sessions[i] = s
	})
	elapsed := time.Since(start)
	r.endMeasure()
	r.res.add("logins/s", float64(p.LoginCount)/elapsed.Seconds(), "login/s")
	r.res.latencies("latency", lat)
	checkSessions(ctx, r, append(sessions, users...))
}

// heldpolls: thousands of idle long-polls held at once: the server's
// memory for them, and the time to deliver one message to all.
func runHeldPolls(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, p.HeldUsers+1)
	if users == nil {
		return
	}
	sender, holders := users[0], users[1:]
	room := r.room(ctx, sender, users)
	if room == "" {
		return
	}
	sinces := r.initialSinces(ctx, holders, listenFilter)
	if sinces == nil {
		return
	}
	clients := make([]*Client, p.HeldPolls)
	pollSinces := make([]string, p.HeldPolls)
	for i := range clients {
		clients[i], pollSinces[i] = holders[i%len(holders)], sinces[i%len(holders)]
	}
	r.logf("set-up done: %d users in the room; opening %d long-polls", len(users), p.HeldPolls)
	measureHeld(ctx, r, sender, room, listenFilter, clients, pollSinces)
}

// measureHeld opens one long-poll per client (from its since), waits
// until all are held and the server is idle, then sends one message from
// sender to room: the server's RSS before and with the polls held, and
// how long until the first, half and all of the polls have the message.
func measureHeld(ctx context.Context, r *runner, sender *Client, room, filter string, clients []*Client, pollSinces []string) {
	n := len(clients)
	var rssBefore uint64
	if len(r.pids) > 0 {
		r.settle(ctx, 0)
		rssBefore, _ = rssSumKB(r.pids)
	}
	ls := newListenerSet(r, room, filter, 1, clients, pollSinces)
	r.beginMeasure()
	t0 := time.Now()
	ls.start(ctx)
	defer ls.stop()
	if !ls.waitHeld(ctx, 60*time.Second) {
		r.chk.fail("only %d of %d long-polls were sent within 60 s", ls.held.Load(), n)
		return
	}
	opened := time.Since(t0)
	r.settle(ctx, n)
	if h := ls.held.Load(); int(h) != n {
		r.res.note("%d of %d long-polls were answered (empty) before anything was sent, and polled again", n-int(h), n)
	}
	var rssHeld uint64
	if len(r.pids) > 0 {
		rssHeld, _ = rssSumKB(r.pids)
	}
	r.logf("%d long-polls held; sending one message", ls.held.Load())
	tSend := time.Now()
	id, err := sender.Send(ctx, room, r.txn(0), Tag{Run: r.run, Seq: 0})
	sendLat := time.Since(tSend)
	if err != nil {
		r.chk.fail("send: %v", err)
		return
	}
	complete := ls.waitAll(ctx, 0, time.Now().Add(30*time.Second))
	r.endMeasure()
	ls.stop()
	var all []time.Duration
	missed := 0
	for _, l := range ls.ls {
		if l.got[0].IsZero() {
			missed++
			continue
		}
		all = append(all, l.got[0].Sub(tSend))
	}
	r.res.add("long-polls", float64(n), "")
	r.res.add("all sent after", opened.Seconds(), "s")
	r.res.add("send latency", ms(sendLat), "ms")
	if len(all) > 0 {
		r.res.add("first has it", ms(slices.Min(all)), "ms")
		r.res.add("half have it", ms(percentile(all, 50)), "ms")
	}
	if complete {
		r.res.add("all have it", ms(percentile(all, 100)), "ms")
	}
	r.res.add("missed events", float64(missed), "")
	if missed > 0 {
		r.chk.fail("%d of %d long-polls did not get the message within 30 s", missed, n)
	}
	if len(r.pids) > 0 {
		r.res.add("server rss before polls", kbToMB(rssBefore), "MB")
		r.res.add("server rss polls held", kbToMB(rssHeld), "MB")
		r.res.add("rss added by polls", kbToMB(rssHeld)-kbToMB(rssBefore), "MB")
	}
	checkListenerOrder(r, ls, []string{id})
}
