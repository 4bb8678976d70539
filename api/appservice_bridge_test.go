package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	mas "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"strand/api/apitest"
)

// testBridge is a small bridge built on mautrix-go's appservice package:
// mautrix handles the transactions, queries and pings; the test only
// serves its router (so it can be stopped and started on one address)
// and watches what reaches it.
type testBridge struct {
	t    *testing.T
	as   *mas.AppService
	addr string

	mu      sync.Mutex
	srv     *http.Server
	bodies  map[string]int      // message bodies the bridge processed, and how often
	txns    map[string][]string // transaction ID -> event IDs, for each 200 answered
	reused  map[string]int      // transaction IDs received more than once
	eventTx map[string]string   // event ID -> the transaction that carried it

	// hold, when set, is a body whose transaction's answer is held back
	// (after mautrix has processed it) until release is closed; held is
	// closed when that happens.
	hold    string
	held    chan struct{}
	release chan struct{}
}

func newTestBridge(t *testing.T, hsURL string, reg *mas.Registration, ln net.Listener) *testBridge {
	as, err := mas.CreateFull(mas.CreateOpts{Registration: reg, HomeserverDomain: "localhost", HomeserverURL: hsURL,
		HostConfig: mas.HostConfig{Hostname: "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	b := &testBridge{t: t, as: as, addr: ln.Addr().String(), bodies: map[string]int{}, txns: map[string][]string{},
		reused: map[string]int{}, eventTx: map[string]string{}}
	as.QueryHandler = bridgeQueries{b}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case evt := <-as.Events:
				if evt.Type != event.EventMessage {
					continue
				}
				b.mu.Lock()
				b.bodies[evt.Content.AsMessage().Body]++
				b.mu.Unlock()
			}
		}
	}()
	b.serve(ln)
	t.Cleanup(b.stop)
	return b
}

// bridgeQueries creates the portal room when the homeserver asks for its
// alias, as bridges do.
type bridgeQueries struct{ b *testBridge }

func (q bridgeQueries) QueryAlias(alias id.RoomAlias) bool {
	if alias != "#_mx_portal:localhost" {
		return false
	}
	_, err := q.b.as.BotClient().CreateRoom(context.Background(), &mautrix.ReqCreateRoom{RoomAliasName: "_mx_portal", Preset: "public_chat", Name: "Portal"})
	if err != nil {
		q.b.t.Errorf("bridge creating the portal: %v", err)
	}
	return err == nil
}

// QueryUser creates the ghosts of "remote" users the bridge knows.
func (q bridgeQueries) QueryUser(userID id.UserID) bool {
	if userID != "@_mx_queried:localhost" {
		return false
	}
	intent := q.b.as.Intent(userID)
	if err := intent.EnsureRegistered(context.Background()); err != nil {
		q.b.t.Errorf("bridge creating a ghost: %v", err)
		return false
	}
	if err := intent.SetDisplayName(context.Background(), "Queried Ghost"); err != nil {
		q.b.t.Errorf("bridge naming a ghost: %v", err)
		return false
	}
	return true
}

func (b *testBridge) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(b.handle)}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (b *testBridge) stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// restart listens on the same address again.
func (b *testBridge) restart() {
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.serve(ln)
}

