package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/eventlog"
)

func v3(p string) string { return "/_matrix/client/v3" + p }

func esc(s string) string { return url.PathEscape(s) }

// members returns the user IDs of a /members chunk with each membership.
func memberships(t *testing.T, r apitest.Response) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range r.Body["chunk"].([]any) {
		ev := e.(map[string]any)
		out[ev["state_key"].(string)] = ev["content"].(map[string]any)["membership"].(string)
	}
	return out
}

func chunkBodies(r apitest.Response) []string {
	var out []string
	for _, e := range r.Body["chunk"].([]any) {
		ev := e.(map[string]any)
		if ev["type"] == "m.room.message" {
			b, _ := ev["content"].(map[string]any)["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

// The classic guide's room steps, verbatim apart from the base URL, under
// r0 and v3: create a room with an alias, send, invite, join by ID and by
// alias, list members, read history.
func TestGuideRoomSteps(t *testing.T) {
	_, c := newServer(t)
	for _, prefix := range []string{"/_matrix/client/r0", "/_matrix/client/v3"} {
		ver := prefix[len(prefix)-2:]
		alice := apitest.NewClient(t, c.Base)
		alice.Register("alice"+ver, "wordpass")
		friend := apitest.NewClient(t, c.Base)
		friend.Register("friend"+ver, "wordpass")
		other := apitest.NewClient(t, c.Base)
		other.Register("other"+ver, "wordpass")
		tok := "?access_token=" + alice.Token
		anon := alice.As("")

		r := anon.MustDo("POST", prefix+"/createRoom"+tok, `{"room_alias_name":"tutorial`+ver+`"}`)
		roomID, alias := r.Str("room_id"), r.Str("room_alias")
		if !strings.HasPrefix(roomID, "!") || alias != "#tutorial"+ver+":localhost" {
			t.Fatalf("createRoom: %s", r.Raw)
		}
		d := anon.MustDo("GET", prefix+"/directory/room/"+esc(alias), nil)
		if d.Str("room_id") != roomID {
			t.Fatalf("alias lookup: %s", d.Raw)
		}
		for _, msg := range []string{`{"msgtype":"m.text", "body":"hello"}`, `{"msgtype":"m.emote", "body":"waves"}`, `{"msgtype":"org.example.custom", "body":"anything", "x":[1]}`} {
			r = anon.MustDo("POST", prefix+"/rooms/"+esc(roomID)+"/send/m.room.message"+tok, msg)
			if !strings.HasPrefix(r.Str("event_id"), "$") {
				t.Fatalf("send: %s", r.Raw)
			}
		}
		// Private by default: an uninvited user cannot join.
		if r := other.Do("POST", prefix+"/rooms/"+esc(roomID)+"/join", `{}`); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
			t.Fatalf("uninvited join: %d %s", r.Status, r.Raw)
		}
		anon.MustDo("POST", prefix+"/rooms/"+esc(roomID)+"/invite"+tok, `{"user_id":"`+friend.UserID+`"}`)
		friend.As("").MustDo("POST", prefix+"/rooms/"+esc(roomID)+"/join?access_token="+friend.Token, `{}`)
		// Join by alias after an invite.
		anon.MustDo("POST", prefix+"/rooms/"+esc(roomID)+"/invite"+tok, `{"user_id":"`+other.UserID+`"}`)
		j := other.As("").MustDo("POST", prefix+"/join/"+esc(alias)+"?access_token="+other.Token, `{}`)
		if j.Str("room_id") != roomID {
			t.Fatalf("join by alias: %s", j.Raw)
		}
		m := anon.MustDo("GET", prefix+"/rooms/"+esc(roomID)+"/members"+tok, nil)
		if got := memberships(t, m); got[alice.UserID] != "join" || got[friend.UserID] != "join" || got[other.UserID] != "join" {
			t.Fatalf("members: %v", got)
		}
		h := anon.MustDo("GET", prefix+"/rooms/"+esc(roomID)+"/messages"+tok+"&dir=b&limit=10", nil)
		if got := chunkBodies(h); len(got) != 3 || got[0] != "anything" || got[2] != "hello" {
			t.Fatalf("messages: %v %s", got, h.Raw)
		}
		if r := friend.Do("POST", prefix+"/join/"+esc("#nope:localhost"), `{}`); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
			t.Fatalf("unknown alias: %d %s", r.Status, r.Raw)
		}
	}
}

func createRoom(t *testing.T, c *apitest.Client, body any) string {
	t.Helper()
	return c.MustDo("POST", v3("/createRoom"), body).Str("room_id")
}

func TestCreateRoomOptions(t *testing.T) {
	_, c := newServer(t)
	c.Register("owner", "pw")
	bob := apitest.NewClient(t, c.Base)
	bob.Register("bob", "pw")

	roomID := createRoom(t, c, map[string]any{
		"preset": "public_chat", "visibility": "public", "name": "The Room", "topic": "Talk",
		"invite": []string{bob.UserID}, "is_direct": true,
		"initial_state":                []map[string]any{{"type": "org.example.state", "state_key": "k", "content": map[string]any{"v": 1}}},
		"power_level_content_override": map[string]any{"events_default": 10},
		"creation_content":             map[string]any{"m.federate": false},
	})
	st := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/state"), nil)
	var events []map[string]any
	if err := json.Unmarshal(st.Raw, &events); err != nil {
		t.Fatal(err)
	}
	byType := map[string]map[string]any{}
	for _, e := range events {
		byType[e["type"].(string)+"|"+e["state_key"].(string)] = e["content"].(map[string]any)
	}
	checks := map[string][2]any{
		"m.room.join_rules|":          {"join_rule", "public"},
		"m.room.name|":                {"name", "The Room"},
		"m.room.topic|":               {"topic", "Talk"},
		"m.room.history_visibility|":  {"history_visibility", "shared"},
		"org.example.state|k":         {"v", float64(1)},
		"m.room.power_levels|":        {"events_default", float64(10)},
		"m.room.create|":              {"m.federate", false},
		"m.room.member|" + bob.UserID: {"membership", "invite"},
		"m.room.member|" + c.UserID:   {"membership", "join"},
	}
	for k, want := range checks {
		if got := byType[k][want[0].(string)]; got != want[1] {
			t.Errorf("%s %s = %v, want %v", k, want[0], got, want[1])
		}
	}
	if byType["m.room.member|"+bob.UserID]["is_direct"] != true {
		t.Error("is_direct invite lacks is_direct")
	}
	if v := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/state/m.room.name"), nil); v.Str("name") != "The Room" {
		t.Fatalf("state event: %s", v.Raw)
	}
	if v := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/state/m.room.name/?format=event"), nil); v.Str("event_id") == "" {
		t.Fatalf("state event format=event: %s", v.Raw)
	}
	if r := c.Do("GET", v3("/rooms/"+esc(roomID)+"/state/m.room.nothing/"), nil); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("missing state: %d %s", r.Status, r.Raw)
	}
	// Listed in the directory, findable by search.
	pr := c.MustDo("POST", v3("/publicRooms"), map[string]any{"filter": map[string]any{"generic_search_term": "the ro"}})
	if !strings.Contains(string(pr.Raw), roomID) || pr.Body["total_room_count_estimate"] != float64(1) {
		t.Fatalf("publicRooms search: %s", pr.Raw)
	}
	if pr := c.MustDo("POST", v3("/publicRooms"), map[string]any{"filter": map[string]any{"generic_search_term": "zzz"}}); len(pr.Body["chunk"].([]any)) != 0 {
		t.Fatalf("publicRooms non-matching search: %s", pr.Raw)
	}
	if vis := c.MustDo("GET", v3("/directory/list/room/"+esc(roomID)), nil); vis.Str("visibility") != "public" {
		t.Fatalf("directory visibility: %s", vis.Raw)
	}
	c.MustDo("PUT", v3("/directory/list/room/"+esc(roomID)), map[string]any{"visibility": "private"})
	if pr := c.As("").MustDo("GET", v3("/publicRooms"), nil); strings.Contains(string(pr.Raw), roomID) {
		t.Fatalf("unpublished room still listed: %s", pr.Raw)
	}
	if r := bob.Do("PUT", v3("/directory/list/room/"+esc(roomID)), map[string]any{"visibility": "public"}); r.Status != 403 {
		t.Fatalf("non-moderator publishing: %d %s", r.Status, r.Raw)
	}

	for _, ver := range []string{"10", "11", "12"} {
		id := createRoom(t, c, map[string]any{"room_version": ver})
		cr := c.MustDo("GET", v3("/rooms/"+esc(id)+"/state/m.room.create"), nil)
		if cr.Str("room_version") != ver {
			t.Fatalf("room_version %s: %s", ver, cr.Raw)
		}
		c.MustDo("PUT", v3("/rooms/"+esc(id)+"/send/m.room.message/t1"), map[string]any{"msgtype": "m.text", "body": "v" + ver})
	}
	bad := []struct {
		body       any
		status     int
		code       string
		desciption string
	}{
		{map[string]any{"room_version": "13"}, 400, "M_UNSUPPORTED_ROOM_VERSION", "future version"},
		{map[string]any{"room_version": "banana"}, 400, "M_UNSUPPORTED_ROOM_VERSION", "unknown version"},
		{map[string]any{"preset": "party"}, 400, "M_INVALID_PARAM", "bad preset"},
		{map[string]any{"invite": []string{"not-a-user"}}, 400, "M_INVALID_PARAM", "bad invitee"},
		{map[string]any{"room_alias_name": "has space"}, 400, "M_INVALID_PARAM", "bad alias"},
		{map[string]any{"name": 5}, 400, "M_BAD_JSON", "name wrong type"},
		{`{"name":`, 400, "M_NOT_JSON", "truncated"},
	}
	for _, b := range bad {
		if r := c.Do("POST", v3("/createRoom"), b.body); r.Status != b.status || r.Errcode() != b.code {
			t.Errorf("%s: %d %s", b.desciption, r.Status, r.Raw)
		}
	}
	// An alias can belong to one room only.
	createRoom(t, c, map[string]any{"room_alias_name": "unique"})
	if r := c.Do("POST", v3("/createRoom"), map[string]any{"room_alias_name": "unique"}); r.Status != 400 || r.Errcode() != "M_ROOM_IN_USE" {
		t.Fatalf("taken alias at createRoom: %d %s", r.Status, r.Raw)
	}
}

