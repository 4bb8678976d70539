package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"strand/api"
	"strand/api/apitest"
)

// strictLimits are limits small enough to meet in a test: every bucket
// holds burst tokens and refills about never.
func strictLimits(burst int) *api.RateLimits {
	l := api.DefaultRateLimits()
	never := api.Limit{Rate: 0.0001, Burst: burst}
	l.LoginAddress, l.LoginAccount, l.Register, l.Message = never, never, never, never
	l.CreateRoom, l.Join, l.Upload, l.Request = never, never, never, never
	l.Preview = never
	return &l
}

// rawDo sends a request with extra headers and returns status, headers and
// the decoded body.
func rawDo(t *testing.T, base, method, path, token string, body any, hdr map[string]string) (int, http.Header, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, res.Header, out
}

// checkLimited asserts the spec's answer to a client over a limit: 429
// M_LIMIT_EXCEEDED with retry_after_ms, and the same wait in Retry-After.
func checkLimited(t *testing.T, what string, status int, h http.Header, body map[string]any) time.Duration {
	t.Helper()
	if status != http.StatusTooManyRequests || body["errcode"] != "M_LIMIT_EXCEEDED" {
		t.Fatalf("%s: %d %v, want 429 M_LIMIT_EXCEEDED", what, status, body)
	}
	ms, ok := body["retry_after_ms"].(float64)
	if !ok || ms <= 0 {
		t.Fatalf("%s: retry_after_ms %v", what, body["retry_after_ms"])
	}
	secs, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || secs < 1 || float64(secs)*1000 < ms {
		t.Fatalf("%s: Retry-After %q for retry_after_ms %v", what, h.Get("Retry-After"), ms)
	}
	return time.Duration(ms) * time.Millisecond
}

// Each limit answers 429 once its burst is spent, per user (another user
// is not held back) and not for a server admin.
func TestRateLimitsPerUser(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.SharedSecret = "s3cret"
	const burst = 3
	cfg.RateLimits = strictLimits(burst)
	cfg.RateLimits.Request = api.Limit{Rate: 0.0001, Burst: 60} // room for the set-up requests
	base := env.Serve(cfg).URL

	// Users are created by the admin API, which registration limits do
	// not count.
	mkUser := func(name string, admin bool) *apitest.Client {
		c := apitest.NewClient(t, base)
		nonce := c.MustDo("GET", "/_synapse/admin/v1/register", nil).Str("nonce")
		r := c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce, "username": name, "password": "pw",
			"admin": admin, "mac": api.SharedSecretMAC("s3cret", nonce, name, "pw", admin, "")})
		c.Token, c.UserID = r.Str("access_token"), r.Str("user_id")
		return c
	}
	alice, bob, boss := mkUser("alice", false), mkUser("bob", false), mkUser("boss", true)

	// Room creation.
	var room string
	for i := range burst {
		room = alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
		_ = i
	}
	st, h, b := rawDo(t, base, "POST", "/_matrix/client/v3/createRoom", alice.Token, map[string]any{}, nil)
	checkLimited(t, "createRoom", st, h, b)
	bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}) // bob's bucket is his own

	// Room events: messages, state and redactions share one bucket.
	send := func(c *apitest.Client, i int) (int, http.Header, map[string]any) {
		return rawDo(t, base, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", room, i), c.Token,
			map[string]any{"msgtype": "m.text", "body": "hi"}, nil)
	}
	for i := range burst - 1 {
		if st, _, b := send(alice, i); st != 200 {
			t.Fatalf("send %d: %d %v", i, st, b)
		}
	}
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.topic", map[string]any{"topic": "t"})
	st, h, b = send(alice, 99)
	checkLimited(t, "send", st, h, b)
	st, h, b = rawDo(t, base, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.name", alice.Token, map[string]any{"name": "n"}, nil)
	checkLimited(t, "state", st, h, b)
	// Reports are records kept for good: they share the bucket too.
	st, h, b = rawDo(t, base, "POST", "/_matrix/client/v3/rooms/"+room+"/report", alice.Token, map[string]any{"reason": "r"}, nil)
	checkLimited(t, "report", st, h, b)

	// Joins: bob's own buckets are untouched by alice's.
	for i := range burst {
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{})
		_ = i
	}
	st, h, b = rawDo(t, base, "POST", "/_matrix/client/v3/rooms/"+room+"/join", bob.Token, map[string]any{}, nil)
	checkLimited(t, "join", st, h, b)
	if st, _, b := send(bob, 1); st != 200 {
		t.Fatalf("bob's first send: %d %v", st, b)
	}

	// alice's join bucket is untouched by bob's.
	if st, _, b := rawDo(t, base, "POST", "/_matrix/client/v3/join/"+room, alice.Token, map[string]any{}, nil); st != 200 {
		t.Fatalf("alice's join: %d %v", st, b)
	}

	// Uploads.
	for i := range burst + 1 {
		st, h, b := rawDo(t, base, "POST", "/_matrix/media/v3/upload", bob.Token, "x", map[string]string{"Content-Type": "text/plain"})
		if i < burst && st != 200 {
			t.Fatalf("upload %d: %d %v", i, st, b)
		}
		if i == burst {
			checkLimited(t, "upload", st, h, b)
		}
	}

	if st, _, b := rawDo(t, base, "POST", "/_matrix/media/v3/upload", alice.Token, "x", map[string]string{"Content-Type": "text/plain"}); st != 200 {
		t.Fatalf("alice's upload: %d %v", st, b)
	}

	// A server admin is exempt from every limit, the per-token one
	// (burst 60) included.
	for i := range 3 * burst {
		boss.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{})
		if st, _, b := send(boss, i); st != 200 {
			t.Fatalf("admin send %d: %d %v", i, st, b)
		}
		boss.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{})
		if st, _, b := rawDo(t, base, "POST", "/_matrix/media/v3/upload", boss.Token, "x", map[string]string{"Content-Type": "text/plain"}); st != 200 {
			t.Fatalf("admin upload %d: %d %v", i, st, b)
		}
	}
	for range 61 {
		boss.MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	}
}

