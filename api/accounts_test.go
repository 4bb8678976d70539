package api_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"strand/api"
	"strand/api/apitest"
	"strand/eventlog"
	"strand/projector"
)

func newServer(t *testing.T) (*apitest.Env, *apitest.Client) {
	t.Helper()
	env := apitest.New(t)
	env.Projector()
	srv := env.API(apitest.DefaultConfig())
	return env, apitest.NewClient(t, srv.URL)
}

func TestRegisterChallengeShape(t *testing.T) {
	_, c := newServer(t)
	for _, body := range []any{nil, map[string]any{}, map[string]any{"username": "alice", "password": "secret"}} {
		r := c.Do("POST", "/_matrix/client/v3/register", body)
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("body %v: status %d, want 401: %s", body, r.Status, r.Raw)
		}
		flows, _ := r.Body["flows"].([]any)
		if len(flows) != 1 {
			t.Fatalf("flows = %v", r.Body["flows"])
		}
		stages := flows[0].(map[string]any)["stages"].([]any)
		if len(stages) != 1 || stages[0] != "m.login.dummy" {
			t.Fatalf("stages = %v", stages)
		}
		if r.Str("session") == "" {
			t.Fatalf("no session in %s", r.Raw)
		}
		if _, ok := r.Body["params"].(map[string]any); !ok {
			t.Fatalf("no params object in %s", r.Raw)
		}
		if r.Errcode() != "" {
			t.Fatalf("a first challenge has no errcode, got %s", r.Errcode())
		}
	}
	// The challenge did not create the account.
	r := c.Do("GET", "/_matrix/client/v3/register/available?username=alice", nil)
	if r.Status != 200 || r.Body["available"] != true {
		t.Fatalf("alice should still be available: %d %s", r.Status, r.Raw)
	}
}

// The classic guide's account steps, verbatim apart from the base URL.
func TestGuideAccountSteps(t *testing.T) {
	_, c := newServer(t)
	for _, prefix := range []string{"/_matrix/client/r0", "/_matrix/client/v3"} {
		name := "example" + strings.ReplaceAll(prefix[len(prefix)-2:], "/", "")
		r := c.MustDo("POST", prefix+"/register", `{"username":"`+name+`", "password":"wordpass", "auth": {"type":"m.login.dummy"}}`)
		if r.Str("user_id") != "@"+name+":localhost" || r.Str("access_token") == "" || r.Str("device_id") == "" || r.Str("home_server") != "localhost" {
			t.Fatalf("register response: %s", r.Raw)
		}
		r = c.MustDo("GET", prefix+"/login", nil)
		if !strings.Contains(string(r.Raw), `"m.login.password"`) {
			t.Fatalf("login flows: %s", r.Raw)
		}
		r = c.MustDo("POST", prefix+"/login", `{"type":"m.login.password", "user":"`+name+`", "password":"wordpass"}`)
		tok := r.Str("access_token")
		if r.Str("user_id") != "@"+name+":localhost" || tok == "" {
			t.Fatalf("login response: %s", r.Raw)
		}
		// The guide passes the token in the query string.
		r = c.MustDo("GET", prefix+"/account/whoami?access_token="+tok, nil)
		if r.Str("user_id") != "@"+name+":localhost" {
			t.Fatalf("whoami: %s", r.Raw)
		}
	}
}

func TestRegisterWithoutUsername(t *testing.T) {
	_, c := newServer(t)
	seen := map[string]bool{}
	for range 3 {
		r := c.MustDo("POST", "/_matrix/client/v3/register", `{"password":"wordpass","auth":{"type":"m.login.dummy"}}`)
		uid := r.Str("user_id")
		if !strings.HasPrefix(uid, "@") || !strings.HasSuffix(uid, ":localhost") || seen[uid] {
			t.Fatalf("generated user ID %q (seen before: %v)", uid, seen[uid])
		}
		seen[uid] = true
		who := c.As(r.Str("access_token")).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
		if who.Str("user_id") != uid || who.Str("device_id") != r.Str("device_id") {
			t.Fatalf("whoami %s for %s", who.Raw, uid)
		}
	}
}

