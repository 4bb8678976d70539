package pushgateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"strand/api/apitest"
	"strand/api/outbound"
	"strand/api/pushgateway"
	"strand/eventlog"
)

// gateway is a push gateway on 127.0.0.1 that records what it is sent.
type gateway struct {
	srv *httptest.Server

	mu       sync.Mutex
	got      []map[string]any // accepted notifications, in arrival order
	attempts int              // every request, refused ones included
	status   int              // answer with this status when not 200
	reject   bool             // answer rejecting every pushkey
	changed  chan struct{}
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{changed: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body struct {
			Notification map[string]any `json:"notification"`
		}
		if r.Method != http.MethodPost || r.URL.Path != pushgateway.NotifyPath || json.Unmarshal(raw, &body) != nil {
			t.Errorf("gateway got %s %s: %s", r.Method, r.URL.Path, raw)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		defer func() { close(g.changed); g.changed = make(chan struct{}) }()
		g.attempts++
		if g.status != 0 {
			w.WriteHeader(g.status)
			return
		}
		g.got = append(g.got, body.Notification)
		rejected := []string{}
		if g.reject {
			for _, d := range body.Notification["devices"].([]any) {
				rejected = append(rejected, d.(map[string]any)["pushkey"].(string))
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) url() string { return g.srv.URL + pushgateway.NotifyPath }

// waitFor waits until cond holds of what the gateway has received.
func (g *gateway) waitFor(t *testing.T, what string, cond func(got []map[string]any, attempts int) bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		g.mu.Lock()
		ok := cond(g.got, g.attempts)
		ch := g.changed
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("gateway: gave up waiting for %s", what)
		}
	}
}

func (g *gateway) set(f func(g *gateway)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *gateway) received() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.got...)
}

// forEvent returns the notifications received for eventID.
func (g *gateway) forEvent(eventID string) []map[string]any {
	var out []map[string]any
	for _, n := range g.received() {
		if n["event_id"] == eventID {
			out = append(out, n)
		}
	}
	return out
}

// deployment is a server (api, sync, projector) and a pusher role.
type deployment struct {
	env   *apitest.Env
	base  string
	reg   *prometheus.Registry
	alice *apitest.Client
	bob   *apitest.Client
}

func newDeployment(t *testing.T) *deployment {
	env := apitest.New(t)
	env.Projector()
	d := &deployment{env: env, base: env.Serve(apitest.DefaultConfig()).URL}
	d.alice = apitest.NewClient(t, d.base)
	d.alice.Register("alice", "pw")
	d.alice.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(d.alice.UserID)+"/displayname", map[string]any{"displayname": "Alice A."})
	d.bob = apitest.NewClient(t, d.base)
	d.bob.Register("bob", "pw")
	return d
}

// startPusher runs a pusher "process" (its own connections) until stop.
// Loopback is allowed as --outbound-allow 127.0.0.0/8 allows it.
func (d *deployment) startPusher(t *testing.T) (p *pushgateway.Pusher, stop func()) {
	t.Helper()
	p, stop, _ = d.startPusherAckWait(t, 10*time.Second)
	return p, stop
}