func TestSendIdempotentAndErrors(t *testing.T) {
	_, c := newServer(t)
	c.Register("sender", "pw")
	roomID := createRoom(t, c, map[string]any{})
	path := v3("/rooms/" + esc(roomID) + "/send/m.room.message/txn1")
	a := c.MustDo("PUT", path, map[string]any{"msgtype": "m.text", "body": "once"})
	b := c.MustDo("PUT", path, map[string]any{"msgtype": "m.text", "body": "once"})
	if a.Str("event_id") == "" || a.Str("event_id") != b.Str("event_id") {
		t.Fatalf("txn retry gave %s then %s", a.Raw, b.Raw)
	}
	// Concurrent retries of one transaction also produce one event.
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = c.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/send/m.room.message/txn2"), map[string]any{"msgtype": "m.text", "body": "race"}).Str("event_id")
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent retries gave different event IDs: %v", ids)
		}
	}
	// Every standard msgtype, well formed, and custom ones are accepted.
	for i, m := range []map[string]any{
		{"msgtype": "m.notice", "body": "n"},
		{"msgtype": "m.image", "body": "a.png", "url": "mxc://localhost/a", "info": map[string]any{"w": 1}},
		{"msgtype": "m.file", "body": "f", "file": map[string]any{"url": "mxc://localhost/f"}},
		{"msgtype": "m.audio", "body": "a", "url": "mxc://localhost/b"},
		{"msgtype": "m.video", "body": "v", "url": "mxc://localhost/c"},
		{"msgtype": "m.location", "body": "here", "geo_uri": "geo:1,2"},
		{"msgtype": "com.example.poll", "anything": true},
	} {
		c.MustDo("PUT", v3(fmt.Sprintf("/rooms/%s/send/m.room.message/std%d", esc(roomID), i)), m)
	}
	// Another device with the same txnId is another transaction.
	other := c.As(c.As("").MustDo("POST", v3("/login"), map[string]any{"type": "m.login.password", "user": "sender", "password": "pw"}).Str("access_token"))
	o := other.MustDo("PUT", path, map[string]any{"msgtype": "m.text", "body": "once"})
	if o.Str("event_id") == a.Str("event_id") {
		t.Fatal("a second device's transaction was deduplicated against the first")
	}
	h := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=b&limit=50"), nil)
	var onces int
	for _, b := range chunkBodies(h) {
		if b == "once" || b == "race" {
			onces++
		}
	}
	if onces != 3 {
		t.Fatalf("want 3 messages (once, race, once from the other device), got %v", chunkBodies(h))
	}
	// The sending device sees its transaction ID; others do not.
	var sawTxn bool
	for _, e := range h.Body["chunk"].([]any) {
		ev := e.(map[string]any)
		if ev["event_id"] == a.Str("event_id") {
			sawTxn = ev["unsigned"].(map[string]any)["transaction_id"] == "txn1"
		}
	}
	if !sawTxn {
		t.Fatalf("transaction_id missing for the sending device: %s", h.Raw)
	}

	stranger := apitest.NewClient(t, c.Base)
	stranger.Register("stranger", "pw")
	big := strings.Repeat("x", 70000)
	cases := []struct {
		name   string
		cl     *apitest.Client
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"not a member", stranger, "PUT", "/rooms/" + esc(roomID) + "/send/m.room.message/t", map[string]any{"body": "hi"}, 403, "M_FORBIDDEN"},
		{"unknown room", c, "PUT", "/rooms/" + esc("!nope:localhost") + "/send/m.room.message/t", map[string]any{"body": "hi"}, 403, "M_FORBIDDEN"},
		{"invalid room ID", c, "PUT", "/rooms/nope/send/m.room.message/t", map[string]any{"body": "hi"}, 400, "M_INVALID_PARAM"},
		{"too large", c, "PUT", "/rooms/" + esc(roomID) + "/send/m.room.message/big", map[string]any{"body": big}, 413, "M_TOO_LARGE"},
		{"content not object", c, "PUT", "/rooms/" + esc(roomID) + "/send/m.room.message/t3", `[1]`, 400, "M_BAD_JSON"},
		{"content not JSON", c, "PUT", "/rooms/" + esc(roomID) + "/send/m.room.message/t4", `{`, 400, "M_NOT_JSON"},
		{"m.text without body", c, "PUT", "/rooms/" + esc(roomID) + "/send/m.room.message/t5", map[string]any{"msgtype": "m.text"}, 400, "M_BAD_JSON"},
		{"m.text body not string", c, "PUT", "/rooms/" + esc(roomID) + "/send/m.room.message/t6", map[string]any{"msgtype": "m.text", "body": 5}, 400, "M_BAD_JSON"},
		{"m.image without url", c, "PUT", "/rooms/" + esc(roomID) + "/send/m.room.message/t7", map[string]any{"msgtype": "m.image", "body": "x.png"}, 400, "M_BAD_JSON"},
		{"m.location without geo_uri", c, "PUT", "/rooms/" + esc(roomID) + "/send/m.room.message/t8", map[string]any{"msgtype": "m.location", "body": "here"}, 400, "M_BAD_JSON"},
		{"state for non-member", stranger, "PUT", "/rooms/" + esc(roomID) + "/state/m.room.topic/", map[string]any{"topic": "x"}, 403, "M_FORBIDDEN"},
		{"member state key not a user", c, "PUT", "/rooms/" + esc(roomID) + "/state/m.room.member/bob", map[string]any{"membership": "join"}, 400, "M_INVALID_PARAM"},
		{"read state as stranger", stranger, "GET", "/rooms/" + esc(roomID) + "/state", nil, 403, "M_FORBIDDEN"},
		{"read members as stranger", stranger, "GET", "/rooms/" + esc(roomID) + "/members", nil, 403, "M_FORBIDDEN"},
		{"read messages as stranger", stranger, "GET", "/rooms/" + esc(roomID) + "/messages?dir=b", nil, 403, "M_FORBIDDEN"},
		{"read event as stranger", stranger, "GET", "/rooms/" + esc(roomID) + "/event/" + esc(a.Str("event_id")), nil, 404, "M_NOT_FOUND"},
		{"bad dir", c, "GET", "/rooms/" + esc(roomID) + "/messages?dir=x", nil, 400, "M_INVALID_PARAM"},
		{"bad from", c, "GET", "/rooms/" + esc(roomID) + "/messages?dir=b&from=zzz", nil, 400, "M_INVALID_PARAM"},
		{"bad limit", c, "GET", "/rooms/" + esc(roomID) + "/messages?dir=b&limit=-1", nil, 400, "M_INVALID_PARAM"},
		{"bad filter", c, "GET", "/rooms/" + esc(roomID) + "/messages?dir=b&filter=%7Bx", nil, 400, "M_INVALID_PARAM"},
		{"bad event ID", c, "GET", "/rooms/" + esc(roomID) + "/event/nope", nil, 400, "M_INVALID_PARAM"},
		{"unknown event", c, "GET", "/rooms/" + esc(roomID) + "/event/" + esc("$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaA"), nil, 404, "M_NOT_FOUND"},
		{"invite bad user", c, "POST", "/rooms/" + esc(roomID) + "/invite", map[string]any{"user_id": "x"}, 400, "M_INVALID_PARAM"},
		{"invite missing user", c, "POST", "/rooms/" + esc(roomID) + "/invite", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"invite unknown user", c, "POST", "/rooms/" + esc(roomID) + "/invite", map[string]any{"user_id": "@ghost:localhost"}, 404, "M_NOT_FOUND"},
		{"join bad ID", c, "POST", "/join/" + esc("nope"), map[string]any{}, 400, "M_INVALID_PARAM"},
		// As for a room one may not join (the spec's only refusal), so
		// that joins cannot probe for rooms.
		{"join unknown room", c, "POST", "/join/" + esc("!nope:localhost"), map[string]any{}, 403, "M_FORBIDDEN"},
		{"alias invalid", c, "GET", "/directory/room/" + esc("nope"), nil, 400, "M_INVALID_PARAM"},
		{"alias unknown", c, "GET", "/directory/room/" + esc("#nope:localhost"), nil, 404, "M_NOT_FOUND"},
		{"profile unknown", c, "GET", "/profile/" + esc("@ghost:localhost"), nil, 404, "M_NOT_FOUND"},
		{"profile of another", c, "PUT", "/profile/" + esc(stranger.UserID) + "/displayname", map[string]any{"displayname": "x"}, 403, "M_FORBIDDEN"},
		{"kick non-member", c, "POST", "/rooms/" + esc(roomID) + "/kick", map[string]any{"user_id": stranger.UserID}, 403, "M_FORBIDDEN"},
		{"redact unknown", c, "PUT", "/rooms/" + esc(roomID) + "/redact/" + esc("$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaA") + "/r1", map[string]any{}, 404, "M_NOT_FOUND"},
		{"forget joined room", c, "POST", "/rooms/" + esc(roomID) + "/forget", map[string]any{}, 400, "M_UNKNOWN"},
		{"join_rule not a string", c, "PUT", "/rooms/" + esc(roomID) + "/state/m.room.join_rules/", map[string]any{"join_rule": 5}, 400, "M_BAD_JSON"},
		{"unknown join_rule", c, "PUT", "/rooms/" + esc(roomID) + "/state/m.room.join_rules/", map[string]any{"join_rule": "party"}, 400, "M_BAD_JSON"},
		{"history_visibility wrong", c, "PUT", "/rooms/" + esc(roomID) + "/state/m.room.history_visibility/", map[string]any{"history_visibility": true}, 400, "M_BAD_JSON"},
		{"name not a string", c, "PUT", "/rooms/" + esc(roomID) + "/state/m.room.name/", map[string]any{"name": []int{1}}, 400, "M_BAD_JSON"},
		{"power levels invalid", c, "PUT", "/rooms/" + esc(roomID) + "/state/m.room.power_levels/", map[string]any{"ban": "lots"}, 400, "M_BAD_JSON"},
		{"createRoom bad override", c, "POST", "/createRoom", map[string]any{"power_level_content_override": map[string]any{"users_default": "x"}}, 400, "M_BAD_JSON"},
		{"createRoom bad initial_state", c, "POST", "/createRoom", map[string]any{"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{"join_rule": 1}}}}, 400, "M_BAD_JSON"},
		{"presence of a stranger", c, "GET", "/presence/" + esc(stranger.UserID) + "/status", nil, 403, "M_FORBIDDEN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.cl.Do(tc.method, v3(tc.path), tc.body)
			if r.Status != tc.status || r.Errcode() != tc.code {
				t.Fatalf("got %d %s, want %d %s: %.300s", r.Status, r.Errcode(), tc.status, tc.code, r.Raw)
			}
		})
	}
}