func TestRegisterErrors(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	open := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	open.Register("taken", "password1")

	closedCfg := apitest.DefaultConfig()
	closedCfg.Registration = api.RegistrationClosed
	closed := apitest.NewClient(t, env.API(closedCfg).URL)

	tokenCfg := apitest.DefaultConfig()
	tokenCfg.Registration = api.RegistrationToken
	tokenCfg.RegistrationSharedToken = "let-me-in"
	tokened := apitest.NewClient(t, env.API(tokenCfg).URL)

	dummy := map[string]any{"type": "m.login.dummy"}
	cases := []struct {
		name   string
		c      *apitest.Client
		path   string
		body   any
		status int
		code   string
	}{
		{"taken", open, "/register", map[string]any{"username": "taken", "password": "x", "auth": dummy}, 400, "M_USER_IN_USE"},
		{"taken case-insensitively", open, "/register", map[string]any{"username": "TAKEN", "password": "x", "auth": dummy}, 400, "M_USER_IN_USE"},
		{"taken before auth", open, "/register", map[string]any{"username": "taken", "password": "x"}, 400, "M_USER_IN_USE"},
		{"bad character", open, "/register", map[string]any{"username": "al ice", "password": "x", "auth": dummy}, 400, "M_INVALID_USERNAME"},
		{"colon", open, "/register", map[string]any{"username": "a:b", "password": "x", "auth": dummy}, 400, "M_INVALID_USERNAME"},
		{"empty username", open, "/register", map[string]any{"username": "", "password": "x", "auth": dummy}, 400, "M_INVALID_USERNAME"},
		{"too long", open, "/register", map[string]any{"username": strings.Repeat("a", 300), "password": "x", "auth": dummy}, 400, "M_INVALID_USERNAME"},
		{"empty password", open, "/register", map[string]any{"username": "newbie", "password": "", "auth": dummy}, 400, "M_WEAK_PASSWORD"},
		{"username wrong type", open, "/register", map[string]any{"username": 12, "password": "x", "auth": dummy}, 400, "M_BAD_JSON"},
		{"guest", open, "/register?kind=guest", map[string]any{}, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"unknown auth type", open, "/register", map[string]any{"username": "newbie", "password": "x", "auth": map[string]any{"type": "m.login.bogus"}}, 401, "M_FORBIDDEN"},
		{"closed", closed, "/register", map[string]any{"username": "newbie", "password": "x", "auth": dummy}, 403, "M_FORBIDDEN"},
		{"token missing", tokened, "/register", map[string]any{"username": "newbie", "password": "x", "auth": dummy}, 401, "M_FORBIDDEN"},
		{"token wrong", tokened, "/register", map[string]any{"username": "newbie", "password": "x", "auth": map[string]any{"type": "m.login.registration_token", "token": "nope"}}, 401, "M_FORBIDDEN"},
		{"available taken", open, "/register/available?username=taken", nil, 400, "M_USER_IN_USE"},
		{"available invalid", open, "/register/available?username=No%20Way", nil, 400, "M_INVALID_USERNAME"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if strings.HasPrefix(tc.path, "/register/available") {
				method = "GET"
			}
			r := tc.c.Do(method, "/_matrix/client/v3"+tc.path, tc.body)
			if r.Status != tc.status || r.Errcode() != tc.code {
				t.Fatalf("got %d %s, want %d %s: %s", r.Status, r.Errcode(), tc.status, tc.code, r.Raw)
			}
		})
	}

	// With the right token, registration works and offers that flow.
	r := tokened.Do("POST", "/_matrix/client/v3/register", map[string]any{})
	if !strings.Contains(string(r.Raw), "m.login.registration_token") {
		t.Fatalf("token flow not offered: %s", r.Raw)
	}
	tokened.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"username": "invited", "password": "x",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "let-me-in"}})
	for _, prefix := range []string{"/_matrix/client/v1", "/_matrix/client/v3"} {
		v := tokened.MustDo("GET", prefix+"/register/m.login.registration_token/validity?token=let-me-in", nil)
		if v.Body["valid"] != true {
			t.Fatalf("validity: %s", v.Raw)
		}
	}
}

func TestRegisterInhibitLoginAndDevice(t *testing.T) {
	_, c := newServer(t)
	r := c.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"username": "quiet", "password": "pw", "inhibit_login": true, "auth": map[string]any{"type": "m.login.dummy"}})
	if r.Str("user_id") != "@quiet:localhost" || r.Body["access_token"] != nil || r.Body["device_id"] != nil {
		t.Fatalf("inhibit_login response: %s", r.Raw)
	}
	r = c.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"username": "named", "password": "pw", "device_id": "MYPHONE",
		"initial_device_display_name": "Phone", "auth": map[string]any{"type": "m.login.dummy"}})
	if r.Str("device_id") != "MYPHONE" {
		t.Fatalf("device_id not kept: %s", r.Raw)
	}
	d := c.As(r.Str("access_token")).MustDo("GET", "/_matrix/client/v3/devices/MYPHONE", nil)
	if d.Str("display_name") != "Phone" {
		t.Fatalf("device: %s", d.Raw)
	}
}

// Twenty registrations of one name race through two api processes: the
// log's expected-sequence-0 append lets exactly one win.
func TestRegisterRaceTwoAPIs(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	servers := []string{env.API(apitest.DefaultConfig()).URL, env.API(apitest.DefaultConfig()).URL}
	const n = 20
	var wg sync.WaitGroup
	results := make([]apitest.Response, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := apitest.NewClient(t, servers[i%2])
			<-start
			results[i] = c.Do("POST", "/_matrix/client/v3/register", map[string]any{
				"username": "racer", "password": fmt.Sprintf("pw%d", i), "auth": map[string]any{"type": "m.login.dummy"}})
		}()
	}
	close(start)
	wg.Wait()
	wins := -1
	for i, r := range results {
		switch {
		case r.Status == 200:
			if wins >= 0 {
				t.Fatalf("two registrations of one name succeeded: %d and %d", wins, i)
			}
			wins = i
		case r.Status == 400 && r.Errcode() == "M_USER_IN_USE":
		default:
			t.Fatalf("registration %d: %d %s", i, r.Status, r.Raw)
		}
	}
	if wins < 0 {
		t.Fatal("no registration succeeded")
	}
	// The winner's password is the one that works, on both processes.
	for _, base := range servers {
		c := apitest.NewClient(t, base)
		c.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "racer", "password": fmt.Sprintf("pw%d", wins)})
		loser := (wins + 1) % n
		if r := c.Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "racer", "password": fmt.Sprintf("pw%d", loser)}); r.Status != 403 {
			t.Fatalf("loser's password logged in: %d", r.Status)
		}
	}
}

