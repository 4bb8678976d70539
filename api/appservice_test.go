package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"strand/api"
	"strand/api/apitest"
	"strand/api/appservice"
)

// appserviceSet parses registration YAML for server "localhost".
func appserviceSet(t *testing.T, yamls ...string) *appservice.Set {
	t.Helper()
	var regs []*appservice.Registration
	for _, y := range yamls {
		r, err := appservice.Parse([]byte(y), "localhost")
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	set, err := appservice.NewSet(regs)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func bridgeYAML(url string) string {
	return `id: bridge
url: ` + url + `
as_token: as_secret
hs_token: hs_secret
sender_localpart: bridgebot
rate_limited: false
protocols: [chat]
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:localhost"
  aliases:
    - exclusive: true
      regex: "#bridge_.*:localhost"
  rooms: []
`
}

// TestAppserviceNamespaces covers the client-server side: the as_token,
// masquerading inside and outside the namespace, registration and login
// of namespace users, and M_EXCLUSIVE for people and for the service; then
// replay equivalence with the service's users and aliases on the log.
func TestAppserviceNamespaces(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.Appservices = appserviceSet(t, bridgeYAML("null"))
	base := env.API(cfg).URL
	as := apitest.NewClient(t, base).As("as_secret")
	anon := apitest.NewClient(t, base)

	// The sender exists from the start; the bare as_token acts as it.
	if r := as.MustDo("GET", "/_matrix/client/v3/account/whoami", nil); r.Str("user_id") != "@bridgebot:localhost" {
		t.Fatalf("whoami as the service: %s", r.Raw)
	}

	// People may not take the service's exclusive namespace.
	r := anon.Do("POST", "/_matrix/client/v3/register", map[string]any{"username": "bridge_x", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}})
	if r.Status != 400 || r.Errcode() != "M_EXCLUSIVE" {
		t.Fatalf("register in an exclusive namespace: %d %s", r.Status, r.Raw)
	}
	if r := anon.Do("GET", "/_matrix/client/v3/register/available?username=bridge_x", nil); r.Errcode() != "M_EXCLUSIVE" {
		t.Fatalf("available in an exclusive namespace: %s", r.Raw)
	}
	if r := anon.Do("POST", "/_matrix/client/v3/register", map[string]any{"username": "bridgebot", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}}); r.Errcode() != "M_EXCLUSIVE" {
		t.Fatalf("register as the sender: %s", r.Raw)
	}

	// The service registers users of its namespace only, and only with
	// its token.
	asReg := func(c *apitest.Client, user string, inhibit bool) apitest.Response {
		return c.Do("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": user, "inhibit_login": inhibit})
	}
	if r := asReg(as, "alice", true); r.Status != 400 || r.Errcode() != "M_EXCLUSIVE" {
		t.Fatalf("service registers outside its namespace: %d %s", r.Status, r.Raw)
	}
	if r := asReg(anon, "bridge_ghost", true); r.Status != 401 || r.Errcode() != "M_MISSING_TOKEN" {
		t.Fatalf("service registration without a token: %d %s", r.Status, r.Raw)
	}
	if r := asReg(anon.As("nope"), "bridge_ghost", true); r.Status != 401 || r.Errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("service registration with a wrong token: %d %s", r.Status, r.Raw)
	}
	if r := asReg(as, "bridge_ghost", true); r.Status != 200 || r.Str("user_id") != "@bridge_ghost:localhost" || r.Str("access_token") != "" {
		t.Fatalf("service registers a ghost: %d %s", r.Status, r.Raw)
	}
	if r := asReg(as, "bridge_ghost", true); r.Errcode() != "M_USER_IN_USE" {
		t.Fatalf("registering the ghost again: %s", r.Raw)
	}
	// With login, the ghost gets a token of its own.
	if r := asReg(as, "bridge_other", false); r.Str("access_token") == "" || r.Str("device_id") == "" {
		t.Fatalf("service registration with login: %s", r.Raw)
	}

	alice := apitest.NewClient(t, base)
	alice.Register("alice", "pw")

	// Masquerading: inside the namespace yes, outside 403.
	ghost := "@bridge_ghost:localhost"
	if r := as.MustDo("GET", "/_matrix/client/v3/account/whoami?user_id="+esc(ghost), nil); r.Str("user_id") != ghost {
		t.Fatalf("masquerade as the ghost: %s", r.Raw)
	}
	if r := as.Do("GET", "/_matrix/client/v3/account/whoami?user_id="+esc(alice.UserID), nil); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("masquerade outside the namespace: %d %s", r.Status, r.Raw)
	}
	if r := as.Do("GET", "/_matrix/client/v3/account/whoami?user_id="+esc("@bridge_nobody:localhost"), nil); r.Status != 403 {
		t.Fatalf("masquerade as an unregistered user: %d %s", r.Status, r.Raw)
	}
	if r := as.Do("GET", "/_matrix/client/v3/account/whoami?user_id="+esc(ghost)+"&device_id=NOPE", nil); r.Status != 400 || r.Errcode() != "M_UNKNOWN_DEVICE" {
		t.Fatalf("masquerade with an unknown device: %d %s", r.Status, r.Raw)
	}
	// A person's token with ?user_id= is still that person.
	if r := alice.MustDo("GET", "/_matrix/client/v3/account/whoami?user_id="+esc(ghost), nil); r.Str("user_id") != alice.UserID {
		t.Fatalf("user_id with a person's token: %s", r.Raw)
	}

	// Login as a namespace user, without password.
	login := func(user string) apitest.Response {
		return as.Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.application_service",
			"identifier": map[string]any{"type": "m.id.user", "user": user}, "device_id": "GHOSTDEV"})
	}
	lr := login("bridge_ghost")
	if lr.Status != 200 || lr.Str("user_id") != ghost {
		t.Fatalf("service login: %d %s", lr.Status, lr.Raw)
	}
	if r := apitest.NewClient(t, base).As(lr.Str("access_token")).MustDo("GET", "/_matrix/client/v3/account/whoami", nil); r.Str("user_id") != ghost {
		t.Fatalf("ghost's own token: %s", r.Raw)
	}
	if r := as.MustDo("GET", "/_matrix/client/v3/account/whoami?user_id="+esc(ghost)+"&device_id=GHOSTDEV", nil); r.Str("device_id") != "GHOSTDEV" {
		t.Fatalf("masquerade with a device: %s", r.Raw)
	}
	// What needs a device needs device_id from a service.
	if r := as.Do("POST", "/_matrix/client/v3/keys/upload?user_id="+esc(ghost), map[string]any{}); r.Status != 400 {
		t.Fatalf("key upload without a device: %d %s", r.Status, r.Raw)
	}
	if r := as.Do("POST", "/_matrix/client/v3/logout?user_id="+esc(ghost), nil); r.Status != 400 {
		t.Fatalf("logout without a device: %d %s", r.Status, r.Raw)
	}
	as.MustDo("POST", "/_matrix/client/v3/keys/upload?user_id="+esc(ghost)+"&device_id=GHOSTDEV", map[string]any{})
	if r := login("alice"); r.Status != 400 || r.Errcode() != "M_EXCLUSIVE" {
		t.Fatalf("service login outside its namespace: %d %s", r.Status, r.Raw)
	}
	if r := apitest.NewClient(t, base).Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.application_service",
		"identifier": map[string]any{"type": "m.id.user", "user": "bridge_ghost"}}); r.Status != 401 {
		t.Fatalf("service login without the token: %d %s", r.Status, r.Raw)
	}

	// Aliases: people may not create them in the exclusive namespace,
	// the service may create only its own.
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	if r := alice.Do("PUT", "/_matrix/client/v3/directory/room/"+esc("#bridge_a:localhost"), map[string]any{"room_id": room}); r.Status != 400 || r.Errcode() != "M_EXCLUSIVE" {
		t.Fatalf("person's alias in an exclusive namespace: %d %s", r.Status, r.Raw)
	}
	if r := alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{"room_alias_name": "bridge_b"}); r.Status != 400 || r.Errcode() != "M_EXCLUSIVE" {
		t.Fatalf("createRoom alias in an exclusive namespace: %d %s", r.Status, r.Raw)
	}
	alice.MustDo("PUT", "/_matrix/client/v3/directory/room/"+esc("#free:localhost"), map[string]any{"room_id": room})
	as.MustDo("POST", "/_matrix/client/v3/join/"+esc(room)+"?user_id="+esc(ghost), nil)
	as.MustDo("PUT", "/_matrix/client/v3/directory/room/"+esc("#bridge_c:localhost")+"?user_id="+esc(ghost), map[string]any{"room_id": room})
	if r := as.Do("PUT", "/_matrix/client/v3/directory/room/"+esc("#elsewhere:localhost")+"?user_id="+esc(ghost), map[string]any{"room_id": room}); r.Errcode() != "M_EXCLUSIVE" {
		t.Fatalf("service alias outside its namespace: %s", r.Raw)
	}
	ghostMsg := as.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/t1?user_id="+esc(ghost), map[string]any{"msgtype": "m.text", "body": "from the ghost"}).Str("event_id")
	// Timestamp massaging: the service sets origin_server_ts; a person's
	// ts means nothing.
	evID := as.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/t2?ts=1234567&user_id="+esc(ghost), map[string]any{"msgtype": "m.text", "body": "old"}).Str("event_id")
	if r := alice.MustDo("GET", "/_matrix/client/v3/rooms/"+esc(room)+"/event/"+esc(evID), nil); r.Body["origin_server_ts"] != float64(1234567) {
		t.Fatalf("massaged timestamp: %s", r.Raw)
	}
	if r := as.Do("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/t3?ts=soon&user_id="+esc(ghost), map[string]any{"msgtype": "m.text", "body": "x"}); r.Status != 400 {
		t.Fatalf("bad ts: %d %s", r.Status, r.Raw)
	}
	evID = alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/p1?ts=1234567", map[string]any{"msgtype": "m.text", "body": "now"}).Str("event_id")
	if r := alice.MustDo("GET", "/_matrix/client/v3/rooms/"+esc(room)+"/event/"+esc(evID), nil); r.Body["origin_server_ts"] == float64(1234567) {
		t.Fatal("a person set the timestamp")
	}
	// The service manages its namespace's aliases, also as its sender.
	as.MustDo("POST", "/_matrix/client/v3/join/"+esc(room), nil)
	as.MustDo("DELETE", "/_matrix/client/v3/directory/room/"+esc("#bridge_c:localhost"), nil)
	as.MustDo("PUT", "/_matrix/client/v3/directory/room/"+esc("#bridge_d:localhost"), map[string]any{"room_id": room})

	dump := projectionReplays(t, env, 3)
	// The message by its event ID: the dump shows event JSON encoded, and
	// no column holds its body as text since migration 0018.
	if ghostMsg == "" {
		t.Fatal("the ghost's message has no event ID")
	}
	for _, want := range []string{"@bridgebot:localhost", ghost, "#bridge_d:localhost", ghostMsg} {
		if !strings.Contains(dump, want) {
			t.Fatalf("dump lacks %s", want)
		}
	}
}