// handle passes every request to mautrix and records the transactions it
// accepted.
func (b *testBridge) handle(w http.ResponseWriter, r *http.Request) {
	txnID, isTxn := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
	if !isTxn {
		b.as.Router.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var txn struct {
		Events []struct {
			EventID string `json:"event_id"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"events"`
	}
	_ = json.Unmarshal(body, &txn)
	rec := httptest.NewRecorder()
	b.as.Router.ServeHTTP(rec, r)
	var ids []string
	held := false
	for _, e := range txn.Events {
		ids = append(ids, e.EventID)
		held = held || (b.hold != "" && e.Content.Body == b.hold)
	}
	b.mu.Lock()
	if rec.Code == http.StatusOK {
		if prev, ok := b.txns[txnID]; ok {
			b.reused[txnID]++
			if strings.Join(prev, ",") != strings.Join(ids, ",") {
				b.t.Errorf("transaction %s sent again with other events: %v, then %v", txnID, prev, ids)
			}
		}
		b.txns[txnID] = ids
		for _, e := range ids {
			if other, ok := b.eventTx[e]; ok && other != txnID {
				b.t.Errorf("event %s sent in transactions %s and %s", e, other, txnID)
			}
			b.eventTx[e] = txnID
		}
	}
	release := b.release
	if held {
		b.hold = ""
		close(b.held)
	}
	b.mu.Unlock()
	if held {
		<-release // the homeserver's side gives up meanwhile: the answer is lost
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (b *testBridge) count(body string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bodies[body]
}

// TestAppserviceMautrixBridge is the end-to-end test: a bridge on
// mautrix-go registers a ghost that joins a room and talks, receives a
// person's reply in a transaction, resolves an alias of its namespace when
// the homeserver asks it, receives once what was sent while it was down,
// and loses and repeats nothing when the appservice role restarts with a
// transaction in flight.
func TestAppserviceMautrixBridge(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The bridge writes its registration file as bridges do; Strand reads
	// that file.
	reg := mas.CreateRegistration()
	reg.ID = "mxbridge"
	reg.URL = "http://" + ln.Addr().String()
	reg.SenderLocalpart = "_mx_bot"
	noLimit := false
	reg.RateLimited = &noLimit
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(`@_mx_.*:localhost`), true)
	reg.Namespaces.RoomAliases.Register(regexp.MustCompile(`#_mx_.*:localhost`), true)
	y, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	set := appserviceSet(t, y)
	cfg := apitest.DefaultConfig()
	cfg.Appservices = set
	hs := env.Serve(cfg)
	stopWorker := env.AppserviceWorker(set)
	bridge := newTestBridge(t, hs.URL, reg, ln)
	ctx := context.Background()

	bob := apitest.NewClient(t, hs.URL)
	bob.Register("bob", "pw")
	room := bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")

	// The ghost: registered by the bridge, joins, talks.
	ghost := bridge.as.Intent("@_mx_alice:localhost")
	if err := ghost.EnsureRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ghost.EnsureJoined(ctx, id.RoomID(room)); err != nil {
		t.Fatal(err)
	}
	if _, err := ghost.SendText(ctx, id.RoomID(room), "hello from the bridge"); err != nil {
		t.Fatal(err)
	}
	msgs := bob.MustDo("GET", "/_matrix/client/v3/rooms/"+esc(room)+"/messages?dir=b&limit=5", nil)
	if !strings.Contains(string(msgs.Raw), "hello from the bridge") || !strings.Contains(string(msgs.Raw), "@_mx_alice:localhost") {
		t.Fatalf("the ghost's message is not in the room: %s", msgs.Raw)
	}

	// A person's reply reaches the bridge in a transaction.
	send := func(body string) {
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/"+esc(body), map[string]any{"msgtype": "m.text", "body": body})
	}
	send("reply from bob")
	waitFor(t, "the reply at the bridge", func() bool { return bridge.count("reply from bob") == 1 })

	// An alias of the bridge's namespace is resolved through the bridge.
	r := bob.MustDo("GET", "/_matrix/client/v3/directory/room/"+esc("#_mx_portal:localhost"), nil)
	portal := r.Str("room_id")
	if portal == "" {
		t.Fatalf("alias: %s", r.Raw)
	}
	bob.MustDo("POST", "/_matrix/client/v3/join/"+esc("#_mx_portal:localhost"), nil)
	if r := bob.Do("GET", "/_matrix/client/v3/directory/room/"+esc("#_mx_unknown:localhost"), nil); r.Status != 404 {
		t.Fatalf("an alias the bridge does not know: %d %s", r.Status, r.Raw)
	}

	// A user of the namespace nobody has seen yet: the bridge is asked
	// and creates it.
	if r := bob.MustDo("GET", "/_matrix/client/v3/profile/"+esc("@_mx_queried:localhost"), nil); r.Str("displayname") != "Queried Ghost" {
		t.Fatalf("profile of a queried ghost: %s", r.Raw)
	}
	if r := bob.Do("GET", "/_matrix/client/v3/profile/"+esc("@_mx_nobody:localhost"), nil); r.Status != 404 {
		t.Fatalf("profile of a user the bridge does not know: %d %s", r.Status, r.Raw)
	}

	// The bridge is down while three messages are sent; it gets each once
	// when it is back.
	bridge.stop()
	for i := 1; i <= 3; i++ {
		send("while down " + strconv.Itoa(i))
	}
	bridge.restart()
	send("back again")
	waitFor(t, "the messages sent while the bridge was down", func() bool { return bridge.count("back again") == 1 })
	for i := 1; i <= 3; i++ {
		if n := bridge.count("while down " + strconv.Itoa(i)); n != 1 {
			t.Fatalf("message %d sent while the bridge was down arrived %d times", i, n)
		}
	}

	// The appservice role stops while a transaction is in flight: the
	// bridge has processed it, but its answer is lost. The next worker
	// sends the same transaction again (the bridge ignores it, as it knows
	// the ID), then everything after it, once.
	bridge.mu.Lock()
	bridge.hold, bridge.held, bridge.release = "mid-stream 1", make(chan struct{}), make(chan struct{})
	held, release := bridge.held, bridge.release
	bridge.mu.Unlock()
	send("mid-stream 1")
	<-held
	stopWorker()
	close(release)
	send("mid-stream 2")
	send("mid-stream 3")
	env.AppserviceWorker(set)
	send("final")
	waitFor(t, "the messages after the restart", func() bool { return bridge.count("final") == 1 })
	for _, body := range []string{"hello from the bridge", "reply from bob", "mid-stream 1", "mid-stream 2", "mid-stream 3", "final"} {
		if n := bridge.count(body); n != 1 {
			t.Fatalf("%q reached the bridge %d times", body, n)
		}
	}
	bridge.mu.Lock()
	reused := len(bridge.reused)
	bridge.mu.Unlock()
	if reused == 0 {
		t.Fatal("the transaction in flight when the worker stopped was not sent again")
	}

	// The bridge pings the homeserver, which calls the bridge.
	var pingErr error
	if _, pingErr = bridge.as.BotClient().AppservicePing(ctx, reg.ID, "meow"); pingErr != nil {
		var httpErr mautrix.HTTPError
		if errors.As(pingErr, &httpErr) {
			t.Fatalf("ping: %v", httpErr)
		}
		t.Fatal(pingErr)
	}
}