func TestLogin(t *testing.T) {
	_, c := newServer(t)
	c.Register("bob", "hunter22")
	ok := []struct {
		name string
		body string
	}{
		{"guide user form", `{"type":"m.login.password","user":"bob","password":"hunter22"}`},
		{"identifier localpart", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"hunter22"}`},
		{"identifier full ID", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@bob:localhost"},"password":"hunter22"}`},
		{"user full ID", `{"type":"m.login.password","user":"@bob:localhost","password":"hunter22"}`},
		{"uppercase localpart", `{"type":"m.login.password","user":"BOB","password":"hunter22"}`},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			r := c.As("").MustDo("POST", "/_matrix/client/v3/login", tc.body)
			if r.Str("user_id") != "@bob:localhost" || r.Str("access_token") == "" || r.Str("device_id") == "" {
				t.Fatalf("login: %s", r.Raw)
			}
		})
	}
	wrong := c.As("").Do("POST", "/_matrix/client/v3/login", `{"type":"m.login.password","user":"bob","password":"nope"}`)
	unknown := c.As("").Do("POST", "/_matrix/client/v3/login", `{"type":"m.login.password","user":"nobody","password":"nope"}`)
	foreign := c.As("").Do("POST", "/_matrix/client/v3/login", `{"type":"m.login.password","user":"@bob:elsewhere.org","password":"hunter22"}`)
	for _, r := range []apitest.Response{wrong, unknown, foreign} {
		if r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
			t.Fatalf("failed login: %d %s", r.Status, r.Raw)
		}
	}
	if string(wrong.Raw) != string(unknown.Raw) {
		t.Fatalf("wrong password and unknown user answer differently: %s vs %s", wrong.Raw, unknown.Raw)
	}
	// A device ID given at login is used, and logging in again with it
	// replaces the device's token.
	first := c.As("").MustDo("POST", "/_matrix/client/v3/login", `{"type":"m.login.password","user":"bob","password":"hunter22","device_id":"LAPTOP"}`)
	second := c.As("").MustDo("POST", "/_matrix/client/v3/login", `{"type":"m.login.password","user":"bob","password":"hunter22","device_id":"LAPTOP"}`)
	if first.Str("device_id") != "LAPTOP" || second.Str("device_id") != "LAPTOP" {
		t.Fatalf("device IDs: %s %s", first.Raw, second.Raw)
	}
	if r := c.As(first.Str("access_token")).Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 {
		t.Fatalf("replaced token still works: %d", r.Status)
	}
	c.As(second.Str("access_token")).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
}

// Logout revokes exactly the token it was called with, at once, on every
// api process.
func TestLogoutRevokesOnlyItsToken(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	b := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("carol", "pw")
	other := a.As("").MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "carol", "password": "pw"}).Str("access_token")

	a.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{})
	for _, c := range []*apitest.Client{a, b.As(a.Token)} {
		r := c.Do("GET", "/_matrix/client/v3/account/whoami", nil)
		if r.Status != 401 || r.Errcode() != "M_UNKNOWN_TOKEN" {
			t.Fatalf("logged-out token: %d %s", r.Status, r.Raw)
		}
	}
	b.As(other).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)

	// logout/all ends every session.
	third := a.As("").MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "carol", "password": "pw"}).Str("access_token")
	b.As(third).MustDo("POST", "/_matrix/client/r0/logout/all", nil)
	for _, tok := range []string{other, third} {
		if r := a.As(tok).Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 {
			t.Fatalf("token survived logout/all: %d", r.Status)
		}
	}
}

func TestTokenPlacement(t *testing.T) {
	_, c := newServer(t)
	c.Register("dave", "pw")
	tok := c.Token
	anon := c.As("")
	if r := anon.Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 || r.Errcode() != "M_MISSING_TOKEN" {
		t.Fatalf("no token: %d %s", r.Status, r.Raw)
	}
	if r := anon.Do("GET", "/_matrix/client/v3/account/whoami?access_token=bogus", nil); r.Status != 401 || r.Errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("bad query token: %d %s", r.Status, r.Raw)
	}
	if r := anon.As("bogus").Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 || r.Errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("bad header token: %d %s", r.Status, r.Raw)
	}
	if r := anon.Do("GET", "/_matrix/client/v3/account/whoami?access_token="+tok, nil); r.Str("user_id") != "@dave:localhost" {
		t.Fatalf("query token: %d %s", r.Status, r.Raw)
	}
	if r := c.Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Str("user_id") != "@dave:localhost" {
		t.Fatalf("header token: %d %s", r.Status, r.Raw)
	}
	req, _ := http.NewRequest("GET", c.Base+"/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Basic abc")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("non-bearer Authorization: %d", res.StatusCode)
	}
}