func TestMembershipTransitions(t *testing.T) {
	_, c := newServer(t)
	c.Register("mod", "pw")
	u := apitest.NewClient(t, c.Base)
	u.Register("user", "pw")
	roomID := createRoom(t, c, map[string]any{"preset": "public_chat"})
	rp := func(p string) string { return v3("/rooms/" + esc(roomID) + p) }
	member := func(uid string) string {
		return memberships(t, c.MustDo("GET", rp("/members"), nil))[uid]
	}
	u.MustDo("POST", rp("/join"), nil)
	u.MustDo("POST", rp("/join"), nil) // again: harmless
	if n := len(c.MustDo("GET", rp("/joined_members"), nil).Body["joined"].(map[string]any)); n != 2 {
		t.Fatalf("joined_members: %d", n)
	}
	if jr := u.MustDo("GET", v3("/joined_rooms"), nil); !strings.Contains(string(jr.Raw), roomID) {
		t.Fatalf("joined_rooms: %s", jr.Raw)
	}
	// A plain member cannot kick.
	if r := u.Do("POST", rp("/kick"), map[string]any{"user_id": c.UserID}); r.Status != 403 {
		t.Fatalf("member kicked the moderator: %d", r.Status)
	}
	c.MustDo("POST", rp("/kick"), map[string]any{"user_id": u.UserID, "reason": "test"})
	if m := member(u.UserID); m != "leave" {
		t.Fatalf("after kick: %s", m)
	}
	u.MustDo("POST", rp("/join"), nil) // public room: may rejoin
	c.MustDo("POST", rp("/ban"), map[string]any{"user_id": u.UserID})
	if r := u.Do("POST", rp("/join"), nil); r.Status != 403 {
		t.Fatalf("banned user joined: %d", r.Status)
	}
	// A banned user still reads the room as it was when they left.
	if r := u.MustDo("GET", rp("/members"), nil); memberships(t, r)[u.UserID] != "ban" {
		t.Fatalf("banned user's view: %s", r.Raw)
	}
	c.MustDo("POST", rp("/unban"), map[string]any{"user_id": u.UserID})
	if m := member(u.UserID); m != "leave" {
		t.Fatalf("after unban: %s", m)
	}
	u.MustDo("POST", rp("/join"), nil)
	u.MustDo("POST", rp("/leave"), nil)
	if r := u.Do("GET", rp("/messages?dir=b"), nil); r.Status != 200 {
		t.Fatalf("a left member reads history up to leaving: %d", r.Status)
	}
	u.MustDo("POST", rp("/forget"), nil)
	u.MustDo("POST", rp("/forget"), nil) // again: harmless
	if jr := u.MustDo("GET", v3("/joined_rooms"), nil); strings.Contains(string(jr.Raw), roomID) {
		t.Fatalf("left room still joined: %s", jr.Raw)
	}
	for _, p := range []string{"/messages?dir=b", "/state", "/members"} {
		if r := u.Do("GET", rp(p), nil); r.Status != 403 {
			t.Fatalf("forgotten room %s: %d", p, r.Status)
		}
	}
	// membership filters and at=.
	left := c.MustDo("GET", rp("/members?membership=leave"), nil)
	if got := memberships(t, left); len(got) != 1 || got[u.UserID] != "leave" {
		t.Fatalf("membership=leave: %v", got)
	}
	notLeft := c.MustDo("GET", rp("/members?not_membership=leave"), nil)
	if got := memberships(t, notLeft); got[u.UserID] != "" || got[c.UserID] != "join" {
		t.Fatalf("not_membership=leave: %v", got)
	}
	// Power levels: giving the user 50 lets them kick.
	u.MustDo("POST", rp("/join"), nil)
	pl := c.MustDo("GET", rp("/state/m.room.power_levels/"), nil).Body
	pl["users"].(map[string]any)[u.UserID] = 50
	c.MustDo("PUT", rp("/state/m.room.power_levels/"), pl)
	third := apitest.NewClient(t, c.Base)
	third.Register("third", "pw")
	third.MustDo("POST", rp("/join"), nil)
	u.MustDo("POST", rp("/kick"), map[string]any{"user_id": third.UserID})
	// But not raise themselves above their own level.
	pl["users"].(map[string]any)[u.UserID] = 100
	if r := u.Do("PUT", rp("/state/m.room.power_levels/"), pl); r.Status != 403 {
		t.Fatalf("self-promotion allowed: %d %s", r.Status, r.Raw)
	}
	// The denormalised member count (directory, sync summaries) agrees
	// with the members after all these transitions.
	c.MustDo("PUT", v3("/directory/list/room/"+esc(roomID)), map[string]any{"visibility": "public"})
	joined := len(c.MustDo("GET", rp("/joined_members"), nil).Body["joined"].(map[string]any))
	pr := c.MustDo("GET", v3("/publicRooms"), nil)
	if n := pr.Body["chunk"].([]any)[0].(map[string]any)["num_joined_members"]; n != float64(joined) {
		t.Fatalf("num_joined_members %v, joined members %d", n, joined)
	}
}