// The general limit per access token covers every authenticated request.
func TestRateLimitPerToken(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.RateLimits = strictLimits(100)
	cfg.RateLimits.Request = api.Limit{Rate: 0.0001, Burst: 5}
	base := env.Serve(cfg).URL
	c := apitest.NewClient(t, base)
	c.Register("tok", "pw")
	for range 5 {
		c.MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	}
	st, h, b := rawDo(t, base, "GET", "/_matrix/client/v3/account/whoami", c.Token, nil, nil)
	checkLimited(t, "whoami", st, h, b)
	// Another device of the same user has its own bucket.
	other := apitest.NewClient(t, base)
	other.Token = other.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "tok", "password": "pw"}).Str("access_token")
	other.MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
}

// Registration is limited per client address; behind a trusted proxy the
// address is the one X-Forwarded-For names.
func TestRateLimitRegistration(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.RateLimits = strictLimits(2)
	base := env.Serve(cfg).URL
	reg := func(name, from string) (int, http.Header, map[string]any) {
		return rawDo(t, base, "POST", "/_matrix/client/v3/register", "",
			map[string]any{"username": name, "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}},
			map[string]string{"X-Forwarded-For": from})
	}
	for i := range 2 {
		if st, _, b := reg(fmt.Sprintf("r%d", i), "192.0.2.1"); st != 200 {
			t.Fatalf("registration %d: %d %v", i, st, b)
		}
	}
	st, h, b := reg("r2", "192.0.2.1")
	checkLimited(t, "register", st, h, b)
	// The test's own peer (loopback) is a trusted proxy, so another
	// forwarded address is another client.
	if st, _, b := reg("r3", "192.0.2.2"); st != 200 {
		t.Fatalf("registration from another address: %d %v", st, b)
	}
	// Counted only when an account would be made: the first step of the
	// user-interactive flow is free.
	for range 5 {
		if st, _, _ := rawDo(t, base, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "r9", "password": "pw"},
			map[string]string{"X-Forwarded-For": "192.0.2.1"}); st != 401 {
			t.Fatalf("UIA challenge: %d, want 401", st)
		}
	}
}