// TestAppserviceRateLimits: the service's users are not limited when the
// registration says rate_limited: false; people are.
func TestAppserviceRateLimits(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.Appservices = appserviceSet(t, bridgeYAML("null"))
	limits := api.DefaultRateLimits()
	limits.Message = api.Limit{Rate: 0.001, Burst: 2}
	cfg.RateLimits = &limits
	base := env.API(cfg).URL
	as := apitest.NewClient(t, base).As("as_secret")
	alice := apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	ghost := "@bridge_ghost:localhost"
	as.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "bridge_ghost", "inhibit_login": true})
	as.MustDo("POST", "/_matrix/client/v3/join/"+esc(room)+"?user_id="+esc(ghost), nil)
	limited := false
	for i := range 4 {
		r := alice.Do("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/a"+string(rune('0'+i)), map[string]any{"msgtype": "m.text", "body": "x"})
		limited = limited || r.Status == 429
	}
	if !limited {
		t.Fatal("a person was not limited")
	}
	for i := range 4 {
		as.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/g"+string(rune('0'+i))+"?user_id="+esc(ghost), map[string]any{"msgtype": "m.text", "body": "x"})
	}
}

// fakeService is an application service that records the transactions
// it is sent and accepts them only with the hs_token it expects.
type fakeService struct {
	mu      sync.Mutex
	hsToken string
	// txns in arrival order: ID, the event IDs, and the status answered.
	txns []fakeTxn
	srv  *httptest.Server
}