func TestRedactionAndProfile(t *testing.T) {
	_, c := newServer(t)
	c.Register("rita", "pw")
	u := apitest.NewClient(t, c.Base)
	u.Register("ulf", "pw")
	roomID := createRoom(t, c, map[string]any{"preset": "public_chat"})
	rp := func(p string) string { return v3("/rooms/" + esc(roomID) + p) }
	u.MustDo("POST", rp("/join"), nil)
	mine := c.MustDo("PUT", rp("/send/m.room.message/1"), map[string]any{"msgtype": "m.text", "body": "secret"}).Str("event_id")
	theirs := u.MustDo("PUT", rp("/send/m.room.message/1"), map[string]any{"msgtype": "m.text", "body": "ulf's"}).Str("event_id")
	// Ulf (power 0) may not redact Rita's event, but may redact his own.
	if r := u.Do("PUT", rp("/redact/"+esc(mine)+"/r1"), map[string]any{}); r.Status != 403 {
		t.Fatalf("member redacted another's event: %d %s", r.Status, r.Raw)
	}
	red := u.MustDo("PUT", rp("/redact/"+esc(theirs)+"/r2"), map[string]any{"reason": "oops"}).Str("event_id")
	again := u.MustDo("PUT", rp("/redact/"+esc(theirs)+"/r2"), map[string]any{"reason": "oops"}).Str("event_id")
	if red == "" || red != again {
		t.Fatalf("redaction txn: %s %s", red, again)
	}
	// Transaction IDs are per endpoint: a send whose txnId looks like the
	// redaction's is another transaction.
	lookalike := u.MustDo("PUT", rp("/send/m.room.message/redact:r2"), map[string]any{"msgtype": "m.text", "body": "x"}).Str("event_id")
	if lookalike == red {
		t.Fatal("a send collided with a redaction's transaction")
	}
	// The moderator may redact anyone's.
	c.MustDo("PUT", rp("/redact/"+esc(mine)+"/r3"), map[string]any{})
	for _, id := range []string{mine, theirs} {
		ev := c.MustDo("GET", rp("/event/"+esc(id)), nil)
		if len(ev.Body["content"].(map[string]any)) != 0 || ev.Body["unsigned"].(map[string]any)["redacted_because"] == nil {
			t.Fatalf("redacted event: %s", ev.Raw)
		}
	}

	c.MustDo("PUT", v3("/profile/"+esc(c.UserID)+"/displayname"), map[string]any{"displayname": "Rita R."})
	c.MustDo("PUT", v3("/profile/"+esc(c.UserID)+"/avatar_url"), map[string]any{"avatar_url": "mxc://localhost/abc"})
	p := u.MustDo("GET", v3("/profile/"+esc(c.UserID)), nil)
	if p.Str("displayname") != "Rita R." || p.Str("avatar_url") != "mxc://localhost/abc" {
		t.Fatalf("profile: %s", p.Raw)
	}
	if d := u.MustDo("GET", v3("/profile/"+esc(c.UserID)+"/displayname"), nil); d.Str("displayname") != "Rita R." {
		t.Fatalf("displayname: %s", d.Raw)
	}
	m := u.MustDo("GET", rp("/state/m.room.member/"+esc(c.UserID)), nil)
	if m.Str("displayname") != "Rita R." || m.Str("avatar_url") != "mxc://localhost/abc" || m.Str("membership") != "join" {
		t.Fatalf("member event after profile change: %s", m.Raw)
	}
	jm := u.MustDo("GET", rp("/joined_members"), nil).Body["joined"].(map[string]any)[c.UserID].(map[string]any)
	if jm["display_name"] != "Rita R." {
		t.Fatalf("joined_members profile: %v", jm)
	}
	// A new room's join carries the profile.
	r2 := createRoom(t, c, map[string]any{})
	if m := c.MustDo("GET", v3("/rooms/"+esc(r2)+"/state/m.room.member/"+esc(c.UserID)), nil); m.Str("displayname") != "Rita R." {
		t.Fatalf("join in new room lacks profile: %s", m.Raw)
	}
}