func TestBadInput(t *testing.T) {
	_, c := newServer(t)
	c.Register("erin", "pw")
	big := `{"type":"m.login.password","user":"erin","password":"` + strings.Repeat("x", 2<<20) + `"}`
	cases := []struct {
		name, method, path string
		body               any
		auth               bool
		status             int
		code               string
	}{
		{"malformed JSON", "POST", "/login", `{"type":`, false, 400, "M_NOT_JSON"},
		{"not JSON at all", "POST", "/login", `hello`, false, 400, "M_NOT_JSON"},
		{"JSON array", "POST", "/login", `[1,2]`, false, 400, "M_BAD_JSON"},
		{"empty login body", "POST", "/login", ``, false, 400, "M_NOT_JSON"},
		{"wrong type", "POST", "/login", `{"type":"m.login.password","user":"erin","password":5}`, false, 400, "M_BAD_JSON"},
		{"identifier wrong type", "POST", "/login", `{"type":"m.login.password","identifier":"erin","password":"pw"}`, false, 400, "M_BAD_JSON"},
		{"missing type", "POST", "/login", `{"user":"erin","password":"pw"}`, false, 400, "M_MISSING_PARAM"},
		{"missing password", "POST", "/login", `{"type":"m.login.password","user":"erin"}`, false, 400, "M_MISSING_PARAM"},
		{"missing user", "POST", "/login", `{"type":"m.login.password","password":"pw"}`, false, 400, "M_MISSING_PARAM"},
		{"unknown login type", "POST", "/login", `{"type":"m.login.magic"}`, false, 400, "M_UNKNOWN"},
		{"oversized body", "POST", "/login", big, false, 413, "M_TOO_LARGE"},
		{"unknown endpoint", "GET", "/no/such/thing", nil, false, 404, "M_UNRECOGNIZED"},
		{"wrong method", "DELETE", "/login", nil, false, 405, "M_UNRECOGNIZED"},
		{"wrong method on register", "PUT", "/register", nil, false, 405, "M_UNRECOGNIZED"},
		{"filter for another user", "POST", "/user/@other:localhost/filter", `{}`, true, 403, "M_FORBIDDEN"},
		{"filter invalid user", "POST", "/user/nobody/filter", `{}`, true, 400, "M_INVALID_PARAM"},
		{"filter not an object", "POST", "/user/@erin:localhost/filter", `"x"`, true, 400, "M_BAD_JSON"},
		{"filter with wrong types", "POST", "/user/@erin:localhost/filter", `{"room":{"timeline":{"limit":"ten"}}}`, true, 400, "M_BAD_JSON"},
		{"filter with negative limit", "POST", "/user/@erin:localhost/filter", `{"room":{"timeline":{"limit":-1}}}`, true, 400, "M_BAD_JSON"},
		{"filter rooms not room IDs", "POST", "/user/@erin:localhost/filter", `{"room":{"timeline":{"rooms":["not_a_room_id"]}}}`, true, 400, "M_INVALID_PARAM"},
		{"filter senders not user IDs", "POST", "/user/@erin:localhost/filter", `{"room":{"timeline":{"senders":["not_a_sender_id"]}}}`, true, 400, "M_INVALID_PARAM"},
		{"filter not_rooms not room IDs", "POST", "/user/@erin:localhost/filter", `{"room":{"not_rooms":["#alias:localhost"]}}`, true, 400, "M_INVALID_PARAM"},
		{"messages filter rooms not room IDs", "GET", "/rooms/!r:localhost/messages?filter=%7B%22rooms%22%3A%5B%22r%22%5D%7D", nil, true, 400, "M_INVALID_PARAM"},
		{"unknown filter", "GET", "/user/@erin:localhost/filter/123", nil, true, 404, "M_NOT_FOUND"},
		{"account data invalid room", "PUT", "/user/@erin:localhost/rooms/notaroom/account_data/x", `{}`, true, 400, "M_INVALID_PARAM"},
		{"account data missing", "GET", "/user/@erin:localhost/account_data/nope", nil, true, 404, "M_NOT_FOUND"},
		{"password missing new", "POST", "/account/password", `{}`, true, 400, "M_MISSING_PARAM"},
		{"delete_devices without list", "POST", "/delete_devices", `{}`, true, 400, "M_MISSING_PARAM"},
		{"unknown device", "GET", "/devices/NOPE", nil, true, 404, "M_NOT_FOUND"},
		{"device display name wrong type", "PUT", "/devices/" + c.Device, `{"display_name":7}`, true, 400, "M_BAD_JSON"},
		{"escaped NUL in account data", "PUT", "/user/@erin:localhost/account_data/x.test", `{"a":"\u0000"}`, true, 400, "M_BAD_JSON"},
		{"raw NUL in body", "PUT", "/user/@erin:localhost/account_data/x.test", "{\"a\":\"\x00\"}", true, 400, "M_BAD_JSON"},
		{"invalid UTF-8 in body", "PUT", "/devices/" + c.Device, "{\"display_name\":\"\xff\"}", true, 400, "M_NOT_JSON"},
		{"escaped NUL in display name", "PUT", "/devices/" + c.Device, `{"display_name":"a\u0000b"}`, true, 400, "M_BAD_JSON"},
		{"NUL in path", "GET", "/devices/a%00b", nil, true, 400, "M_INVALID_PARAM"},
		{"invalid UTF-8 in path", "GET", "/devices/%FF", nil, true, 400, "M_INVALID_PARAM"},
		{"invalid UTF-8 in query", "GET", "/register/available?username=%FF", nil, false, 400, "M_INVALID_PARAM"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := c.As("")
			if tc.auth {
				cl = c
			}
			r := cl.Do(tc.method, "/_matrix/client/v3"+tc.path, tc.body)
			if r.Status != tc.status || r.Errcode() != tc.code {
				t.Fatalf("got %d %q, want %d %s: %.300s", r.Status, r.Errcode(), tc.status, tc.code, r.Raw)
			}
			if r.Str("error") == "" {
				t.Fatalf("error message missing: %s", r.Raw)
			}
		})
	}
	if r := c.Do("GET", "/_matrix/client/v9/login", nil); r.Status != 404 || r.Errcode() != "M_UNRECOGNIZED" {
		t.Fatalf("unknown API version: %d %s", r.Status, r.Raw)
	}
	// An escaped backslash before u0000 is text, not a NUL.
	c.MustDo("PUT", "/_matrix/client/v3/user/@erin:localhost/account_data/x.ok", `{"a":"\\u0000"}`)
	// The server is still healthy and nothing half-applied.
	c.MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	if r := c.MustDo("GET", "/_matrix/client/v3/devices", nil); len(r.Body["devices"].([]any)) != 1 {
		t.Fatalf("devices after bad input: %s", r.Raw)
	}
}