type fakeTxn struct {
	ID     string
	Events []string
	Bodies []string
	Status int
	// Ephemeral holds "type room_id/sender content" of each ephemeral
	// event.
	Ephemeral []string
}

func newFakeService(t *testing.T, hsToken string) *fakeService {
	f := &fakeService{hsToken: hsToken}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeService) setToken(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hsToken = tok
}

func (f *fakeService) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+f.hsToken {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"errcode":"M_FORBIDDEN"}`)
		if strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") {
			f.txns = append(f.txns, fakeTxn{ID: strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"), Status: 403})
		}
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"):
		var body struct {
			Events []struct {
				EventID string         `json:"event_id"`
				Content map[string]any `json:"content"`
			} `json:"events"`
			ToDevice []struct {
				Type     string          `json:"type"`
				ToUser   string          `json:"to_user_id"`
				ToDevice string          `json:"to_device_id"`
				Content  json.RawMessage `json:"content"`
			} `json:"to_device"`
			Ephemeral []struct {
				Type    string          `json:"type"`
				RoomID  string          `json:"room_id"`
				Sender  string          `json:"sender"`
				Content json.RawMessage `json:"content"`
			} `json:"ephemeral"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(400)
			return
		}
		txn := fakeTxn{ID: strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"), Status: 200}
		for _, e := range body.Events {
			txn.Events = append(txn.Events, e.EventID)
			b, _ := e.Content["body"].(string)
			txn.Bodies = append(txn.Bodies, b)
		}
		for _, e := range body.Ephemeral {
			txn.Ephemeral = append(txn.Ephemeral, e.Type+" "+e.RoomID+e.Sender+" "+string(e.Content))
		}
		for _, e := range body.ToDevice {
			txn.Ephemeral = append(txn.Ephemeral, "to_device "+e.Type+" "+e.ToUser+" "+e.ToDevice+" "+string(e.Content))
		}
		f.txns = append(f.txns, txn)
		_, _ = io.WriteString(w, `{}`)
	case r.URL.Path == "/_matrix/app/v1/ping":
		_, _ = io.WriteString(w, `{}`)
	case r.URL.Path == "/_matrix/app/v1/thirdparty/protocol/chat":
		_, _ = io.WriteString(w, `{"user_fields":["nick"],"location_fields":["channel"],"icon":"mxc://x/y","field_types":{},"instances":[]}`)
	case r.URL.Path == "/_matrix/app/v1/thirdparty/user/chat":
		_, _ = io.WriteString(w, `[{"userid":"@bridge_`+r.URL.Query().Get("nick")+`:localhost","protocol":"chat","fields":{"nick":"`+r.URL.Query().Get("nick")+`"}}]`)
	case r.URL.Path == "/_matrix/app/v1/thirdparty/location":
		_, _ = io.WriteString(w, `[{"alias":"`+r.URL.Query().Get("alias")+`","protocol":"chat","fields":{}}]`)
	default:
		w.WriteHeader(404)
		_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED"}`)
	}
}