// startPusherAckWait is startPusher with the given ack wait, also
// returning kill: the process's NATS connection drops at once (no
// acknowledgement of what it was doing gets out), then it stops.
func (d *deployment) startPusherAckWait(t *testing.T, ackWait time.Duration) (p *pushgateway.Pusher, stop, kill func()) {
	t.Helper()
	l := d.env.Conn()
	st := d.env.Store()
	wm, err := eventlog.NewWatermark(l.Conn(), st.Position)
	if err != nil {
		t.Fatal(err)
	}
	p = &pushgateway.Pusher{Log: l, Store: st, Watermark: wm, Logger: apitest.Logger(),
		Client:   outbound.NewClient([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
		AckWait:  ackWait,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	d.reg = prometheus.NewRegistry()
	if err := p.RegisterMetrics(d.reg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("pusher: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	kill = func() { l.Conn().Close(); stop() }
	t.Cleanup(stop)
	return p, stop, kill
}

// settle waits until the pusher has finished everything on the log so
// far: after it, nothing more will reach the gateway for it.
func settle(t *testing.T, p *pushgateway.Pusher) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err := p.Backlog(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pusher still has %d records to do", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func setPusher(t *testing.T, c *apitest.Client, pushkey, gwURL, format string) {
	t.Helper()
	data := map[string]any{"url": gwURL, "extra": "kept"}
	if format != "" {
		data["format"] = format
	}
	c.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": "http", "app_id": "org.example.app",
		"pushkey": pushkey, "app_display_name": "App", "device_display_name": "Phone", "lang": "en", "data": data})
}

// room makes a room of alice's that bob has joined.
func (d *deployment) room(t *testing.T, name string) string {
	t.Helper()
	id := d.alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": name, "preset": "public_chat"}).Str("room_id")
	d.bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(id), map[string]any{})
	return id
}

var txn int

func send(t *testing.T, c *apitest.Client, room, body string) string {
	t.Helper()
	txn++
	return c.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", url.PathEscape(room), txn),
		map[string]any{"msgtype": "m.text", "body": body}).Str("event_id")
}

func counts(n map[string]any) float64 {
	c, _ := n["counts"].(map[string]any)
	u, _ := c["unread"].(float64)
	return u
}

func device(n map[string]any) map[string]any {
	ds, _ := n["devices"].([]any)
	if len(ds) != 1 {
		return nil
	}
	m, _ := ds[0].(map[string]any)
	return m
}

// A message from alice reaches bob's gateway once, with the fields of
// the push gateway API and bob's unread count; bob's own message and
// the messages of a room he muted push nothing; a keyword rule
// highlights; a read receipt resets the count of the next push; the
// event_id_only format sends only ids and counts.
func TestPushDelivery(t *testing.T) {
	d := newDeployment(t)
	g := newGateway(t)
	p, _ := d.startPusher(t)
	room := d.room(t, "Chat")
	setPusher(t, d.bob, "bob-key", g.url(), "")
	carol := apitest.NewClient(t, d.base) // joined, without a pusher
	carol.Register("carol", "pw")
	carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})

	hello := send(t, d.alice, room, "hello")
	g.waitFor(t, "hello", func(got []map[string]any, _ int) bool { return len(got) >= 1 })
	n := g.received()[0]
	want := map[string]any{"event_id": hello, "room_id": room, "type": "m.room.message", "sender": d.alice.UserID,
		"sender_display_name": "Alice A.", "room_name": "Chat"}
	for k, v := range want {
		if n[k] != v {
			t.Errorf("notification %s = %v, want %v", k, n[k], v)
		}
	}
	if c, _ := n["content"].(map[string]any); c["body"] != "hello" {
		t.Errorf("notification content %v", n["content"])
	}
	if counts(n) != 1 {
		t.Errorf("counts %v, want unread 1", n["counts"])
	}
	if p := n["prio"]; p != "high" && p != "low" {
		t.Errorf("prio %v", p)
	}
	dev := device(n)
	if dev == nil || dev["app_id"] != "org.example.app" || dev["pushkey"] != "bob-key" || dev["pushkey_ts"] == nil {
		t.Fatalf("devices %v", n["devices"])
	}
	if data, _ := dev["data"].(map[string]any); data["extra"] != "kept" || data["url"] != nil {
		t.Errorf("device data %v: want the pusher's data without url", dev["data"])
	}
	if _, ok := dev["tweaks"].(map[string]any); !ok {
		t.Errorf("device tweaks %v", dev["tweaks"])
	}

	// Bob's own message pushes nothing to bob; alice's next one counts 2.
	send(t, d.bob, room, "mine")
	second := send(t, d.alice, room, "again")
	g.waitFor(t, "again", func(got []map[string]any, _ int) bool { return len(got) >= 2 })
	if n := g.received()[1]; n["event_id"] != second || counts(n) != 2 {
		t.Fatalf("second push %v (unread %v), want %s with unread 2", n["event_id"], counts(n), second)
	}

	// A read receipt resets the count: the next push counts 1, and
	// /sync shows the same.
	d.bob.MustDo("POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", url.PathEscape(room), url.PathEscape(second)), map[string]any{})
	third := send(t, d.alice, room, "after the receipt")
	g.waitFor(t, "third", func(got []map[string]any, _ int) bool { return len(got) >= 3 })
	if n := g.received()[2]; n["event_id"] != third || counts(n) != 1 {
		t.Fatalf("push after the receipt %v (unread %v), want %s with unread 1", n["event_id"], counts(n), third)
	}
	sync := d.bob.MustDo("GET", "/_matrix/client/v3/sync", nil)
	joined, _ := sync.Body["rooms"].(map[string]any)["join"].(map[string]any)
	un, _ := joined[room].(map[string]any)["unread_notifications"].(map[string]any)
	if un["notification_count"] != float64(1) {
		t.Errorf("/sync unread_notifications after the receipt and one message: %v", un)
	}

	// A keyword rule highlights.
	d.bob.MustDo("PUT", "/_matrix/client/v3/pushrules/global/content/cake", map[string]any{
		"pattern": "cake", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})
	cake := send(t, d.alice, room, "who wants cake?")
	g.waitFor(t, "cake", func(got []map[string]any, _ int) bool { return len(got) >= 4 })
	n = g.received()[3]
	if n["event_id"] != cake {
		t.Fatalf("fourth push %v, want %s", n["event_id"], cake)
	}
	if tw, _ := device(n)["tweaks"].(map[string]any); tw["highlight"] != true {
		t.Errorf("keyword push tweaks %v, want highlight", device(n)["tweaks"])
	}
	if n["prio"] != "high" {
		t.Errorf("highlight prio %v", n["prio"])
	}

	// A room bob muted with a room rule pushes nothing; another room
	// still does.
	muted := d.room(t, "Muted")
	d.bob.MustDo("PUT", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape(muted), map[string]any{"actions": []any{}})
	hushed := send(t, d.alice, muted, "you will not hear this")
	other := d.room(t, "Other")
	loud := send(t, d.alice, other, "but this")
	settle(t, p)
	if got := g.forEvent(hushed); len(got) != 0 {
		t.Errorf("the muted room pushed %v", got)
	}
	if got := g.forEvent(loud); len(got) != 1 {
		t.Errorf("the other room pushed %d times", len(got))
	}

	// An invite notifies its invitee, who is not in the room yet.
	invited := d.alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Invite", "invite": []string{d.bob.UserID}}).Str("room_id")
	settle(t, p)
	var invite map[string]any
	for _, n := range g.received() {
		if n["room_id"] == invited {
			if invite != nil {
				t.Errorf("two pushes for the invite room: %v and %v", invite, n)
			}
			invite = n
		}
	}
	if invite == nil || invite["type"] != "m.room.member" || invite["membership"] != "invite" || invite["user_is_target"] != true {
		t.Errorf("invite push %v", invite)
	}

	// Everything once, nothing for bob's own message.
	seen := map[string]int{}
	for _, n := range g.received() {
		seen[n["event_id"].(string)]++
		if n["sender"] == d.bob.UserID {
			t.Errorf("bob's own event pushed: %v", n)
		}
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("event %s pushed %d times", id, k)
		}
	}
	if got := metric(t, d.reg, "strand_push_sent_total"); got != float64(len(g.received())) {
		t.Errorf("sent counter %v, gateway got %d", got, len(g.received()))
	}

	// event_id_only: ids, counts and devices, no content.
	setPusher(t, d.bob, "bob-key", g.url(), "event_id_only")
	short := send(t, d.alice, room, "short")
	g.waitFor(t, "event_id_only", func(got []map[string]any, _ int) bool { return len(got) >= len(seen)+1 })
	n = g.forEvent(short)[0]
	if n["room_id"] != room || n["counts"] == nil || device(n) == nil || n["content"] != nil || n["sender"] != nil || n["type"] != nil {
		t.Errorf("event_id_only notification %v", n)
	}
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// A gateway answering 500 gets the notification once it recovers, once;
// a gateway rejecting the pushkey gets its pusher deleted.
func TestPushGatewayFailureAndRejection(t *testing.T) {
	d := newDeployment(t)
	g := newGateway(t)
	p, _ := d.startPusher(t)
	room := d.room(t, "Chat")
	setPusher(t, d.bob, "bob-key", g.url(), "")

	g.set(func(g *gateway) { g.status = http.StatusInternalServerError })
	ev := send(t, d.alice, room, "while down")
	g.waitFor(t, "failed attempts", func(_ []map[string]any, attempts int) bool { return attempts >= 3 })
	g.set(func(g *gateway) { g.status = 0 })
	g.waitFor(t, "recovery", func(got []map[string]any, _ int) bool { return len(got) >= 1 })
	settle(t, p)
	if got := g.forEvent(ev); len(got) != 1 {
		t.Fatalf("after recovery the gateway got the notification %d times", len(got))
	}
	if f := metric(t, d.reg, "strand_push_failed_total"); f < 3 {
		t.Errorf("failed counter %v after 3 failed attempts", f)
	}

	g.set(func(g *gateway) { g.reject = true })
	send(t, d.alice, room, "rejected")
	g.waitFor(t, "the rejected push", func(got []map[string]any, _ int) bool { return len(got) >= 2 })
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps := d.bob.MustDo("GET", "/_matrix/client/v3/pushers", nil).Body["pushers"].([]any)
		if len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejected pusher still listed: %v", ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
	settle(t, p)
	before := len(g.received())
	send(t, d.alice, room, "nobody listens")
	settle(t, p)
	if after := len(g.received()); after != before {
		t.Errorf("a deleted pusher was pushed to")
	}
	if r := metric(t, d.reg, "strand_push_rejected_total"); r != 1 {
		t.Errorf("rejected counter %v", r)
	}
}