func TestCORSAndDiscovery(t *testing.T) {
	_, c := newServer(t)
	req, _ := http.NewRequest("OPTIONS", c.Base+"/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "authorization")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "PUT") {
		t.Fatalf("preflight: %d %v", res.StatusCode, res.Header)
	}
	res, err = http.Get(c.Base + "/_matrix/client/versions")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("no CORS header on a normal response")
	}
	v := c.MustDo("GET", "/_matrix/client/versions", nil)
	if !strings.Contains(string(v.Raw), `"r0.6.1"`) || !strings.Contains(string(v.Raw), `"v1.1"`) {
		t.Fatalf("versions: %s", v.Raw)
	}
	wk := c.MustDo("GET", "/.well-known/matrix/client", nil)
	if _, ok := wk.Body["m.homeserver"].(map[string]any)["base_url"].(string); !ok {
		t.Fatalf("well-known: %s", wk.Raw)
	}
	c.Register("frank", "pw")
	capab := c.MustDo("GET", "/_matrix/client/v3/capabilities", nil)
	caps := capab.Body["capabilities"].(map[string]any)
	if caps["m.change_password"].(map[string]any)["enabled"] != true || caps["m.room_versions"].(map[string]any)["default"] == "" {
		t.Fatalf("capabilities: %s", capab.Raw)
	}
	res, err = http.Get(c.Base + "/_matrix/static/client/login/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	page := make([]byte, 64<<10)
	n, _ := res.Body.Read(page)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(page[:n]), "m.login.password") {
		t.Fatalf("login fallback: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

func TestDevicesAndPassword(t *testing.T) {
	_, c := newServer(t)
	c.Register("gina", "old-pw")
	phone := c.As("").MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "gina", "password": "old-pw", "device_id": "PHONE"})
	list := c.MustDo("GET", "/_matrix/client/v3/devices", nil)
	if n := len(list.Body["devices"].([]any)); n != 2 {
		t.Fatalf("want 2 devices: %s", list.Raw)
	}
	c.MustDo("PUT", "/_matrix/client/v3/devices/PHONE", map[string]any{"display_name": "Gina's phone"})
	if d := c.MustDo("GET", "/_matrix/client/v3/devices/PHONE", nil); d.Str("display_name") != "Gina's phone" {
		t.Fatalf("renamed device: %s", d.Raw)
	}
	// Deleting a device needs the password (UIA), then revokes its token.
	r := c.Do("DELETE", "/_matrix/client/v3/devices/PHONE", map[string]any{})
	if r.Status != 401 || !strings.Contains(string(r.Raw), "m.login.password") {
		t.Fatalf("delete without auth: %d %s", r.Status, r.Raw)
	}
	sess := r.Str("session")
	r = c.Do("DELETE", "/_matrix/client/v3/devices/PHONE", map[string]any{"auth": map[string]any{"type": "m.login.password", "session": sess,
		"identifier": map[string]any{"type": "m.id.user", "user": "gina"}, "password": "wrong"}})
	if r.Status != 401 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("delete with wrong password: %d %s", r.Status, r.Raw)
	}
	// Another user's correct password completes the stage as that user,
	// who does not own the device: 403, and the device stays.
	other := apitest.NewClient(t, c.Base)
	other.Register("hank", "hank-pw")
	r = c.Do("DELETE", "/_matrix/client/v3/devices/PHONE", map[string]any{"auth": map[string]any{"type": "m.login.password", "session": sess,
		"identifier": map[string]any{"type": "m.id.user", "user": other.UserID}, "password": "hank-pw"}})
	if r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("delete with another user's password: %d %s", r.Status, r.Raw)
	}
	c.MustDo("GET", "/_matrix/client/v3/devices/PHONE", nil)
	c.MustDo("DELETE", "/_matrix/client/v3/devices/PHONE", map[string]any{"auth": map[string]any{"type": "m.login.password", "session": sess,
		"identifier": map[string]any{"type": "m.id.user", "user": "gina"}, "password": "old-pw"}})
	if r := c.As(phone.Str("access_token")).Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 {
		t.Fatalf("deleted device's token works: %d", r.Status)
	}

	// Password change logs out the other devices but keeps this one.
	tablet := c.As("").MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "gina", "password": "old-pw"}).Str("access_token")
	c.MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "new-pw",
		"auth": map[string]any{"type": "m.login.password", "user": "gina", "password": "old-pw"}})
	c.MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	if r := c.As(tablet).Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 {
		t.Fatalf("other device survived the password change: %d", r.Status)
	}
	if r := c.As("").Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "gina", "password": "old-pw"}); r.Status != 403 {
		t.Fatalf("old password still works: %d", r.Status)
	}
	laptop := c.As("").MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "gina", "password": "new-pw"}).Str("access_token")
	// logout_devices=false keeps them.
	c.MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "newer-pw", "logout_devices": false,
		"auth": map[string]any{"type": "m.login.password", "user": "gina", "password": "new-pw"}})
	c.As(laptop).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)

	// delete_devices with the password.
	c.MustDo("POST", "/_matrix/client/v3/delete_devices", map[string]any{"devices": []string{c.As(laptop).MustDo("GET", "/_matrix/client/v3/account/whoami", nil).Str("device_id")},
		"auth": map[string]any{"type": "m.login.password", "user": "gina", "password": "newer-pw"}})
	if r := c.As(laptop).Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 {
		t.Fatalf("delete_devices left the token: %d", r.Status)
	}
}