func TestAliases(t *testing.T) {
	_, c := newServer(t)
	c.Register("ali", "pw")
	other := apitest.NewClient(t, c.Base)
	other.Register("bea", "pw")
	roomID := createRoom(t, c, map[string]any{"preset": "public_chat"})
	for _, a := range []string{"#one:localhost", "#two:localhost"} {
		c.MustDo("PUT", v3("/directory/room/"+esc(a)), map[string]any{"room_id": roomID})
	}
	if r := c.Do("PUT", v3("/directory/room/"+esc("#one:localhost")), map[string]any{"room_id": roomID}); r.Status != 409 {
		t.Fatalf("duplicate alias: %d %s", r.Status, r.Raw)
	}
	// Only members may point an alias at a room; a room that does not
	// exist looks the same as one the caller is not in.
	if r := other.Do("PUT", v3("/directory/room/"+esc("#bea:localhost")), map[string]any{"room_id": roomID}); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("alias by a non-member: %d %s", r.Status, r.Raw)
	}
	if r := c.Do("PUT", v3("/directory/room/"+esc("#x:elsewhere.org")), map[string]any{"room_id": roomID}); r.Status != 400 {
		t.Fatalf("foreign alias: %d %s", r.Status, r.Raw)
	}
	if r := other.Do("PUT", v3("/directory/room/"+esc("#three:localhost")), map[string]any{"room_id": "!nope:localhost"}); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("alias to unknown room: %d %s", r.Status, r.Raw)
	}
	if r := c.Do("PUT", v3("/directory/room/"+esc("#three:localhost")), map[string]any{}); r.Status != 400 || r.Errcode() != "M_MISSING_PARAM" {
		t.Fatalf("alias without room_id: %d %s", r.Status, r.Raw)
	}
	c.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/state/m.room.canonical_alias/"), map[string]any{"alias": "#one:localhost", "alt_aliases": []string{"#two:localhost"}})
	if r := c.Do("PUT", v3("/rooms/"+esc(roomID)+"/state/m.room.canonical_alias/"), map[string]any{"alias": "#nowhere:localhost"}); r.Status != 400 || r.Errcode() != "M_BAD_ALIAS" {
		t.Fatalf("canonical alias not pointing at the room: %d %s", r.Status, r.Raw)
	}
	if r := c.Do("PUT", v3("/rooms/"+esc(roomID)+"/state/m.room.canonical_alias/"), map[string]any{"alias": "nope"}); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Fatalf("invalid canonical alias: %d %s", r.Status, r.Raw)
	}
	as := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/aliases"), nil)
	if got := fmt.Sprint(as.Body["aliases"]); got != "[#one:localhost #two:localhost]" {
		t.Fatalf("aliases: %s", got)
	}
	// bea (not creator, not moderator) cannot delete it; ali can, and then
	// the alias is free for bea's own room.
	other.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	if r := other.Do("DELETE", v3("/directory/room/"+esc("#one:localhost")), nil); r.Status != 403 {
		t.Fatalf("non-creator deleted alias: %d", r.Status)
	}
	c.MustDo("DELETE", v3("/directory/room/"+esc("#one:localhost")), nil)
	if r := c.Do("GET", v3("/directory/room/"+esc("#one:localhost")), nil); r.Status != 404 {
		t.Fatalf("deleted alias resolves: %d", r.Status)
	}
	if r := c.Do("DELETE", v3("/directory/room/"+esc("#one:localhost")), nil); r.Status != 404 {
		t.Fatalf("deleting a deleted alias: %d", r.Status)
	}
	beas := createRoom(t, other, map[string]any{"room_alias_name": "one"})
	if r := c.MustDo("GET", v3("/directory/room/"+esc("#one:localhost")), nil); r.Str("room_id") != beas {
		t.Fatalf("reused alias: %s", r.Raw)
	}
}