// Stopping the pusher role in the middle of a stream of messages and
// starting it again pushes every message once: none twice, none missed.
func TestPushKillAndRestart(t *testing.T) {
	d := newDeployment(t)
	g := newGateway(t)
	_, stop := d.startPusher(t)
	room := d.room(t, "Chat")
	setPusher(t, d.bob, "bob-key", g.url(), "")

	const total = 120
	ids := make([]string, 0, total)
	for i := range total {
		ids = append(ids, send(t, d.alice, room, fmt.Sprintf("message %d", i)))
		if i == total/3 {
			g.waitFor(t, "the first pushes", func(got []map[string]any, _ int) bool { return len(got) >= 10 })
			stop() // mid-stream: later messages wait on the log
		}
	}
	p2, _ := d.startPusher(t)
	g.waitFor(t, "every message", func(got []map[string]any, _ int) bool { return len(got) >= total })
	settle(t, p2)
	assertEachPushedOnce(t, g, ids)
}

// Killing the pusher role abruptly (its NATS connection gone: nothing it
// was matching or sending is acknowledged) while its gateway is failing,
// then starting another: every message arrives once when the gateway
// recovers. Records the dead process held come back after their ack
// wait; the match stage queues nothing twice for them.
func TestPushKilledAbruptly(t *testing.T) {
	d := newDeployment(t)
	g := newGateway(t)
	const ackWait = 3 * time.Second
	_, _, kill := d.startPusherAckWait(t, ackWait)
	room := d.room(t, "Chat")
	setPusher(t, d.bob, "bob-key", g.url(), "")
	g.set(func(g *gateway) { g.status = http.StatusServiceUnavailable })

	const total = 60
	ids := make([]string, 0, total)
	for i := range total {
		ids = append(ids, send(t, d.alice, room, fmt.Sprintf("message %d", i)))
		if i == total/2 {
			g.waitFor(t, "failing attempts", func(_ []map[string]any, attempts int) bool { return attempts >= 10 })
			kill()
		}
	}
	p2, _, _ := d.startPusherAckWait(t, ackWait)
	g.set(func(g *gateway) { g.status = 0 })
	g.waitFor(t, "every message", func(got []map[string]any, _ int) bool { return len(got) >= total })
	settle(t, p2)
	assertEachPushedOnce(t, g, ids)
}