func TestFiltersAndAccountData(t *testing.T) {
	_, c := newServer(t)
	c.Register("hank", "pw")
	f := c.MustDo("POST", "/_matrix/client/v3/user/@hank:localhost/filter", `{"room":{"timeline":{"limit":1}}}`)
	id := f.Str("filter_id")
	if id == "" {
		t.Fatalf("filter: %s", f.Raw)
	}
	got := c.MustDo("GET", "/_matrix/client/v3/user/@hank:localhost/filter/"+id, nil)
	if got.Body["room"].(map[string]any)["timeline"].(map[string]any)["limit"] != float64(1) {
		t.Fatalf("filter read back: %s", got.Raw)
	}
	c.MustDo("PUT", "/_matrix/client/v3/user/@hank:localhost/account_data/org.example.x", `{"a":1}`)
	c.MustDo("PUT", "/_matrix/client/v3/user/@hank:localhost/account_data/org.example.x", `{"a":2}`)
	if r := c.MustDo("GET", "/_matrix/client/v3/user/@hank:localhost/account_data/org.example.x", nil); r.Body["a"] != float64(2) {
		t.Fatalf("account data: %s", r.Raw)
	}
	c.MustDo("PUT", "/_matrix/client/v3/user/@hank:localhost/rooms/!room:localhost/account_data/org.example.y", `{"b":true}`)
	if r := c.MustDo("GET", "/_matrix/client/v3/user/@hank:localhost/rooms/!room:localhost/account_data/org.example.y", nil); r.Body["b"] != true {
		t.Fatalf("room account data: %s", r.Raw)
	}
}

func TestSharedSecretRegistration(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.SharedSecret = "s3cret"
	c := apitest.NewClient(t, env.API(cfg).URL)
	nonce := c.MustDo("GET", "/_synapse/admin/v1/register", nil).Str("nonce")
	mac := api.SharedSecretMAC("s3cret", nonce, "admin1", "pw", true, "")
	r := c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce, "username": "admin1", "password": "pw", "admin": true, "mac": mac})
	if r.Str("user_id") != "@admin1:localhost" || r.Str("access_token") == "" {
		t.Fatalf("shared-secret register: %s", r.Raw)
	}
	c.As(r.Str("access_token")).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	bad := c.Do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce, "username": "admin2", "password": "pw", "admin": true, "mac": mac})
	if bad.Status != 403 {
		t.Fatalf("wrong mac: %d %s", bad.Status, bad.Raw)
	}
	forged := c.Do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": "AAAA", "username": "admin3", "password": "pw", "admin": false,
		"mac": api.SharedSecretMAC("s3cret", "AAAA", "admin3", "pw", false, "")})
	if forged.Status != 400 {
		t.Fatalf("forged nonce: %d %s", forged.Status, forged.Raw)
	}
	// Without a configured secret the endpoint is off.
	off := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	if r := off.Do("GET", "/_synapse/admin/v1/register", nil); r.Status != 400 {
		t.Fatalf("disabled shared secret: %d", r.Status)
	}
}