func (f *fakeService) snapshot() []fakeTxn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.txns)
}

// delivered returns the bodies of the events the service accepted, in
// the order accepted, one per transaction ID (a repeated ID counts once,
// as the spec lets a service ignore it).
func (f *fakeService) delivered() []string {
	var out []string
	seen := map[string]bool{}
	for _, tx := range f.snapshot() {
		if tx.Status == 200 && !seen[tx.ID] {
			seen[tx.ID] = true
			out = append(out, tx.Bodies...)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAppserviceBadHSTokenRetried: a service that refuses the
// homeserver's token (403) has not received the transaction; it is sent
// again, with the same ID and the same events, until the service takes
// it, and later events follow in order.
func TestAppserviceBadHSTokenRetried(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	svc := newFakeService(t, "some other token")
	cfg := apitest.DefaultConfig()
	set := appserviceSet(t, bridgeYAML(svc.srv.URL))
	cfg.Appservices = set
	base := env.API(cfg).URL
	as := apitest.NewClient(t, base).As("as_secret")
	alice := apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/0", map[string]any{"msgtype": "m.text", "body": "before the service"})
	env.AppserviceWorker(set)
	as.MustDo("POST", "/_matrix/client/v3/join/"+esc(room), nil)
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "first"})

	waitFor(t, "refused attempts", func() bool {
		n := 0
		for _, tx := range svc.snapshot() {
			if tx.Status == 403 {
				n++
			}
		}
		return n >= 3
	})
	refused := svc.snapshot()
	first := refused[0].ID
	for _, tx := range refused {
		if tx.ID != first {
			t.Fatalf("a refused transaction was followed by another ID: %+v", refused)
		}
	}
	svc.setToken("hs_secret")
	waitFor(t, "the transaction to be accepted", func() bool { return slices.Contains(svc.delivered(), "first") })
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/2", map[string]any{"msgtype": "m.text", "body": "second"})
	waitFor(t, "the next message", func() bool { return slices.Contains(svc.delivered(), "second") })

	txns := svc.snapshot()
	var accepted *fakeTxn
	for i := range txns {
		if txns[i].Status == 200 {
			accepted = &txns[i]
			break
		}
	}
	if accepted.ID != first || len(accepted.Events) == 0 {
		t.Fatalf("the accepted transaction is not the refused one: %+v", txns)
	}
	if got := svc.delivered(); slices.Index(got, "first") > slices.Index(got, "second") || countOf(got, "first") != 1 || countOf(got, "second") != 1 ||
		slices.Contains(got, "before the service") {
		t.Fatalf("delivered %v", got)
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// TestAppservicePingAndThirdParty: the ping endpoint reports the
// service's answer, and third-party lookups are answered by the service.
func TestAppservicePingAndThirdParty(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	svc := newFakeService(t, "hs_secret")
	cfg := apitest.DefaultConfig()
	other := strings.NewReplacer("id: bridge", "id: other", "as_secret", "as_other", "hs_secret", "hs_other",
		"bridgebot", "otherbot", "bridge_", "other_", "[chat]", "[]").Replace(bridgeYAML(svc.srv.URL))
	cfg.Appservices = appserviceSet(t, bridgeYAML(svc.srv.URL), other)
	base := env.API(cfg).URL
	as := apitest.NewClient(t, base).As("as_secret")
	ping := "/_matrix/client/v1/appservice/bridge/ping"
	if r := as.MustDo("POST", ping, map[string]any{"transaction_id": "meow"}); r.Body["duration_ms"] == nil {
		t.Fatalf("ping: %s", r.Raw)
	}
	if r := as.As("as_other").Do("POST", ping, map[string]any{}); r.Status != 403 {
		t.Fatalf("ping with another service's token: %d %s", r.Status, r.Raw)
	}
	// The service refuses the homeserver's token.
	svc.setToken("changed")
	if r := as.Do("POST", ping, map[string]any{}); r.Status != 502 || r.Errcode() != "M_BAD_STATUS" || r.Body["status"] != float64(403) {
		t.Fatalf("ping refused by the service: %d %s", r.Status, r.Raw)
	}
	svc.setToken("hs_secret")

	alice := apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	if r := alice.MustDo("GET", "/_matrix/client/v3/thirdparty/protocols", nil); r.Body["chat"] == nil || len(r.Body) != 1 {
		t.Fatalf("protocols: %s", r.Raw)
	}
	if r := alice.MustDo("GET", "/_matrix/client/v3/thirdparty/protocol/chat", nil); r.Body["user_fields"] == nil {
		t.Fatalf("protocol: %s", r.Raw)
	}
	if r := alice.Do("GET", "/_matrix/client/v3/thirdparty/protocol/none", nil); r.Status != 404 {
		t.Fatalf("unknown protocol: %d", r.Status)
	}
	if r := alice.MustDo("GET", "/_matrix/client/v3/thirdparty/user/chat?nick=bob", nil); !strings.Contains(string(r.Raw), "@bridge_bob:localhost") {
		t.Fatalf("third-party user: %s", r.Raw)
	}
	if r := alice.MustDo("GET", "/_matrix/client/v3/thirdparty/location?alias="+esc("#bridge_x:localhost"), nil); !strings.Contains(string(r.Raw), "#bridge_x:localhost") {
		t.Fatalf("third-party location: %s", r.Raw)
	}

	// A service that cannot be reached.
	svc.srv.Close()
	if r := as.Do("POST", ping, map[string]any{}); r.Status != 502 || r.Errcode() != "M_CONNECTION_FAILED" {
		t.Fatalf("ping of a service that is down: %d %s", r.Status, r.Raw)
	}
}

// TestAppserviceEphemeral: a service with receive_ephemeral gets typing
// notices and receipts of the rooms it is interested in, and presence of
// the users there, in the ephemeral part of its transactions; nothing of
// rooms it is not interested in, and private receipts only of its users.
func TestAppserviceEphemeral(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	svc := newFakeService(t, "hs_secret")
	cfg := apitest.DefaultConfig()
	set := appserviceSet(t, strings.Replace(bridgeYAML(svc.srv.URL), "rate_limited: false", "receive_ephemeral: true", 1))
	cfg.Appservices = set
	base := env.API(cfg).URL
	env.AppserviceWorker(set)
	as := apitest.NewClient(t, base).As("as_secret")
	alice := apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	elsewhere := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	as.MustDo("POST", "/_matrix/client/v3/join/"+esc(room), nil)

	// Not of interest: a room without the service's users.
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(elsewhere)+"/typing/"+esc(alice.UserID), map[string]any{"typing": true, "timeout": 30000})
	ev0 := alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(elsewhere)+"/send/m.room.message/e0", map[string]any{"msgtype": "m.text", "body": "elsewhere"}).Str("event_id")
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+esc(elsewhere)+"/receipt/m.read/"+esc(ev0), map[string]any{})

	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/typing/"+esc(alice.UserID), map[string]any{"typing": true, "timeout": 30000})
	ev := alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/e1", map[string]any{"msgtype": "m.text", "body": "hi"}).Str("event_id")
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+esc(room)+"/receipt/m.read.private/"+esc(ev), map[string]any{})
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+esc(room)+"/receipt/m.read/"+esc(ev), map[string]any{})
	alice.MustDo("PUT", "/_matrix/client/v3/presence/"+esc(alice.UserID)+"/status", map[string]any{"presence": "online", "status_msg": "here"})
	// To-device messages to the service's users (MSC2409), "*" expanded.
	dev := as.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "bridge_dev"}).Str("device_id")
	alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test/td1", map[string]any{"messages": map[string]any{
		"@bridge_dev:localhost": map[string]any{"*": map[string]any{"n": 1}}, alice.UserID: map[string]any{"*": map[string]any{"n": 2}}}})

	ephemeral := func() []string {
		var out []string
		seen := map[string]bool{}
		for _, tx := range svc.snapshot() {
			if tx.Status == 200 && !seen[tx.ID] {
				seen[tx.ID] = true
				out = append(out, tx.Ephemeral...)
			}
		}
		return out
	}
	has := func(prefix string) bool {
		return slices.ContainsFunc(ephemeral(), func(e string) bool { return strings.HasPrefix(e, prefix) })
	}
	waitFor(t, "typing, receipt and presence", func() bool {
		return has("m.typing "+room+` {"user_ids":["`+alice.UserID+`"]}`) && has("m.receipt "+room+` {"`+ev+`":{"m.read":`) && has("m.presence "+alice.UserID) &&
			has("to_device m.test @bridge_dev:localhost "+dev+` {"n":1}`)
	})
	// The later events are there, so the earlier ones of no interest
	// would be too: each lane is in order.
	for _, e := range ephemeral() {
		if strings.Contains(e, elsewhere) || strings.Contains(e, "m.read.private") || strings.Contains(e, `{"n":2}`) {
			t.Fatalf("delivered %q", e)
		}
	}
}

