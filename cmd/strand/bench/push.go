package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// The push scenario: a room of PushMembers members, every one holding an
// http pusher whose URL is a push gateway this process runs; one member
// sends PushMsgs messages (PushInFlight at once). It measures the send
// rate and the push delivery rate (notifications the gateway received per
// second, from the first send to the last notification), and checks that
// every other member's pusher gets every message exactly once and the
// sender's none. The server needs its pusher role running with
// --outbound-allow covering the gateway's address (Options.PushListen).

const pushNotifyPath = "/_matrix/push/v1/notify"

// pushGateway records, per (event ID, pushkey), how often it was
// notified and when first.
type pushGateway struct {
	mu      sync.Mutex
	count   map[[2]string]int
	first   map[string]time.Time // by event: first notification
	last    time.Time
	total   int
	bad     int
	arrived chan struct{} // closed and replaced on each notification
}

func (g *pushGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Notification struct {
			EventID string `json:"event_id"`
			Devices []struct {
				Pushkey string `json:"pushkey"`
			} `json:"devices"`
		} `json:"notification"`
	}
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	ok := r.Method == http.MethodPost && r.URL.Path == pushNotifyPath && json.Unmarshal(raw, &body) == nil &&
		body.Notification.EventID != "" && len(body.Notification.Devices) == 1
	now := time.Now()
	g.mu.Lock()
	if !ok {
		g.bad++
	} else {
		g.count[[2]string{body.Notification.EventID, body.Notification.Devices[0].Pushkey}]++
		if _, seen := g.first[body.Notification.EventID]; !seen {
			g.first[body.Notification.EventID] = now
		}
		g.total++
		g.last = now
	}
	close(g.arrived)
	g.arrived = make(chan struct{})
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"rejected":[]}`))
}

func runPush(ctx context.Context, r *runner) {
	p := r.p
	ln, err := net.Listen("tcp", r.pushListen)
	if err != nil {
		r.chk.fail("set-up: push gateway: %v", err)
		return
	}
	g := &pushGateway{count: map[[2]string]int{}, first: map[string]time.Time{}, arrived: make(chan struct{})}
	srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	gwURL := "http://" + ln.Addr().String() + pushNotifyPath

	users := r.newUsers(ctx, p.PushMembers)
	if users == nil {
		return
	}
	room := r.room(ctx, users[0], users)
	if room == "" {
		return
	}
	var failed bool
	var mu sync.Mutex
	parallel(ctx, len(users), r.p.SetupInFlight, func(ctx context.Context, i int) {
		body := map[string]any{"kind": "http", "app_id": "org.strand.bench", "pushkey": pushkey(i),
			"app_display_name": "bench", "device_display_name": "bench", "lang": "en",
			"data": map[string]any{"url": gwURL}}
		if _, err := users[i].do(ctx, http.MethodPost, prefix+"/pushers/set", body, nil); err != nil {
			mu.Lock()
			if !failed {
				r.chk.fail("set-up: pushers/set: %v", err)
			}
			failed = true
			mu.Unlock()
		}
	})
	if failed || ctx.Err() != nil {
		return
	}
	r.logf("set-up done: %d members with pushers, gateway %s", len(users), gwURL)

	lat := make([]time.Duration, p.PushMsgs)
	ids := make([]string, p.PushMsgs)
	sentAt := make([]time.Time, p.PushMsgs)
	r.beginMeasure()
	start := time.Now()
	parallel(ctx, p.PushMsgs, p.PushInFlight, func(ctx context.Context, k int) {
		t0 := time.Now()
		id, err := users[0].Send(ctx, room, r.txn(k), Tag{Run: r.run, Seq: k})
		lat[k] = time.Since(t0)
		if err != nil {
			r.chk.fail("send %d: %v", k, err)
			return
		}
		ids[k], sentAt[k] = id, t0
	})
	sendElapsed := time.Since(start)
	r.res.add("messages/s", float64(p.PushMsgs)/sendElapsed.Seconds(), "msg/s")
	r.res.latencies("send latency", lat)

	// Wait for every notification: each message to every member but the
	// sender. Give up once nothing has arrived for a while.
	want := 0
	for _, id := range ids {
		if id != "" {
			want += len(users) - 1
		}
	}
	const quiet = 30 * time.Second
	for {
		g.mu.Lock()
		total, ch := g.total, g.arrived
		g.mu.Unlock()
		if total >= want {
			break
		}
		select {
		case <-ch:
			continue
		case <-time.After(quiet):
		case <-ctx.Done():
		}
		r.chk.fail("push: %d of %d notifications arrived, then none for %v (is the pusher role running, with --outbound-allow covering %s?)",
			total, want, quiet, ln.Addr())
		break
	}
	r.endMeasure()
	// Late duplicates would come now.
	r.settle(ctx, want)

	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total > 0 {
		r.res.add("pushes/s", float64(g.total)/g.last.Sub(start).Seconds(), "push/s")
	}
	var first []time.Duration
	missing, dup := 0, 0
	for k, id := range ids {
		if id == "" {
			continue
		}
		if t, ok := g.first[id]; ok {
			first = append(first, t.Sub(sentAt[k]))
		}
		for i := range users {
			n := g.count[[2]string{id, pushkey(i)}]
			switch {
			case i == 0 && n > 0:
				r.chk.fail("the sender's own message %d was pushed to the sender", k)
			case i > 0 && n == 0:
				missing++
			case n > 1:
				dup++
				r.chk.fail("message %d pushed %d times to member %d", k, n, i)
			}
		}
	}
	if missing > 0 {
		r.chk.fail("%d notifications never arrived", missing)
	}
	if g.bad > 0 {
		r.chk.fail("the gateway got %d malformed requests", g.bad)
	}
	r.res.latencies("first push latency", first)
	r.res.add("notifications", float64(g.total), "")
	r.res.add("missing", float64(missing), "")
	r.res.add("duplicated", float64(dup), "")
}

func pushkey(i int) string { return fmt.Sprintf("bench-pk-%d", i) }