// Failed logins lock an account out for a time that doubles with each
// further failure, even for the right password; a success ends it. Login
// attempts per address and per account are limited too.
func TestLoginBackoff(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.RateLimits = strictLimits(1000)
	cfg.RateLimits.LoginFailures = 2
	base := env.Serve(cfg).URL
	apitest.NewClient(t, base).Register("victim", "right")
	login := func(pw, from string) (int, http.Header, map[string]any) {
		return rawDo(t, base, "POST", "/_matrix/client/v3/login", "",
			map[string]any{"type": "m.login.password", "user": "victim", "password": pw},
			map[string]string{"X-Forwarded-For": from})
	}
	for i := range 2 {
		if st, _, b := login("wrong", "198.51.100.1"); st != 403 {
			t.Fatalf("failure %d: %d %v", i, st, b)
		}
	}
	// The third failure starts a 1 s lock-out.
	if st, _, b := login("wrong", "198.51.100.1"); st != 403 {
		t.Fatalf("third failure: %d %v", st, b)
	}
	st, h, b := login("right", "198.51.100.2")
	first := checkLimited(t, "right password during the lock-out", st, h, b)
	time.Sleep(first + 50*time.Millisecond)
	// One more failure doubles it.
	if st, _, b := login("wrong", "198.51.100.1"); st != 403 {
		t.Fatalf("failure after the lock-out: %d %v", st, b)
	}
	st, h, b = login("right", "198.51.100.2")
	second := checkLimited(t, "second lock-out", st, h, b)
	// The first lock-out was 1 s, so a second one over 1.2 s has grown
	// (it is 2 s, less the time the requests took).
	if second <= 1200*time.Millisecond {
		t.Fatalf("lock-out did not grow: %s then %s", first, second)
	}
	time.Sleep(second + 50*time.Millisecond)
	if st, _, b := login("right", "198.51.100.2"); st != 200 {
		t.Fatalf("right password after the lock-out: %d %v", st, b)
	}
	// A success forgets the failures: the next failure does not lock.
	if st, _, _ := login("wrong", "198.51.100.1"); st != 403 {
		t.Fatal("failure after a success")
	}
	if st, _, b := login("right", "198.51.100.2"); st != 200 {
		t.Fatalf("right password after one failure: %d %v", st, b)
	}

	// Attempts per account, whatever the address.
	cfg3 := apitest.DefaultConfig()
	cfg3.RateLimits = strictLimits(1000)
	cfg3.RateLimits.LoginAccount = api.Limit{Rate: 0.0001, Burst: 2}
	base3 := env.Serve(cfg3).URL
	for i := range 3 {
		st, h, b := rawDo(t, base3, "POST", "/_matrix/client/v3/login", "",
			map[string]any{"type": "m.login.password", "user": "victim", "password": "right"},
			map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i+1)})
		if i < 2 && st != 200 {
			t.Fatalf("login %d: %d %v", i, st, b)
		}
		if i == 2 {
			checkLimited(t, "login per account", st, h, b)
		}
	}

	// Attempts per address, for accounts that do not even exist (each
	// would cost a password hash).
	cfg2 := apitest.DefaultConfig()
	cfg2.RateLimits = strictLimits(1000)
	cfg2.RateLimits.LoginAddress = api.Limit{Rate: 0.0001, Burst: 3}
	base2 := env.Serve(cfg2).URL
	for i := range 4 {
		st, h, b := rawDo(t, base2, "POST", "/_matrix/client/v3/login", "",
			map[string]any{"type": "m.login.password", "user": fmt.Sprintf("nobody%d", i), "password": "x"},
			map[string]string{"X-Forwarded-For": "203.0.113.9"})
		if i < 3 && st != 403 {
			t.Fatalf("attempt %d: %d %v", i, st, b)
		}
		if i == 3 {
			checkLimited(t, "login per address", st, h, b)
		}
	}
}

// With limits off (nil), nothing is limited.
func TestRateLimitsOff(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	base := env.Serve(apitest.DefaultConfig()).URL
	c := apitest.NewClient(t, base)
	c.Register("free", "pw")
	room := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	for i := range 60 {
		c.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", room, i), map[string]any{"msgtype": "m.text", "body": "x"})
	}
	for range 20 {
		if r := c.Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "free", "password": "bad"}); r.Status != 403 {
			t.Fatalf("login with limits off: %d %s", r.Status, r.Raw)
		}
	}
}

// URL previews that are not cached are limited per user (each is an
// outbound fetch); a cached one is not, nor is another user held back.
func TestRateLimitPreview(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	const burst = 3
	cfg.RateLimits = strictLimits(burst)
	cfg.RateLimits.Request = api.Limit{Rate: 0.0001, Burst: 60}
	cfg.RateLimits.Register = api.Limit{Rate: 0.0001, Burst: 60}
	cfg.OutboundAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	base := env.Serve(cfg).URL
	alice := apitest.NewClient(t, base)
	alice.Register("palice", "pw")
	bob := alice.As("")
	bob.Register("pbob", "pw")
	web := startPages(t, "127.0.0.1:0", map[string]http.HandlerFunc{"/p": htmlPage(`<title>page</title>`)})
	page := func(i int) string {
		return previewPath("/_matrix/media/v3/preview_url", fmt.Sprintf("%s/p?n=%d", web.URL, i))
	}

	for i := range burst {
		bob.MustDo("GET", page(i), nil)
	}
	st, h, b := rawDo(t, base, "GET", page(burst), bob.Token, nil, nil)
	checkLimited(t, "uncached preview", st, h, b)
	if web.Hits("/p") != burst {
		t.Fatalf("%d fetches, want %d", web.Hits("/p"), burst)
	}
	bob.MustDo("GET", page(0), nil) // cached
	alice.MustDo("GET", page(burst), nil)
}
