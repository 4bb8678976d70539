package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"strand/api/apitest"
	"strand/eventlog"
	"strand/eventlog/matrix"
)

func pusherBody(appID, pushkey, name string) map[string]any {
	return map[string]any{"kind": "http", "app_id": appID, "pushkey": pushkey, "app_display_name": name,
		"device_display_name": "phone", "profile_tag": "tag", "lang": "en",
		"data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only"}}
}

func pusherKeys(t *testing.T, c *apitest.Client) []string {
	t.Helper()
	var out []string
	for _, p := range c.MustDo("GET", "/_matrix/client/v3/pushers", nil).Body["pushers"].([]any) {
		m := p.(map[string]any)
		out = append(out, m["app_id"].(string)+"/"+m["pushkey"].(string)+"/"+m["app_display_name"].(string))
	}
	return out
}

// Pushers are set, replaced, deleted and listed; a push key set by another
// user without append moves to them; pushers of other devices go on a
// password change and with their device; and the projection replays.
func TestPushers(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	c.Register("pushy", "pw")
	if got := pusherKeys(t, c); len(got) != 0 {
		t.Fatalf("new user has pushers %v", got)
	}
	phone := c.As(c.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "pushy", "password": "pw"}).Str("access_token"))

	c.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "key-a", "A"))
	phone.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "key-b", "B"))
	c.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "key-a", "A2")) // replaces
	if got := strings.Join(pusherKeys(t, c), ","); got != "org.example.app/key-b/B,org.example.app/key-a/A2" {
		t.Fatalf("pushers %s", got)
	}
	p := c.MustDo("GET", "/_matrix/client/v3/pushers", nil).Body["pushers"].([]any)[1].(map[string]any)
	if p["kind"] != "http" || p["lang"] != "en" || p["data"].(map[string]any)["format"] != "event_id_only" {
		t.Fatalf("pusher fields: %v", p)
	}

	// Another user takes key-a (no append): it moves to them.
	other := apitest.NewClient(t, c.Base)
	other.Register("thief", "pw")
	other.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "key-a", "T"))
	if got := strings.Join(pusherKeys(t, c), ","); got != "org.example.app/key-b/B" {
		t.Fatalf("after another user took key-a: %s", got)
	}
	// With append both keep it.
	c.MustDo("POST", "/_matrix/client/v3/pushers/set", func() map[string]any {
		b := pusherBody("org.example.app", "key-a", "A3")
		b["append"] = true
		return b
	}())
	if got := pusherKeys(t, other); len(got) != 1 {
		t.Fatalf("append removed the other user's pusher: %v", got)
	}
	if got := strings.Join(pusherKeys(t, c), ","); got != "org.example.app/key-b/B,org.example.app/key-a/A3" {
		t.Fatalf("after the append: %s", got)
	}

	// kind null deletes.
	c.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "key-a"})
	if got := strings.Join(pusherKeys(t, c), ","); got != "org.example.app/key-b/B" {
		t.Fatalf("after deleting key-a: %s", got)
	}
	if got := pusherKeys(t, other); len(got) != 1 {
		t.Fatalf("deleting one user's pusher removed another's: %v", got)
	}

	// A password change keeps only the pushers of the device that made it,
	// even when the other devices stay logged in.
	c.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "key-c", "C"))
	c.MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "pw2", "logout_devices": false,
		"auth": map[string]any{"type": "m.login.password", "user": "pushy", "password": "pw"}})
	if got := strings.Join(pusherKeys(t, c), ","); got != "org.example.app/key-c/C" {
		t.Fatalf("after the password change: %s", got)
	}
	// A deleted device takes its pushers with it.
	phone.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "key-d", "D"))
	phone.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{})
	if got := strings.Join(pusherKeys(t, c), ","); got != "org.example.app/key-c/C" {
		t.Fatalf("after the phone logged out: %s", got)
	}

	for _, bad := range []struct {
		body map[string]any
		code string
	}{
		{map[string]any{"kind": "http", "pushkey": "k"}, "M_MISSING_PARAM"},
		{func() map[string]any { b := pusherBody(strings.Repeat("a", 65), "k", "x"); return b }(), "M_INVALID_PARAM"},
		{func() map[string]any { b := pusherBody("a", strings.Repeat("k", 513), "x"); return b }(), "M_INVALID_PARAM"},
		{func() map[string]any { b := pusherBody("a", "k", "x"); b["data"] = map[string]any{}; return b }(), "M_MISSING_PARAM"},
		{func() map[string]any {
			b := pusherBody("a", "k", "x")
			b["data"] = map[string]any{"url": "https://push.example.org/elsewhere"}
			return b
		}(), "M_INVALID_PARAM"},
		{func() map[string]any { b := pusherBody("a", "k", "x"); b["kind"] = "carrier-pigeon"; return b }(), "M_INVALID_PARAM"},
		{func() map[string]any { b := pusherBody("a", "k", "x"); delete(b, "lang"); return b }(), "M_MISSING_PARAM"},
	} {
		if r := c.Do("POST", "/_matrix/client/v3/pushers/set", bad.body); r.Status != 400 || r.Errcode() != bad.code {
			t.Errorf("%v: %d %s, want 400 %s", bad.body, r.Status, r.Raw, bad.code)
		}
	}
	projectionReplays(t, env, 0)
}

// A user has at most matrix.MaxPushersPerUser pushers: POST /pushers/set
// refuses one more (403), still replaces an existing one, and the
// projection does not keep one more that reached the log anyway (two
// concurrent requests can both pass the api's check).
func TestPushersPerUserBounded(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	c.Register("many", "pw")
	for i := range matrix.MaxPushersPerUser {
		c.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", fmt.Sprintf("key-%d", i), "A"))
	}
	if r := c.Do("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "one-more", "A")); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("pusher %d: %d %s, want 403 M_FORBIDDEN", matrix.MaxPushersPerUser+1, r.Status, r.Raw)
	}

	// Past the api's check, straight onto the log: not kept.
	rec := &eventlog.PusherSet{UserID: c.UserID, DeviceID: c.Device, AppID: "org.example.app", Pushkey: "raced", Kind: "http",
		AppDisplayName: "A", DeviceDisplayName: "phone", Lang: "en", Data: json.RawMessage(`{"url":"https://push.example.org/_matrix/push/v1/notify"}`)}
	if _, err := env.Conn().Append(context.Background(), eventlog.UserSubject(c.UserID), rec, eventlog.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	// A replacement is still accepted (and, answered after it is
	// applied, orders the read after the raced record).
	c.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "key-0", "A2"))
	got := pusherKeys(t, c)
	if len(got) != matrix.MaxPushersPerUser || slices.Contains(got, "org.example.app/raced/A") || !slices.Contains(got, "org.example.app/key-0/A2") {
		t.Fatalf("%d pushers: %v", len(got), got)
	}
	projectionReplays(t, env, 64)
}

// data.format of another type than a string is refused, not stored.
func TestPusherFormatMustBeString(t *testing.T) {
	_, c := newServer(t)
	c.Register("formatter", "pw")
	r := c.Do("POST", v3("/pushers/set"), `{"app_id":"a","pushkey":"k","kind":"http","app_display_name":"a","device_display_name":"d","lang":"en","data":{"url":"https://push.example/_matrix/push/v1/notify","format":5}}`)
	if r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
		t.Fatalf("format 5: %d %s", r.Status, r.Raw)
	}
	if ps := c.MustDo("GET", v3("/pushers"), nil).Body["pushers"].([]any); len(ps) != 0 {
		t.Fatalf("refused pusher stored: %v", ps)
	}
}
