package api_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"strand/api/apitest"
)

// knockSync is the part of a /sync response the knock tests read.
type knockSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]json.RawMessage `json:"join"`
		Invite map[string]json.RawMessage `json:"invite"`
		Leave  map[string]json.RawMessage `json:"leave"`
		Knock  map[string]struct {
			KnockState struct {
				Events []struct {
					Type     string         `json:"type"`
					StateKey string         `json:"state_key"`
					Sender   string         `json:"sender"`
					Content  map[string]any `json:"content"`
				} `json:"events"`
			} `json:"knock_state"`
		} `json:"knock"`
	} `json:"rooms"`
}

func knockSyncOf(t *testing.T, c *apitest.Client, since string) knockSync {
	t.Helper()
	q := "?timeout=0"
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	var s knockSync
	if err := json.Unmarshal(c.MustDo("GET", v3("/sync"+q), nil).Raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Knocking end to end (room versions 7+): a knock on a knock room shows in
// the knocker's sync under rooms.knock with the room's stripped state and
// their own knock; the admin sees it as a member event and can invite the
// knocker (who then joins), or kick to refuse; the knocker can leave to
// rescind. Rooms of other join rules, or of versions before 7, refuse.
func TestKnocking(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	admin := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	admin.Register("kadmin", "pw")
	knocker := admin.As("")
	knocker.Register("knocker", "pw")
	const knockerID = "@knocker:localhost"

	knockRoom := func(version, rule string) string {
		return createRoom(t, admin, map[string]any{"room_version": version, "name": "knock " + version,
			"room_alias_name": "knock" + version + rule,
			"initial_state":   []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": rule}}}})
	}
	room := knockRoom("7", "knock")
	since := knockSyncOf(t, knocker, "").NextBatch

	// Knocking by alias, with a reason and the via parameter.
	r := knocker.MustDo("POST", v3("/knock/"+esc("#knock7knock:localhost")+"?via=localhost&server_name=localhost"), map[string]any{"reason": "let me in"})
	if r.Str("room_id") != room {
		t.Fatalf("knock answer %s", r.Raw)
	}
	// Knocking again appends nothing.
	memberPath := v3("/rooms/" + esc(room) + "/state/m.room.member/" + esc(knocker.UserID) + "?format=event")
	before := admin.MustDo("GET", memberPath, nil).Str("event_id")
	if r := knocker.MustDo("POST", v3("/knock/"+esc(room)), map[string]any{}); r.Str("room_id") != room {
		t.Fatalf("second knock answer %s", r.Raw)
	}
	if after := admin.MustDo("GET", memberPath, nil).Str("event_id"); after != before || before == "" {
		t.Fatalf("a second knock changed the member event: %s → %s", before, after)
	}
	s := knockSyncOf(t, knocker, since)
	k, ok := s.Rooms.Knock[room]
	if !ok {
		t.Fatalf("no rooms.knock entry: %+v", s.Rooms)
	}
	var sawName, sawKnock bool
	for _, ev := range k.KnockState.Events {
		sawName = sawName || ev.Type == "m.room.name" && ev.Content["name"] == "knock 7"
		sawKnock = sawKnock || ev.Type == "m.room.member" && ev.StateKey == knockerID && ev.Content["membership"] == "knock" && ev.Content["reason"] == "let me in"
	}
	if !sawName || !sawKnock {
		t.Fatalf("knock_state %+v", k.KnockState.Events)
	}
	if _, inJoin := s.Rooms.Join[room]; inJoin {
		t.Fatal("knocked room in rooms.join")
	}
	// An initial sync has it too.
	if _, ok := knockSyncOf(t, knocker, "").Rooms.Knock[room]; !ok {
		t.Fatal("initial sync lacks the knock")
	}
	if m := admin.MustDo("GET", v3("/rooms/"+esc(room)+"/state/m.room.member/"+esc(knockerID)), nil); m.Str("membership") != "knock" {
		t.Fatalf("admin sees %s", m.Raw)
	}
	// Knocking twice is allowed (it changes nothing the rules forbid);
	// joining without an invite is not.
	knocker.MustDo("POST", v3("/knock/"+esc(room)), map[string]any{})
	if r := knocker.Do("POST", v3("/join/"+esc(room)), map[string]any{}); r.Status != 403 {
		t.Fatalf("join after knock without invite: %d %s", r.Status, r.Raw)
	}

	// Accepted: the admin invites the knocker, who joins. The knocker's
	// long-poll wakes for the invite.
	since = knockSyncOf(t, knocker, s.NextBatch).NextBatch // past the second knock
	polled := make(chan apitest.Response, 1)
	go func() { polled <- knocker.Do("GET", v3("/sync?timeout=20000&since="+url.QueryEscape(since)), nil) }()
	time.Sleep(300 * time.Millisecond) // let the long-poll start waiting
	start := time.Now()
	admin.MustDo("POST", v3("/rooms/"+esc(room)+"/invite"), map[string]any{"user_id": knockerID})
	r = <-polled
	if r.Status != 200 || !strings.Contains(string(r.Raw), `"invite":{"`+room) || time.Since(start) > 10*time.Second {
		t.Fatalf("long-poll after the invite (%v): %d %s", time.Since(start), r.Status, r.Raw)
	}
	s = knockSyncOf(t, knocker, since)
	if _, ok := s.Rooms.Invite[room]; !ok {
		t.Fatalf("accepted knock not an invite: %+v", s.Rooms)
	}
	knocker.MustDo("POST", v3("/join/"+esc(room)), map[string]any{})
	s = knockSyncOf(t, knocker, s.NextBatch)
	if _, ok := s.Rooms.Join[room]; !ok {
		t.Fatalf("joined room missing: %+v", s.Rooms)
	}

	// Refused: a kick of a knock is a leave the knocker sees.
	room2 := knockRoom("10", "knock_restricted")
	knocker.MustDo("POST", v3("/knock/"+esc(room2)), map[string]any{})
	since = knockSyncOf(t, knocker, "").NextBatch
	admin.MustDo("POST", v3("/rooms/"+esc(room2)+"/kick"), map[string]any{"user_id": knockerID, "reason": "no"})
	s = knockSyncOf(t, knocker, since)
	if _, ok := s.Rooms.Leave[room2]; !ok {
		t.Fatalf("refused knock not in rooms.leave: %+v", s.Rooms)
	}
	// Rescinded: the knocker knocks again and leaves.
	knocker.MustDo("POST", v3("/knock/"+esc(room2)), map[string]any{})
	knocker.MustDo("POST", v3("/rooms/"+esc(room2)+"/leave"), map[string]any{})
	if m := admin.MustDo("GET", v3("/rooms/"+esc(room2)+"/state/m.room.member/"+esc(knockerID)), nil); m.Str("membership") != "leave" {
		t.Fatalf("rescinded knock: %s", m.Raw)
	}
	if _, ok := knockSyncOf(t, knocker, "").Rooms.Knock[room2]; ok {
		t.Fatal("rescinded knock still in rooms.knock")
	}
	// Banned users cannot knock.
	admin.MustDo("POST", v3("/rooms/"+esc(room2)+"/ban"), map[string]any{"user_id": knockerID})
	if r := knocker.Do("POST", v3("/knock/"+esc(room2)), map[string]any{}); r.Status != 403 {
		t.Fatalf("banned knock: %d %s", r.Status, r.Raw)
	}

	// A published knock room is listed with its join rule, so clients
	// offer to knock (Complement's TestKnockRoomsInPublicRoomsDirectory).
	admin.MustDo("PUT", v3("/directory/list/room/"+esc(room)), map[string]any{"visibility": "public"})
	pr := admin.MustDo("POST", v3("/publicRooms"), map[string]any{"filter": map[string]any{"generic_search_term": "knock 7"}})
	if chunk, _ := pr.Body["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["join_rule"] != "knock" {
		t.Fatalf("publicRooms: %s", pr.Raw)
	}

	for _, tc := range []struct{ version, rule string }{{"10", "public"}, {"10", "invite"}, {"6", "knock"}, {"9", "knock_restricted"}} {
		room := knockRoom(tc.version, tc.rule)
		if r := knocker.Do("POST", v3("/knock/"+esc(room)), map[string]any{}); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("knock on a v%s %s room: %d %s", tc.version, tc.rule, r.Status, r.Raw)
		}
	}
	if r := knocker.Do("POST", v3("/knock/"+esc("!nowhere:localhost")), map[string]any{}); r.Status != 404 {
		t.Errorf("knock on an unknown room: %d %s", r.Status, r.Raw)
	}
	if r := knocker.Do("POST", v3("/knock/"+esc("#nowhere:localhost")), map[string]any{}); r.Status != 404 {
		t.Errorf("knock on an unknown alias: %d %s", r.Status, r.Raw)
	}
}