// assertEachPushedOnce fails unless the gateway received every one of ids
// exactly once and nothing else.
func assertEachPushedOnce(t *testing.T, g *gateway, ids []string) {
	t.Helper()
	seen := map[string]int{}
	for _, n := range g.received() {
		seen[n["event_id"].(string)]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("event %s pushed %d times", id, seen[id])
		}
	}
	if len(seen) != len(ids) {
		t.Errorf("gateway got %d distinct events, want %d", len(seen), len(ids))
	}
}

// The match stage's "any pushers at all?" shortcut never misses a pusher:
// while alice keeps sending into a room of her own (so the shortcut is
// answering all along), bob, whose pusher was removed, sets it again, and
// the message alice sends him right after is pushed, round after round.
func TestPushAfterPusherSetDuringTraffic(t *testing.T) {
	d := newDeployment(t)
	g := newGateway(t)
	p, _ := d.startPusher(t)
	room := d.room(t, "Shared")
	own := d.alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Alone"}).Str("room_id")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := d.alice.Do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/bg%d", url.PathEscape(own), i),
				map[string]any{"msgtype": "m.text", "body": "traffic"})
			if r.Status != http.StatusOK {
				t.Errorf("background send: %d %s", r.Status, r.Raw)
				return
			}
		}
	}()
	var want []string
	for round := range 4 {
		if round > 0 {
			d.bob.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "bob-key"})
			send(t, d.alice, room, "to nobody")
		}
		setPusher(t, d.bob, "bob-key", g.url(), "")
		id := send(t, d.alice, room, fmt.Sprintf("round %d", round))
		want = append(want, id)
		g.waitFor(t, "round "+fmt.Sprint(round), func(got []map[string]any, _ int) bool {
			return slices.ContainsFunc(got, func(n map[string]any) bool { return n["event_id"] == id })
		})
	}
	close(stop)
	<-done
	settle(t, p)
	// Only the rounds' messages are asserted: a "to nobody" may be matched
	// after the next set (pushers are those of when a record is matched).
	for i, id := range want {
		if n := len(g.forEvent(id)); n != 1 {
			t.Errorf("round %d: %s pushed %d times, want once", i, id, n)
		}
	}
}