func TestHistoryVisibility(t *testing.T) {
	_, c := newServer(t)
	c.Register("host", "pw")
	late := apitest.NewClient(t, c.Base)
	late.Register("late", "pw")
	for _, tc := range []struct {
		vis     string
		seeOld  bool
		preJoin bool
	}{{"shared", true, false}, {"joined", false, false}, {"invited", false, true}, {"world_readable", true, true}} {
		t.Run(tc.vis, func(t *testing.T) {
			roomID := createRoom(t, c, map[string]any{"preset": "public_chat",
				"initial_state": []map[string]any{{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": tc.vis}}}})
			rp := func(p string) string { return v3("/rooms/" + esc(roomID) + p) }
			c.MustDo("PUT", rp("/send/m.room.message/old"), map[string]any{"msgtype": "m.text", "body": "before"})
			c.MustDo("POST", rp("/invite"), map[string]any{"user_id": late.UserID})
			c.MustDo("PUT", rp("/send/m.room.message/inv"), map[string]any{"msgtype": "m.text", "body": "while invited"})
			late.MustDo("POST", rp("/join"), nil)
			c.MustDo("PUT", rp("/send/m.room.message/new"), map[string]any{"msgtype": "m.text", "body": "after"})
			resp := late.MustDo("GET", rp("/messages?dir=f&limit=100"), nil)
			got := strings.Join(chunkBodies(resp), ",")
			want := "after"
			if tc.preJoin {
				want = "while invited," + want
			}
			if tc.seeOld {
				want = "before,while invited,after"
			}
			if got != want {
				t.Fatalf("%s: late joiner sees %q, want %q", tc.vis, got, want)
			}
		})
	}
}

// Paging 1,000 events both ways returns every event exactly once, in
// order, and the end of one page continues exactly where the next starts.
func TestMessagesPaging1000(t *testing.T) {
	_, c := newServer(t)
	c.Register("pager", "pw")
	roomID := createRoom(t, c, map[string]any{})
	const n = 1000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.MustDo("PUT", v3(fmt.Sprintf("/rooms/%s/send/m.room.message/p%d", esc(roomID), i)), map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i)})
		}()
	}
	wg.Wait()
	collect := func(dir string) []string {
		var ids []string
		from := ""
		for pages := 0; pages < 200; pages++ {
			q := "?dir=" + dir + "&limit=37"
			if from != "" {
				q += "&from=" + url.QueryEscape(from)
			}
			r := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/messages"+q), nil)
			for _, e := range r.Body["chunk"].([]any) {
				ev := e.(map[string]any)
				if ev["type"] == "m.room.message" {
					ids = append(ids, ev["event_id"].(string))
				}
			}
			end := r.Str("end")
			if end == "" {
				return ids
			}
			from = end
		}
		t.Fatal("paging did not end")
		return nil
	}
	back := collect("b")
	fwd := collect("f")
	if len(back) != n || len(fwd) != n {
		t.Fatalf("paged %d backwards and %d forwards, want %d", len(back), len(fwd), n)
	}
	seen := map[string]bool{}
	for i := range fwd {
		if seen[fwd[i]] {
			t.Fatalf("event %s twice", fwd[i])
		}
		seen[fwd[i]] = true
		if back[n-1-i] != fwd[i] {
			t.Fatalf("orders differ at %d", i)
		}
	}
	// Context around an event.
	ctx := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/context/"+esc(fwd[500])+"?limit=4"), nil)
	before, after := ctx.Body["events_before"].([]any), ctx.Body["events_after"].([]any)
	if len(before) != 2 || len(after) != 2 || before[0].(map[string]any)["event_id"] != fwd[499] || after[0].(map[string]any)["event_id"] != fwd[501] {
		t.Fatalf("context: %d before, %d after", len(before), len(after))
	}
	if ctx.Body["event"].(map[string]any)["event_id"] != fwd[500] || len(ctx.Body["state"].([]any)) == 0 {
		t.Fatal("context event or state missing")
	}
	// A filter narrows /messages.
	f := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=b&limit=5&filter="+url.QueryEscape(`{"types":["m.room.member"]}`)), nil)
	for _, e := range f.Body["chunk"].([]any) {
		if e.(map[string]any)["type"] != "m.room.member" {
			t.Fatalf("filter let through %v", e.(map[string]any)["type"])
		}
	}
}