// refusingService starts a server with the bridge service registered and
// its worker running, the service refusing every transaction (its
// hs_token not yet set), and alice registered with a public room. It
// returns the service, the service's client, alice and the room.
func refusingService(t *testing.T) (*fakeService, *apitest.Client, *apitest.Client, string) {
	t.Helper()
	env := apitest.New(t)
	env.Projector()
	svc := newFakeService(t, "not yet")
	cfg := apitest.DefaultConfig()
	set := appserviceSet(t, bridgeYAML(svc.srv.URL))
	cfg.Appservices = set
	base := env.API(cfg).URL
	env.AppserviceWorker(set)
	as := apitest.NewClient(t, base).As("as_secret")
	alice := apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	return svc, as, alice, room
}

// TestAppserviceMembershipAsOfEvent: whether a room concerns a service
// through a joined namespace user is decided as of each event, so what
// was said while a ghost was in the room is delivered even when the
// service reads it after the ghost has left, and nothing after.
func TestAppserviceMembershipAsOfEvent(t *testing.T) {
	svc, as, alice, room := refusingService(t)
	ghost := "@bridge_ghost:localhost"
	as.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "bridge_ghost", "inhibit_login": true})
	// The service is refusing everything while the ghost comes and goes.
	as.MustDo("POST", "/_matrix/client/v3/join/"+esc(room)+"?user_id="+esc(ghost), nil)
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "while the ghost is there"})
	as.MustDo("POST", "/_matrix/client/v3/rooms/"+esc(room)+"/leave?user_id="+esc(ghost), nil)
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/2", map[string]any{"msgtype": "m.text", "body": "after the ghost left"})
	as.MustDo("POST", "/_matrix/client/v3/join/"+esc(room), nil) // the sender: the room concerns the service again
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/3", map[string]any{"msgtype": "m.text", "body": "with the bot"})
	svc.setToken("hs_secret")
	waitFor(t, "the last message", func() bool { return slices.Contains(svc.delivered(), "with the bot") })
	got := svc.delivered()
	if !slices.Contains(got, "while the ghost is there") || slices.Contains(got, "after the ghost left") {
		t.Fatalf("delivered %q", got)
	}
}

