package api_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"strand/api/apitest"
)

func loginWithRefresh(t *testing.T, c *apitest.Client, user string, extra map[string]any) apitest.Response {
	t.Helper()
	body := map[string]any{"type": "m.login.password", "user": user, "password": "pw", "refresh_token": true}
	for k, v := range extra {
		body[k] = v
	}
	return c.As("").MustDo("POST", "/_matrix/client/v3/login", body)
}

func refreshWith(c *apitest.Client, path, tok string) apitest.Response {
	c.T.Helper()
	return c.As("").Do("POST", path, map[string]any{"refresh_token": tok})
}

// softLoggedOut checks a 401 M_UNKNOWN_TOKEN with soft_logout true.
func softLoggedOut(t *testing.T, what string, r apitest.Response) {
	t.Helper()
	if r.Status != http.StatusUnauthorized || r.Errcode() != "M_UNKNOWN_TOKEN" || r.Body["soft_logout"] != true {
		t.Fatalf("%s: want 401 M_UNKNOWN_TOKEN soft_logout, got %d %s", what, r.Status, r.Raw)
	}
}

func whoamiStatus(c *apitest.Client, tok string) int {
	c.T.Helper()
	return c.As(tok).Do("GET", "/_matrix/client/v3/account/whoami", nil).Status
}

// waitRefused polls until tok is refused (the first use of a refreshed
// token revokes its predecessor asynchronously).
func waitRefused(t *testing.T, c *apitest.Client, tok string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for whoamiStatus(c, tok) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("the previous access token is still accepted after the new one was used")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRefreshTokens(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	b := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)

	// Register with refresh_token: both come back, and expiry.
	r := a.MustDo("POST", "/_matrix/client/v3/register", map[string]any{
		"username": "rita", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}, "refresh_token": true})
	if r.Str("refresh_token") == "" || r.Body["expires_in_ms"] != float64(5*60*1000) {
		t.Fatalf("register with refresh_token: %s", r.Raw)
	}
	a.Token = r.Str("access_token")
	// Without it, neither: such tokens never expire.
	r = a.As("").MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "rita", "password": "pw"})
	if _, ok := r.Body["refresh_token"]; ok {
		t.Fatalf("login without refresh_token got one: %s", r.Raw)
	}
	if _, ok := r.Body["expires_in_ms"]; ok {
		t.Fatalf("login without refresh_token got expires_in_ms: %s", r.Raw)
	}

	r = loginWithRefresh(t, a, "rita", map[string]any{"device_id": "PHONE"})
	tokA, ref1 := r.Str("access_token"), r.Str("refresh_token")
	if ref1 == "" || r.Body["expires_in_ms"] != float64(5*60*1000) || r.Str("device_id") != "PHONE" {
		t.Fatalf("login with refresh_token: %s", r.Raw)
	}

	// A transaction sent before the refresh...
	room := a.As(tokA).MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	ev1 := a.As(tokA).MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/txn1", map[string]any{"msgtype": "m.text", "body": "first"}).Str("event_id")

	r = refreshWith(a, "/_matrix/client/v3/refresh", ref1)
	tokB, ref2 := r.Str("access_token"), r.Str("refresh_token")
	if r.Status != 200 || tokB == "" || ref2 == "" || tokB == tokA || ref2 == ref1 || r.Body["expires_in_ms"] != float64(5*60*1000) {
		t.Fatalf("refresh: %d %s", r.Status, r.Raw)
	}
	// The refresh token is spent, on every process.
	softLoggedOut(t, "reused refresh token", refreshWith(a, "/_matrix/client/v3/refresh", ref1))
	softLoggedOut(t, "reused refresh token on the other process", refreshWith(b, "/_matrix/client/v3/refresh", ref1))
	softLoggedOut(t, "unknown refresh token", refreshWith(a, "/_matrix/client/v3/refresh", "strandr_nonsense"))
	if r := a.As("").Do("POST", "/_matrix/client/v3/refresh", map[string]any{}); r.Status != 400 || r.Errcode() != "M_MISSING_PARAM" {
		t.Fatalf("refresh without a token: %d %s", r.Status, r.Raw)
	}

	// The old access token stays valid until the new one is used.
	for _, c := range []*apitest.Client{a, b} {
		if st := whoamiStatus(c, tokA); st != 200 {
			t.Fatalf("old access token refused before the new one was used: %d", st)
		}
	}
	// ...is the same transaction after it: txn IDs belong to the device.
	r = a.As(tokB).MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/txn1", map[string]any{"msgtype": "m.text", "body": "first"})
	if r.Str("event_id") != ev1 {
		t.Fatalf("retry with the refreshed token made a new event: %s, want %s", r.Str("event_id"), ev1)
	}
	if r := b.As(tokB).MustDo("GET", "/_matrix/client/v3/account/whoami", nil); r.Str("device_id") != "PHONE" {
		t.Fatalf("refreshed token's device: %s", r.Raw)
	}
	waitRefused(t, a, tokA)
	waitRefused(t, b, tokA)
	if st := whoamiStatus(b, tokB); st != 200 {
		t.Fatalf("new token: %d", st)
	}

	// Refreshing twice without using the first new token: the one before
	// it is revoked at once, on every process; the unused one stays.
	r = refreshWith(b, "/_matrix/client/v1/refresh", ref2)
	tokC, ref3 := r.Str("access_token"), r.Str("refresh_token")
	if r.Status != 200 || tokC == "" || ref3 == "" {
		t.Fatalf("v1 refresh: %d %s", r.Status, r.Raw)
	}
	r = refreshWith(a, "/_matrix/client/v3/refresh", ref3)
	tokD, ref4 := r.Str("access_token"), r.Str("refresh_token")
	if r.Status != 200 {
		t.Fatalf("second refresh: %d %s", r.Status, r.Raw)
	}
	for _, c := range []*apitest.Client{a, b} {
		if st := whoamiStatus(c, tokB); st != http.StatusUnauthorized {
			t.Fatalf("token two refreshes old still accepted: %d", st)
		}
		if st := whoamiStatus(c, tokC); st != 200 {
			t.Fatalf("previous token (never used) refused: %d", st)
		}
	}
	a.As(tokD).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	waitRefused(t, b, tokC)

	// Logging the device out ends its refresh token too.
	a.As(tokD).MustDo("POST", "/_matrix/client/v3/logout", map[string]any{})
	softLoggedOut(t, "refresh token of a logged-out device", refreshWith(b, "/_matrix/client/v3/refresh", ref4))

	// A new login for the same device ID replaces the refresh token.
	r = loginWithRefresh(t, a, "rita", map[string]any{"device_id": "TABLET"})
	ref5 := r.Str("refresh_token")
	loginWithRefresh(t, a, "rita", map[string]any{"device_id": "TABLET"})
	softLoggedOut(t, "refresh token of a replaced login", refreshWith(a, "/_matrix/client/v3/refresh", ref5))

	projectionReplays(t, env, 3)
}