// A shared-secret registration nonce works once, on whichever api process
// it is presented: a second use, on this process or another, or a use
// racing it, is refused, even with a correct MAC for another user.
func TestSharedSecretNonceSingleUse(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.SharedSecret = "s3cret"
	a := apitest.NewClient(t, env.API(cfg).URL)
	b := apitest.NewClient(t, env.API(cfg).URL)
	register := func(c *apitest.Client, nonce, user string) apitest.Response {
		return c.Do("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce, "username": user, "password": "pw",
			"mac": api.SharedSecretMAC("s3cret", nonce, user, "pw", false, "")})
	}
	nonce := a.MustDo("GET", "/_synapse/admin/v1/register", nil).Str("nonce")
	if r := register(b, nonce, "first"); r.Status != 200 {
		t.Fatalf("first use (other process): %d %s", r.Status, r.Raw)
	}
	for _, c := range []*apitest.Client{a, b} {
		if r := register(c, nonce, "second"); r.Status != 400 || r.Errcode() != "M_UNKNOWN" {
			t.Fatalf("second use: %d %s", r.Status, r.Raw)
		}
	}
	if r := a.Do("GET", "/_matrix/client/v3/register/available?username=second", nil); r.Status != 200 {
		t.Fatalf("a refused nonce registered its user: %d %s", r.Status, r.Raw)
	}

	// Two uses at once on two processes: exactly one wins.
	nonce = b.MustDo("GET", "/_synapse/admin/v1/register", nil).Str("nonce")
	statuses := make(chan int, 2)
	for i, c := range []*apitest.Client{a, b} {
		go func() {
			statuses <- register(c, nonce, fmt.Sprintf("racer%d", i)).Status
		}()
	}
	got := []int{<-statuses, <-statuses}
	slices.Sort(got)
	if got[0] != 200 || got[1] != 400 {
		t.Fatalf("racing uses of one nonce: %v, want one 200 and one 400", got)
	}
}

// Accounts live on the log: a new database replayed from the same log,
// with a restarted JetStream server, knows every account.
func TestAccountsSurviveRestart(t *testing.T) {
	env := apitest.New(t)
	stop := env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	c.Register("ivy", "pw")
	stop()

	// Restart JetStream on the same store, and project into a new database.
	dir := env.NATS.StoreDir
	env.NATS.Stop()
	env2 := &apitest.Env{T: t, NATS: logtestRestart(t, dir), DBURL: env.DBURL}
	env2.Projector()
	c2 := apitest.NewClient(t, env2.API(apitest.DefaultConfig()).URL)
	c2.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "ivy", "password": "pw"})
	c2.As(c.Token).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)

	fresh := &apitest.Env{T: t, NATS: env2.NATS, DBURL: newDBURL(t)}
	fresh.Projector()
	c3 := apitest.NewClient(t, fresh.API(apitest.DefaultConfig()).URL)
	c3.As(c.Token).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	c3.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "ivy", "password": "pw"})
}

// Replaying the log into an empty database yields exactly the live
// projection (invariant 2).
func TestReplayEquivalenceAccounts(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	for i := range 5 {
		u := apitest.NewClient(t, c.Base)
		u.Register(fmt.Sprintf("user%d", i), "pw")
		u.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": u.UserID, "password": "pw", "device_id": "SECOND"})
		u.MustDo("PUT", "/_matrix/client/v3/devices/SECOND", map[string]any{"display_name": "second"})
		u.MustDo("POST", "/_matrix/client/v3/user/"+u.UserID+"/filter", `{"room":{"timeline":{"limit":5}}}`)
		u.MustDo("PUT", "/_matrix/client/v3/user/"+u.UserID+"/account_data/m.direct", `{"x":["y"]}`)
		if i%2 == 0 {
			u.MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "pw2",
				"auth": map[string]any{"type": "m.login.password", "user": u.UserID, "password": "pw"}})
		}
		if i == 2 {
			// Forget then rejoin, so replay must keep their order.
			room := u.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
			other := u.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
			u.MustDo("POST", "/_matrix/client/v3/rooms/"+room+"/leave", nil)
			u.MustDo("POST", "/_matrix/client/v3/rooms/"+room+"/forget", nil)
			u.MustDo("POST", "/_matrix/client/v3/rooms/"+room+"/join", nil)
			u.MustDo("POST", "/_matrix/client/v3/rooms/"+other+"/leave", nil)
			u.MustDo("POST", "/_matrix/client/v3/rooms/"+other+"/forget", nil)
		}
		if i == 3 {
			u.MustDo("POST", "/_matrix/client/v3/logout", nil)
		}
		if i == 4 {
			u.MustDo("POST", "/_matrix/client/v3/account/deactivate", map[string]any{"auth": map[string]any{"type": "m.login.password", "user": u.UserID, "password": "pw2"}})
		}
	}
	live := env.Store()
	ctx := context.Background()
	waitCaughtUp(t, env, live)
	liveDump, err := live.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}

	p, replayDump := replayMatches(t, env, liveDump, 3)
	forgotten, _, _ := strings.Cut(liveDump[strings.Index(liveDump, "== forgotten_rooms")+3:], "==")
	if !strings.Contains(liveDump, "@user4:localhost") || strings.Count(liveDump, `"device_id"`) < 5 || strings.Count(forgotten, "@user2:localhost") != 1 {
		t.Fatalf("dump does not hold the accounts:\n%s", liveDump)
	}
	// Replaying again changes nothing (exactly-once effect).
	if err := p.Replay(ctx, nil); err != nil {
		t.Fatal(err)
	}
	again, _ := p.Store.Dump(ctx)
	if again != replayDump {
		t.Fatal("a second replay changed the projection")
	}
}