// TestAppserviceLargeRecordsSplit: records waiting for a service that was
// down are sent in several transactions when they are large (each built
// from at most 256 KiB of records), in order, each event once.
func TestAppserviceLargeRecordsSplit(t *testing.T) {
	svc, as, alice, room := refusingService(t)
	as.MustDo("POST", "/_matrix/client/v3/join/"+esc(room), nil)
	pad := strings.Repeat("x", 50000)
	var want []string
	for i := range 12 {
		body := fmt.Sprintf("big %02d %s", i, pad)
		want = append(want, body[:6])
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/"+fmt.Sprint(i), map[string]any{"msgtype": "m.text", "body": body})
	}
	svc.setToken("hs_secret")
	var got []string
	waitFor(t, "every large message", func() bool {
		got = got[:0]
		for _, b := range svc.delivered() {
			if strings.HasPrefix(b, "big ") {
				got = append(got, b[:6])
			}
		}
		return len(got) >= len(want)
	})
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	txns := map[string]bool{}
	for _, tx := range svc.snapshot() {
		if tx.Status == 200 && slices.ContainsFunc(tx.Bodies, func(b string) bool { return strings.HasPrefix(b, "big ") }) {
			txns[tx.ID] = true
		}
	}
	if len(txns) < 3 {
		t.Fatalf("600 KB of records went in %d transactions", len(txns))
	}
}