// A refresh token is exchanged once, even when it is presented many times
// at once on two api processes: the exchange is a compare-and-set on the
// log.
func TestRefreshTokenSingleUseConcurrently(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	apis := []*apitest.Client{
		apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL),
		apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL),
	}
	apis[0].Register("sam", "pw")
	for round := 0; round < 3; round++ {
		ref := loginWithRefresh(t, apis[0], "sam", nil).Str("refresh_token")
		const n = 12
		results := make([]apitest.Response, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = refreshWith(apis[i%2], "/_matrix/client/v3/refresh", ref)
			}()
		}
		wg.Wait()
		ok := 0
		for _, r := range results {
			switch {
			case r.Status == 200:
				ok++
				if st := whoamiStatus(apis[1], r.Str("access_token")); st != 200 {
					t.Fatalf("the winner's token: %d", st)
				}
			case r.Status == http.StatusUnauthorized && r.Body["soft_logout"] == true:
			default:
				t.Fatalf("concurrent refresh: %d %s", r.Status, r.Raw)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of %d concurrent uses of one refresh token succeeded, want 1", round, ok, n)
		}
	}
	projectionReplays(t, env, 2)
}

// Access tokens issued with a refresh token expire (soft logout), on the
// api and on /sync; others never do.
func TestRefreshTokenExpiry(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.AccessTokenLifetime = 1500 * time.Millisecond
	c := apitest.NewClient(t, env.Serve(cfg).URL)
	c.Register("eve", "pw")
	r := loginWithRefresh(t, c, "eve", nil)
	tok, ref := r.Str("access_token"), r.Str("refresh_token")
	if r.Body["expires_in_ms"] != float64(1500) {
		t.Fatalf("expires_in_ms: %s", r.Raw)
	}
	c.As(tok).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	c.As(tok).MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil)
	room := c.As(tok).MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	ev := c.As(tok).MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "x"}).Str("event_id")
	time.Sleep(1600 * time.Millisecond)
	softLoggedOut(t, "expired token", c.As(tok).Do("GET", "/_matrix/client/v3/account/whoami", nil))
	softLoggedOut(t, "expired token on /sync", c.As(tok).Do("GET", "/_matrix/client/v3/sync?timeout=0", nil))
	// The token from registration, issued without a refresh token, lives on.
	c.MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	// Refreshing brings the device back, with the same device ID.
	r = refreshWith(c, "/_matrix/client/v3/refresh", ref)
	if r.Status != 200 {
		t.Fatalf("refresh after expiry: %d %s", r.Status, r.Raw)
	}
	if w := c.As(r.Str("access_token")).MustDo("GET", "/_matrix/client/v3/account/whoami", nil); w.Str("device_id") == "" {
		t.Fatalf("whoami: %s", w.Raw)
	}
	// The device's transaction IDs come back to it with the new token.
	s := c.As(r.Str("access_token")).MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil)
	if !strings.Contains(string(s.Raw), `"event_id":"`+ev+`"`) || !strings.Contains(string(s.Raw), `"transaction_id":"t1"`) {
		t.Fatalf("sync after a refresh lacks the device's transaction ID: %s", s.Raw)
	}
}