func waitCaughtUp(t *testing.T, env *apitest.Env, st interface {
	Position(context.Context, string) (uint64, error)
}) {
	t.Helper()
	l := env.Conn()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range projector.Streams {
		head, err := l.Head(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		for {
			pos, err := st.Position(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			if pos >= head {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("projection of %s stuck at %d of %d", s, pos, head)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// No secret reaches the log in plain form (invariant 8): records carry
// bcrypt hashes of passwords and SHA-256 hashes of tokens, never either.
func TestNoPlainSecretsOnTheLog(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	secrets := []string{"first-Secret-pw", "second-Secret-pw"}
	c.Register("keeper", secrets[0])
	tokens := []string{c.Token}
	tokens = append(tokens, c.As("").MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "keeper", "password": secrets[0]}).Str("access_token"))
	// Refresh tokens, and the tokens a refresh issues, and the first use
	// of one (token.used).
	lr := c.As("").MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "keeper", "password": secrets[0], "refresh_token": true})
	rr := c.As("").MustDo("POST", "/_matrix/client/v3/refresh", map[string]any{"refresh_token": lr.Str("refresh_token")})
	c.As(rr.Str("access_token")).MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	tokens = append(tokens, lr.Str("access_token"), lr.Str("refresh_token"), rr.Str("access_token"), rr.Str("refresh_token"))
	c.MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": secrets[1], "logout_devices": false,
		"auth": map[string]any{"type": "m.login.password", "user": "keeper", "password": secrets[0]}})

	l := env.Conn()
	ctx := context.Background()
	head, err := l.Head(ctx, eventlog.StreamAccounts)
	if err != nil {
		t.Fatal(err)
	}
	var records int
	err = l.Read(ctx, eventlog.StreamAccounts, eventlog.ReadOptions{From: 1, StopAt: head}, func(_ context.Context, batch []eventlog.Msg) error {
		for _, m := range batch {
			records++
			for _, s := range append(append([]string{}, secrets...), tokens...) {
				if strings.Contains(string(m.Data), s) {
					t.Errorf("record %d (%s) holds a secret in plain form", m.Seq, m.Type)
				}
			}
			if m.Type == "user.registered" && !strings.Contains(string(m.Data), `"password_hash":"$2a$`) {
				t.Errorf("registration without a bcrypt hash: %s", m.Data)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if records < 3 {
		t.Fatalf("only %d account records", records)
	}
}

// A token the projection does not know yet (its projector is still
// catching up, here: not started) is waited for, not refused: "unknown
// token" would make the client discard its session. Once the projection
// has caught up, a token nobody was given is refused.
func TestTokenWaitsForAccountsProjection(t *testing.T) {
	env := apitest.New(t)
	stop := env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	c.Register("uma", "pw")
	stop()

	fresh := &apitest.Env{T: t, NATS: env.NATS, DBURL: newDBURL(t)}
	srv := fresh.API(apitest.DefaultConfig())
	worker, _ := fresh.SyncWorker() // the sync worker resolves tokens the same way
	done := make(chan apitest.Response, 1)
	synced := make(chan apitest.Response, 1)
	go func() {
		done <- apitest.NewClient(t, srv.URL).As(c.Token).Do("GET", "/_matrix/client/v3/account/whoami", nil)
	}()
	go func() {
		synced <- apitest.NewClient(t, worker.URL).As(c.Token).Do("GET", "/_matrix/client/v3/sync?timeout=0", nil)
	}()
	select {
	case r := <-done:
		t.Fatalf("answered before the accounts were projected: %d %s", r.Status, r.Raw)
	case r := <-synced:
		t.Fatalf("sync answered before the accounts were projected: %d %s", r.Status, r.Raw)
	case <-time.After(300 * time.Millisecond):
	}
	fresh.Projector()
	r := <-done
	if r.Status != 200 || r.Str("user_id") != c.UserID {
		t.Fatalf("whoami once projected: %d %s", r.Status, r.Raw)
	}
	if r := <-synced; r.Status != 200 {
		t.Fatalf("sync once projected: %d %s", r.Status, r.Raw)
	}
	bad := apitest.NewClient(t, srv.URL).As("not-a-token")
	if r := bad.Do("GET", "/_matrix/client/v3/account/whoami", nil); r.Status != 401 || r.Errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("unknown token: %d %s", r.Status, r.Raw)
	}
}
