package api_test

import (
	"net/http"
	"net/url"
	"sync"
	"testing"

	"strand/api"
	"strand/api/apitest"
)

// adminUser registers a user through the shared-secret API.
func sharedSecretUser(t *testing.T, base, secret, name string, admin bool) *apitest.Client {
	t.Helper()
	c := apitest.NewClient(t, base)
	nonce := c.MustDo("GET", "/_synapse/admin/v1/register", nil).Str("nonce")
	r := c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce, "username": name, "password": "pw",
		"admin": admin, "mac": api.SharedSecretMAC(secret, nonce, name, "pw", admin, "")})
	c.Token, c.UserID, c.Device = r.Str("access_token"), r.Str("user_id"), r.Str("device_id")
	return c
}

// invitedRooms is the rooms of a full sync's rooms.invite, with the
// senders of their invite_state.
func invitedRooms(t *testing.T, c *apitest.Client) map[string][]string {
	t.Helper()
	r := c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil)
	rooms, _ := r.Body["rooms"].(map[string]any)
	inv, _ := rooms["invite"].(map[string]any)
	out := map[string][]string{}
	for id, v := range inv {
		evs, _ := v.(map[string]any)["invite_state"].(map[string]any)["events"].([]any)
		for _, e := range evs {
			out[id] = append(out[id], e.(map[string]any)["sender"].(string))
		}
	}
	return out
}

func TestServerNotices(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.SharedSecret = "s3cret"
	base := env.Serve(cfg).URL
	other := env.API(cfg).URL
	admin := sharedSecretUser(t, base, "s3cret", "boss", true)
	alice := apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	const sys = "@_server:localhost"
	notice := map[string]any{"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": "hello from server notices!"}}

	if r := alice.Do("POST", "/_synapse/admin/v1/send_server_notice", nil); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("notice by a non-admin: %d %s", r.Status, r.Raw)
	}
	for _, bad := range []struct {
		body   any
		status int
		code   string
	}{
		{map[string]any{"content": map[string]any{"body": "x", "msgtype": "m.text"}}, 400, "M_MISSING_PARAM"},
		{map[string]any{"user_id": alice.UserID}, 400, "M_MISSING_PARAM"},
		{map[string]any{"user_id": "@nobody:localhost", "content": map[string]any{"body": "x", "msgtype": "m.text"}}, 404, "M_NOT_FOUND"},
		{map[string]any{"user_id": "@x:elsewhere", "content": map[string]any{"body": "x", "msgtype": "m.text"}}, 400, "M_INVALID_PARAM"},
		{map[string]any{"user_id": alice.UserID, "content": "text"}, 400, "M_BAD_JSON"},
	} {
		if r := admin.Do("POST", "/_synapse/admin/v1/send_server_notice", bad.body); r.Status != bad.status || r.Errcode() != bad.code {
			t.Fatalf("notice %v: %d %s, want %d %s", bad.body, r.Status, r.Raw, bad.status, bad.code)
		}
	}

	ev1 := admin.MustDo("POST", "/_synapse/admin/v1/send_server_notice", notice).Str("event_id")
	inv := invitedRooms(t, alice)
	if len(inv) != 1 {
		t.Fatalf("alice's invites: %v", inv)
	}
	var room string
	for id, senders := range inv {
		room = id
		if len(senders) == 0 || senders[0] != sys {
			t.Fatalf("invite_state senders %v, want %s", senders, sys)
		}
	}
	tags := alice.MustDo("GET", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/rooms/"+url.PathEscape(room)+"/tags", nil)
	if _, ok := tags.Body["tags"].(map[string]any)["m.server_notice"]; !ok {
		t.Fatalf("notices room not tagged: %s", tags.Raw)
	}
	// The invite cannot be rejected...
	if r := alice.Do("POST", "/_matrix/client/v3/rooms/"+room+"/leave", map[string]any{}); r.Status != 403 || r.Errcode() != "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM" {
		t.Fatalf("rejecting the notices invite: %d %s", r.Status, r.Raw)
	}
	// ...but accepted, and the notice is there.
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+room+"/join", map[string]any{})
	if r := alice.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/event/"+ev1, nil); r.Str("sender") != sys {
		t.Fatalf("the notice: %s", r.Raw)
	}
	// Power levels keep the user from sending.
	if r := alice.Do("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "hi"}); r.Status != 403 {
		t.Fatalf("user sent into the notices room: %d %s", r.Status, r.Raw)
	}
	// Once joined, leaving is allowed; the next notice invites again, to
	// the same room.
	// (A user's own tags of the room stay; the notice tag comes back with
	// the next invite if it was removed.)
	tagPath := "/_matrix/client/v3/user/" + url.PathEscape(alice.UserID) + "/rooms/" + url.PathEscape(room) + "/tags/"
	alice.MustDo("PUT", tagPath+"u.mine", map[string]any{"order": 0.5})
	alice.MustDo("DELETE", tagPath+"m.server_notice", nil)
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+room+"/leave", map[string]any{})
	apitest.NewClient(t, other).As(admin.Token).MustDo("POST", "/_synapse/admin/v1/send_server_notice", notice)
	inv = invitedRooms(t, alice)
	if _, ok := inv[room]; !ok || len(inv) != 1 {
		t.Fatalf("after leaving, the next notice should invite to %s again: %v", room, inv)
	}
	tags = alice.MustDo("GET", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/rooms/"+url.PathEscape(room)+"/tags", nil)
	if tm := tags.Body["tags"].(map[string]any); tm["m.server_notice"] == nil || tm["u.mine"] == nil {
		t.Fatalf("tags after the re-invite: %s", tags.Raw)
	}

	// A transaction ID makes a notice idempotent, on every process.
	a := admin.MustDo("PUT", "/_synapse/admin/v1/send_server_notice/1", notice).Str("event_id")
	b := apitest.NewClient(t, other).As(admin.Token).MustDo("PUT", "/_synapse/admin/v1/send_server_notice/1", notice).Str("event_id")
	c := admin.MustDo("PUT", "/_synapse/admin/v1/send_server_notice/2", notice).Str("event_id")
	if a == "" || a != b || c == a {
		t.Fatalf("notice transactions: %q %q %q", a, b, c)
	}

	// Two first notices for one user at once, on two processes: one room.
	bob := apitest.NewClient(t, base)
	bob.Register("bob", "pw")
	bobNotice := map[string]any{"user_id": bob.UserID, "content": map[string]any{"msgtype": "m.text", "body": "hi bob"}}
	var wg sync.WaitGroup
	for _, u := range []string{base, other, base, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := apitest.NewClient(t, u).As(admin.Token).Do("POST", "/_synapse/admin/v1/send_server_notice", bobNotice); r.Status != http.StatusOK {
				t.Errorf("concurrent notice: %d %s", r.Status, r.Raw)
			}
		}()
	}
	wg.Wait()
	if inv := invitedRooms(t, bob); len(inv) != 1 {
		t.Fatalf("bob has %d notices rooms, want 1: %v", len(inv), inv)
	}
	projectionReplays(t, env, 4)
}
