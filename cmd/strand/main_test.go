package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs "strand serve" in this process until the returned stop.
func startServe(t *testing.T, args ...string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, append([]string{"serve", "--bcrypt-cost", "4", "--log-level", "error"}, args...))
	}()
	var addr string
	for i, a := range args {
		if a == "--listen" {
			addr = args[i+1]
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/_matrix/client/versions")
		if err == nil {
			res.Body.Close()
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("strand serve exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("strand serve did not start listening")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("strand serve did not stop")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// One command, embedded JetStream, the guide's account steps; then a
// restart on the same data directory keeps the account, and "strand
// replay" rebuilds an identical projection from the embedded store.
func TestServeGuideRestartReplay(t *testing.T) {
	dataDir := t.TempDir()
	dbURL := storetest.NewURL(t)
	addr := freeAddr(t)
	stop := startServe(t, "--listen", addr, "--data-dir", dataDir, "--database-url", dbURL)

	c := apitest.NewClient(t, "http://"+addr)
	r := c.MustDo("POST", "/_matrix/client/r0/register", `{"username":"example", "password":"wordpass", "auth": {"type":"m.login.dummy"}}`)
	if r.Str("user_id") != "@example:localhost" {
		t.Fatalf("register: %s", r.Raw)
	}
	tok := c.MustDo("POST", "/_matrix/client/r0/login", `{"type":"m.login.password", "user":"example", "password":"wordpass"}`).Str("access_token")
	c.MustDo("GET", "/_matrix/client/r0/account/whoami?access_token="+tok, nil)
	guideRoomAndSyncSteps(t, c.As(""), tok)
	if err := stop(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}

	stop = startServe(t, "--listen", addr, "--data-dir", dataDir, "--database-url", dbURL)
	c.MustDo("GET", "/_matrix/client/v3/account/whoami?access_token="+tok, nil)
	c.MustDo("POST", "/_matrix/client/v3/login", `{"type":"m.login.password", "user":"example", "password":"wordpass"}`)
	if err := stop(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}

	replayURL := storetest.NewURL(t)
	if err := run(context.Background(), []string{"replay", "--data-dir", dataDir, "--database-url", replayURL}); err != nil {
		t.Fatalf("replay: %v", err)
	}
	ctx := context.Background()
	if a := sameProjection(ctx, t, dbURL, replayURL); !strings.Contains(a, "@example:localhost") {
		t.Fatalf("the projection lacks the account:\n%s", a)
	}

	// The benchmark's replay scenario: same rebuild, checked against the
	// live projection; refused into a database that is not empty.
	benchURL := storetest.NewURL(t)
	if err := run(ctx, []string{"bench", "--scenario", "replay", "--data-dir", dataDir,
		"--replay-database-url", benchURL, "--compare-database-url", dbURL}); err != nil {
		t.Fatalf("bench --scenario replay: %v", err)
	}
	if err := run(ctx, []string{"bench", "--scenario", "replay", "--data-dir", dataDir,
		"--replay-database-url", benchURL}); err == nil {
		t.Fatal("bench replayed into a database that already held a projection")
	}
}

// A database that cannot be reached is one clear error, not a hang or a
// stack trace.
func TestServeUnreachableDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, []string{"serve", "--listen", freeAddr(t), "--data-dir", t.TempDir(),
		"--database-url", "postgres://postgres@127.0.0.1:1/strand?sslmode=disable&connect_timeout=2"})
	if err == nil {
		t.Fatal("serve started without a database")
	}
	msg := err.Error()
	if !strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "\n") {
		t.Fatalf("unclear error: %q", msg)
	}
}

func TestRolesNeedNATSURL(t *testing.T) {
	for _, role := range []string{"api", "projector", "sync", "pusher"} {
		err := run(context.Background(), []string{role, "--data-dir", t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "--nats-url") {
			t.Fatalf("%s without --nats-url: %v", role, err)
		}
	}
}

// The pusher role takes --outbound-allow and its own flags, checked
// before it connects anywhere.
func TestPusherFlags(t *testing.T) {
	for _, args := range [][]string{
		{"pusher", "--push-senders", "0"},
		{"pusher", "--push-matchers", "-1"},
		{"pusher", "--outbound-allow", "not-a-cidr"},
	} {
		err := run(context.Background(), append(args, "--nats-url", "nats://127.0.0.1:1"))
		if err == nil || !strings.Contains(err.Error(), args[1]) {
			t.Errorf("%v: %v", args, err)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	if err := run(context.Background(), []string{"frobnicate"}); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// /metrics, /health and /ready, and a graceful shutdown that answers a
// waiting long-poll instead of cutting it off.
func TestServeOpsAndGracefulShutdown(t *testing.T) {
	addr := freeAddr(t)
	stop := startServe(t, "--listen", addr, "--data-dir", t.TempDir(), "--database-url", storetest.NewURL(t), "--metrics-on-listen")
	c := apitest.NewClient(t, "http://"+addr)
	c.Register("opsuser", "pw")
	roomID := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	c.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message", map[string]any{"msgtype": "m.text", "body": "x"})

	if r := c.Do("GET", "/health", nil); r.Status != 200 {
		t.Fatalf("health: %d %s", r.Status, r.Raw)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.Do("GET", "/ready", nil)
		if r.Status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready: %d %s", r.Status, r.Raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := c.Do("GET", "/metrics", nil)
	for _, name := range []string{"strand_http_request_duration_seconds_bucket", "strand_log_appends_total", "strand_projector_applied_seq",
		"strand_projector_lag_records", "strand_sync_longpolls_waiting", "process_resident_memory_bytes"} {
		// (strand_log_append_conflicts_total appears once a conflict happens;
		// the concurrency tests cause those, this one does not.)
		if !strings.Contains(string(m.Raw), name) {
			t.Errorf("metric %s missing", name)
		}
	}
	if !strings.Contains(string(m.Raw), `route="/_matrix/client/v3/createRoom"`) {
		t.Errorf("latency not labelled by route template")
	}

	next := c.MustDo("GET", "/_matrix/client/v3/sync?set_presence=offline", nil).Str("next_batch")
	done := make(chan apitest.Response, 1)
	go func() {
		done <- c.Do("GET", "/_matrix/client/v3/sync?set_presence=offline&timeout=60000&since="+next, nil)
	}()
	waitFor(t, func() bool {
		return strings.Contains(string(c.Do("GET", "/metrics", nil).Raw), "strand_sync_longpolls_waiting 1")
	})
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}
	select {
	case r := <-done:
		if r.Status != 200 || r.Str("next_batch") == "" {
			t.Fatalf("long-poll at shutdown: %d %s", r.Status, r.Raw)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll not answered at shutdown")
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
}

// sameProjection fails the test unless the databases at liveURL and
// replayURL dump identically (invariant 2), and returns the dump.
func sameProjection(ctx context.Context, t *testing.T, liveURL, replayURL string) string {
	t.Helper()
	var dumps [2]string
	for i, u := range []string{liveURL, replayURL} {
		st, err := store.Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		dumps[i], err = st.Dump(ctx)
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if dumps[0] != dumps[1] {
		t.Fatalf("replayed projection differs:\n%s\n---\n%s", dumps[0], dumps[1])
	}
	return dumps[0]
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// strand user create / reset-password / deactivate against a running
// server, through its shared-secret and admin APIs.
func TestUserCommands(t *testing.T) {
	addr := freeAddr(t)
	startServe(t, "--listen", addr, "--data-dir", t.TempDir(), "--database-url", storetest.NewURL(t), "--registration-shared-secret", "s3cret")
	hs := "http://" + addr
	ctx := context.Background()
	if err := run(ctx, []string{"user", "create", "--hs", hs, "--shared-secret", "s3cret", "--username", "boss", "--password", "pw", "--admin"}); err != nil {
		t.Fatalf("user create: %v", err)
	}
	if err := run(ctx, []string{"user", "create", "--hs", hs, "--shared-secret", "wrong", "--username", "x", "--password", "pw"}); err == nil {
		t.Fatal("user create with a wrong secret succeeded")
	}
	c := apitest.NewClient(t, hs)
	admin := c.As(c.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "boss", "password": "pw"}).Str("access_token"))
	u := apitest.NewClient(t, hs)
	u.Register("worker", "old")

	if err := run(ctx, []string{"user", "reset-password", "--hs", hs, "--admin-token", u.Token, "--user", u.UserID, "--password", "x"}); err == nil {
		t.Fatal("a non-admin reset a password")
	}
	if err := run(ctx, []string{"user", "reset-password", "--hs", hs, "--admin-token", admin.Token, "--user", u.UserID, "--password", "new"}); err != nil {
		t.Fatalf("reset-password: %v", err)
	}
	if r := u.Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 {
		t.Fatalf("reset-password left the user's devices logged in: %d", r.Status)
	}
	if r := c.Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "worker", "password": "old"}); r.Status != 403 {
		t.Fatalf("old password works: %d", r.Status)
	}
	c.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "worker", "password": "new"})
	if err := run(ctx, []string{"user", "deactivate", "--hs", hs, "--admin-token", admin.Token, "--user", u.UserID}); err != nil {
		t.Fatalf("deactivate: %v", err)
	}
	if r := c.Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "worker", "password": "new"}); r.Status != 403 {
		t.Fatalf("deactivated user logged in: %d", r.Status)
	}
	if r := c.Do("GET", "/_matrix/client/v3/register/available?username=worker", nil); r.Errcode() != "M_USER_IN_USE" {
		t.Fatalf("a deactivated user's ID became free: %s", r.Raw)
	}
}

// guideRoomAndSyncSteps runs the classic guide's "Communicating", "Users
// and rooms" and "Getting events" steps as the guide writes them (token in
// the query string, r0 paths, URL-encoded IDs, the single-quoted filter).
func guideRoomAndSyncSteps(t *testing.T, c *apitest.Client, tok string) {
	t.Helper()
	q := "?access_token=" + tok
	room := c.MustDo("POST", "/_matrix/client/r0/createRoom"+q, `{"room_alias_name":"tutorial"}`)
	roomID := room.Str("room_id")
	if room.Str("room_alias") != "#tutorial:localhost" {
		t.Fatalf("createRoom: %s", room.Raw)
	}
	if r := c.MustDo("GET", "/_matrix/client/r0/directory/room/%23tutorial%3Alocalhost", nil); r.Str("room_id") != roomID {
		t.Fatalf("alias: %s", r.Raw)
	}
	enc := url.PathEscape(roomID)
	c.MustDo("POST", "/_matrix/client/r0/rooms/"+enc+"/send/m.room.message"+q, `{"msgtype":"m.text", "body":"hello"}`)

	friend := apitest.NewClient(t, c.Base)
	friend.Register("myfriend", "wordpass")
	c.MustDo("POST", "/_matrix/client/r0/rooms/"+enc+"/invite"+q, `{"user_id":"@myfriend:localhost"}`)
	c.MustDo("POST", "/_matrix/client/r0/rooms/"+enc+"/join?access_token="+friend.Token, `{}`)
	other := apitest.NewClient(t, c.Base)
	other.Register("other", "wordpass")
	c.MustDo("POST", "/_matrix/client/r0/rooms/"+enc+"/invite"+q, `{"user_id":"@other:localhost"}`)
	c.MustDo("POST", "/_matrix/client/r0/join/%23tutorial%3Alocalhost?access_token="+other.Token, `{}`)
	members := c.MustDo("GET", "/_matrix/client/r0/rooms/"+enc+"/members"+q, nil)
	if n := len(members.Body["chunk"].([]any)); n != 3 {
		t.Fatalf("members: %d: %s", n, members.Raw)
	}

	full := c.MustDo("GET", "/_matrix/client/r0/sync"+q, nil)
	if !strings.Contains(string(full.Raw), `"body":"hello"`) {
		t.Fatalf("full sync: %.500s", full.Raw)
	}
	limited := c.MustDo("GET", "/_matrix/client/r0/sync?filter={'room':{'timeline':{'limit':1}}}&access_token="+tok, nil)
	if !strings.Contains(string(limited.Raw), `"limited":true`) {
		t.Fatalf("filtered sync: %.500s", limited.Raw)
	}
	since := limited.Str("next_batch")
	go func() {
		time.Sleep(200 * time.Millisecond)
		friend.MustDo("POST", "/_matrix/client/r0/rooms/"+enc+"/send/m.room.message", `{"msgtype":"m.text", "body":"hi from a friend"}`)
	}()
	inc := c.MustDo("GET", "/_matrix/client/r0/sync?since="+since+"&timeout=20000&access_token="+tok, nil)
	if !strings.Contains(string(inc.Raw), "hi from a friend") {
		t.Fatalf("long-poll since: %.500s", inc.Raw)
	}
	msgs := c.MustDo("GET", "/_matrix/client/r0/rooms/"+enc+"/messages?dir=b&limit=10&access_token="+tok, nil)
	if !strings.Contains(string(msgs.Raw), `"body":"hello"`) {
		t.Fatalf("messages: %.500s", msgs.Raw)
	}
}

// An ops or pprof address that cannot be bound stops the process with an
// error naming the flag, instead of logging that it listens.
func TestListenersThatCannotBind(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, flag := range []string{"--ops-listen", "--pprof-listen"} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := run(ctx, []string{"serve", "--listen", freeAddr(t), "--data-dir", t.TempDir(), "--database-url", storetest.NewURL(t),
			flag, busy.Addr().String()})
		cancel()
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s on a bound address: %v, want an error naming it", flag, err)
		}
	}
}