// Redacting a state event changes what later events are authorised
// against: in a version 10 room, redacting the power levels drops their
// "invite" (which that version's redaction does not keep), so the
// default of 0 applies again.
func TestRedactedStateInAuth(t *testing.T) {
	_, c := newServer(t)
	c.Register("op", "pw")
	u := apitest.NewClient(t, c.Base)
	u.Register("plain", "pw")
	guest := apitest.NewClient(t, c.Base)
	guest.Register("guest", "pw")
	roomID := createRoom(t, c, map[string]any{"preset": "public_chat", "room_version": "10",
		"power_level_content_override": map[string]any{"invite": 50}})
	u.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	if r := u.Do("POST", v3("/rooms/"+esc(roomID)+"/invite"), map[string]any{"user_id": guest.UserID}); r.Status != 403 {
		t.Fatalf("invite below the invite level: %d %s", r.Status, r.Raw)
	}
	pl := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/state/m.room.power_levels/?format=event"), nil).Str("event_id")
	c.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/redact/"+esc(pl)+"/r1"), map[string]any{})
	u.MustDo("POST", v3("/rooms/"+esc(roomID)+"/invite"), map[string]any{"user_id": guest.UserID})
}

// An alias left pointing at a room that never reached the log (its
// creator died between claiming the alias and appending the room) resolves
// to nothing and can be claimed again after a grace period.
func TestOrphanedAliasReclaimed(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.OrphanAliasGrace = 50 * time.Millisecond
	c := apitest.NewClient(t, env.API(cfg).URL)
	c.Register("heir", "pw")
	l := env.Conn()
	if _, err := l.Append(context.Background(), eventlog.AliasSubject("#ghost:localhost"),
		&eventlog.AliasSet{Alias: "#ghost:localhost", RoomID: "!never:localhost", Creator: c.UserID},
		eventlog.AppendOptions{ExpectSeq: eventlog.Expect(0)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if r := c.Do("GET", v3("/directory/room/"+esc("#ghost:localhost")), nil); r.Status != 404 {
		t.Fatalf("orphaned alias resolves: %d %s", r.Status, r.Raw)
	}
	roomID := c.MustDo("POST", v3("/createRoom"), map[string]any{"room_alias_name": "ghost"}).Str("room_id")
	if r := c.MustDo("GET", v3("/directory/room/"+esc("#ghost:localhost")), nil); r.Str("room_id") != roomID {
		t.Fatalf("reclaimed alias: %s", r.Raw)
	}
}

// A sync worker shows a client a room event only once the projection has
// it (the consumer holds the record until G covers it), so that whatever
// the client then asks about the event is answered at once. Here the
// projector is stopped while the message is sent: the long-poll waits for
// it, and the event, its history and a receipt for it all work as soon as
// the projector is back.
func TestEventLookupWaitsForRoomsProjection(t *testing.T) {
	env := apitest.New(t)
	stop := env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.ApplyTimeout = 2 * time.Second
	base := env.Serve(cfg).URL
	alice, bob := apitest.NewClient(t, base), apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	bob.Register("bob", "pw")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	since := bob.MustDo("GET", v3("/sync?set_presence=offline"), nil).Str("next_batch")
	stop()

	polled := make(chan apitest.Response, 1)
	go func() {
		polled <- bob.Do("GET", v3("/sync?set_presence=offline&timeout=20000&since="+url.QueryEscape(since)), nil)
	}()
	time.Sleep(100 * time.Millisecond)
	// On the log, but not readable: the send answers 503 (retry).
	if r := alice.Do("PUT", v3("/rooms/"+esc(roomID)+"/send/m.room.message/t1"), map[string]any{"msgtype": "m.text", "body": "early"}); r.Status != 503 {
		t.Fatalf("send without a projector: %d %s", r.Status, r.Raw)
	}
	select {
	case r := <-polled:
		t.Fatalf("the long-poll answered before the projection had the message: %d %s", r.Status, r.Raw)
	case <-time.After(500 * time.Millisecond):
	}
	env.Projector()
	var s struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						EventID string `json:"event_id"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	r := <-polled
	if err := json.Unmarshal(r.Raw, &s); err != nil || len(s.Rooms.Join[roomID].Timeline.Events) != 1 {
		t.Fatalf("the long-poll did not get the message once projected: %d %s", r.Status, r.Raw)
	}
	eventID := s.Rooms.Join[roomID].Timeline.Events[0].EventID
	if r := bob.Do("GET", v3("/rooms/"+esc(roomID)+"/event/"+esc(eventID)), nil); r.Status != 200 || r.Str("event_id") != eventID {
		t.Fatalf("event shown by sync: %d %s", r.Status, r.Raw)
	}
	if r := bob.Do("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=b&limit=1&from="+url.QueryEscape(s.NextBatch)), nil); r.Status != 200 || !strings.Contains(string(r.Raw), eventID) {
		t.Fatalf("history from the sync's token: %d %s", r.Status, r.Raw)
	}
	// A token beyond the log's head was never issued.
	if r := bob.Do("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=b&from=s999999_0_0_0"), nil); r.Status != 400 {
		t.Fatalf("history from a future token: %d %s", r.Status, r.Raw)
	}
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/receipt/m.read/"+esc(eventID)), map[string]any{})
	// An event that does not exist is still 404, without a long wait.
	if r := bob.Do("GET", v3("/rooms/"+esc(roomID)+"/event/"+esc("$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")), nil); r.Status != 404 {
		t.Fatalf("unknown event: %d %s", r.Status, r.Raw)
	}
}
