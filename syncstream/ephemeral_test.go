package syncstream_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"strand/api/apitest"
)

// ephemeralOf returns the ephemeral events of a joined room in a raw sync.
func ephemeralOf(t *testing.T, raw []byte, roomID string) []map[string]any {
	t.Helper()
	var s struct {
		Rooms struct {
			Join map[string]struct {
				Ephemeral struct {
					Events []map[string]any `json:"events"`
				} `json:"ephemeral"`
				Unread map[string]float64 `json:"unread_notifications"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s.Rooms.Join[roomID].Ephemeral.Events
}

func nextBatch(t *testing.T, raw []byte) string {
	var s struct {
		NextBatch string `json:"next_batch"`
	}
	_ = json.Unmarshal(raw, &s)
	return s.NextBatch
}

// longPoll starts a sync long-poll in the background; the returned
// function waits for it.
func longPoll(c *apitest.Client, since string) func() (apitest.Response, time.Duration) {
	type result struct {
		r apitest.Response
		d time.Duration
	}
	ch := make(chan result, 1)
	start := time.Now()
	go func() {
		r := c.Do("GET", v3("/sync?timeout=20000&set_presence=offline&since="+url.QueryEscape(since)), nil)
		ch <- result{r, time.Since(start)}
	}()
	return func() (apitest.Response, time.Duration) { res := <-ch; return res.r, res.d }
}

func TestTypingReceiptsAndUnread(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	since := nextBatch(t, bob.MustDo("GET", v3("/sync?set_presence=offline"), nil).Raw)

	// A long-poll wakes on a typing notice.
	wait := longPoll(bob, since)
	time.Sleep(200 * time.Millisecond)
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/typing/"+esc(alice.UserID)), map[string]any{"typing": true, "timeout": 30000})
	r, took := wait()
	if took > 10*time.Second {
		t.Fatalf("typing wake took %s", took)
	}
	evs := ephemeralOf(t, r.Raw, roomID)
	if len(evs) != 1 || evs[0]["type"] != "m.typing" || !strings.Contains(mustJSON(evs[0]), alice.UserID) {
		t.Fatalf("typing: %s", r.Raw)
	}
	since = nextBatch(t, r.Raw)
	// Typing stops.
	wait = longPoll(bob, since)
	time.Sleep(100 * time.Millisecond)
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/typing/"+esc(alice.UserID)), map[string]any{"typing": false})
	r, _ = wait()
	evs = ephemeralOf(t, r.Raw, roomID)
	if len(evs) != 1 || strings.Contains(mustJSON(evs[0]), alice.UserID) {
		t.Fatalf("typing stop: %s", r.Raw)
	}
	since = nextBatch(t, r.Raw)

	// Messages from alice are unread for bob until he reads them.
	var last string
	for _, body := range []string{"one", "two", "three"} {
		last = send(t, alice, roomID, body)
	}
	s := bob.MustDo("GET", v3("/sync?set_presence=offline&since="+url.QueryEscape(since)), nil)
	if !strings.Contains(string(s.Raw), `"unread_notifications":{"highlight_count":0,"notification_count":3}`) {
		t.Fatalf("unread before reading: %s", s.Raw)
	}
	since = nextBatch(t, s.Raw)
	// A long-poll wakes on a receipt, and the count drops.
	wait = longPoll(bob, since)
	time.Sleep(100 * time.Millisecond)
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/receipt/m.read/"+esc(last)), map[string]any{})
	r, took = wait()
	if took > 10*time.Second {
		t.Fatalf("receipt wake took %s", took)
	}
	evs = ephemeralOf(t, r.Raw, roomID)
	if len(evs) != 1 || evs[0]["type"] != "m.receipt" || !strings.Contains(mustJSON(evs[0]), last) {
		t.Fatalf("receipt: %s", r.Raw)
	}
	if !strings.Contains(string(r.Raw), `"notification_count":0`) {
		t.Fatalf("unread after reading: %s", r.Raw)
	}
	// Mentions, by m.mentions or by name in the body, highlight.
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/send/m.room.message/hl1"), map[string]any{"msgtype": "m.text", "body": "hey Bob!"})
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/send/m.room.message/hl2"), map[string]any{"msgtype": "m.text", "body": "ping",
		"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
	send(t, alice, roomID, "not for him")
	s = bob.MustDo("GET", v3("/sync?set_presence=offline"), nil)
	if !strings.Contains(string(s.Raw), `"unread_notifications":{"highlight_count":2,"notification_count":3}`) {
		t.Fatalf("highlights: %s", s.Raw)
	}
	// Alice sees bob's public receipt.
	if a := alice.MustDo("GET", v3("/sync?set_presence=offline"), nil); !strings.Contains(string(a.Raw), `"m.read":{"`+bob.UserID) {
		t.Fatalf("alice does not see bob's receipt: %s", a.Raw)
	}
	// A private receipt reaches only its owner.
	mine := send(t, alice, roomID, "four")
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/receipt/m.read.private/"+esc(mine)), map[string]any{})
	if b := bob.MustDo("GET", v3("/sync?set_presence=offline"), nil); !strings.Contains(string(b.Raw), `"m.read.private"`) {
		t.Fatalf("bob does not see his private receipt: %s", b.Raw)
	}
	if a := alice.MustDo("GET", v3("/sync?set_presence=offline"), nil); strings.Contains(string(a.Raw), "m.read.private") {
		t.Fatalf("alice sees bob's private receipt: %s", a.Raw)
	}
	// read_markers sets m.fully_read and a receipt; threaded receipts are accepted.
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/read_markers"), map[string]any{"m.fully_read": mine, "m.read": mine})
	if fr := bob.MustDo("GET", v3("/user/"+esc(bob.UserID)+"/rooms/"+esc(roomID)+"/account_data/m.fully_read"), nil); fr.Str("event_id") != mine {
		t.Fatalf("m.fully_read: %s", fr.Raw)
	}
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/receipt/m.read/"+esc(mine)), map[string]any{"thread_id": "main"})
	for _, bad := range []struct {
		path string
		body any
		code string
	}{
		{"/rooms/" + esc(roomID) + "/receipt/m.bogus/" + esc(mine), map[string]any{}, "M_INVALID_PARAM"},
		{"/rooms/" + esc(roomID) + "/receipt/m.read/nope", map[string]any{}, "M_INVALID_PARAM"},
		{"/rooms/" + esc(roomID) + "/typing/" + esc(alice.UserID), map[string]any{"typing": true}, "M_FORBIDDEN"},
		{"/rooms/" + esc(roomID) + "/typing/" + esc(bob.UserID), map[string]any{}, "M_MISSING_PARAM"},
	} {
		method := "POST"
		if strings.Contains(bad.path, "/typing/") {
			method = "PUT"
		}
		if r := bob.Do(method, v3(bad.path), bad.body); r.Errcode() != bad.code {
			t.Errorf("%s: %d %s", bad.path, r.Status, r.Raw)
		}
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// Presence reaches exactly the users who share a room.
func TestPresence(t *testing.T) {
	_, base := newServe(t)
	alice, bob, carol := user(t, base, "alice"), user(t, base, "bob"), user(t, base, "carol")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	bobSince := nextBatch(t, bob.MustDo("GET", v3("/sync?set_presence=offline"), nil).Raw)
	carolSince := nextBatch(t, carol.MustDo("GET", v3("/sync?set_presence=offline"), nil).Raw)

	wait := longPoll(bob, bobSince)
	time.Sleep(100 * time.Millisecond)
	alice.MustDo("PUT", v3("/presence/"+esc(alice.UserID)+"/status"), map[string]any{"presence": "online", "status_msg": "hi"})
	r, took := wait()
	if took > 10*time.Second || !strings.Contains(string(r.Raw), `"sender":"`+alice.UserID+`","type":"m.presence"`) && !strings.Contains(string(r.Raw), `"m.presence"`) {
		t.Fatalf("presence not delivered to bob: %s", r.Raw)
	}
	if !strings.Contains(string(r.Raw), `"status_msg":"hi"`) || !strings.Contains(string(r.Raw), `"currently_active":true`) {
		t.Fatalf("presence content: %s", r.Raw)
	}
	c := carol.MustDo("GET", v3("/sync?set_presence=offline&since="+url.QueryEscape(carolSince)), nil)
	if strings.Contains(string(c.Raw), alice.UserID) {
		t.Fatalf("carol, who shares no room with alice, got her presence: %s", c.Raw)
	}
	p := bob.MustDo("GET", v3("/presence/"+esc(alice.UserID)+"/status"), nil)
	if p.Str("presence") != "online" || p.Str("status_msg") != "hi" || p.Body["last_active_ago"] == nil {
		t.Fatalf("GET presence: %s", p.Raw)
	}
	// Syncing marks a user online.
	carol.MustDo("GET", v3("/sync"), nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if p := carol.MustDo("GET", v3("/presence/"+esc(carol.UserID)+"/status"), nil); p.Str("presence") == "online" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("syncing did not mark carol online")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := alice.Do("GET", v3("/presence/"+esc(carol.UserID)+"/status"), nil); r.Status != 403 {
		t.Fatalf("presence of a user who shares no room: %d", r.Status)
	}
	if r := bob.Do("PUT", v3("/presence/"+esc(alice.UserID)+"/status"), map[string]any{"presence": "online"}); r.Status != 403 {
		t.Fatalf("setting another's presence: %d", r.Status)
	}
	if r := bob.Do("PUT", v3("/presence/"+esc(bob.UserID)+"/status"), map[string]any{"presence": "dancing"}); r.Status != 400 {
		t.Fatalf("bad presence: %d", r.Status)
	}
}

// A typing notice that runs out is reported once, then long-polls wait
// again instead of returning the same stop over and over.
func TestTypingExpiryReportedOnce(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	since := nextBatch(t, bob.MustDo("GET", v3("/sync?set_presence=offline"), nil).Raw)
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/typing/"+esc(alice.UserID)), map[string]any{"typing": true, "timeout": 500})
	sawStart, sawStop := false, false
	for i := 0; i < 10 && !sawStop; i++ {
		r, _ := longPoll(bob, since)()
		for _, ev := range ephemeralOf(t, r.Raw, roomID) {
			if ev["type"] == "m.typing" {
				if strings.Contains(mustJSON(ev), alice.UserID) {
					sawStart = true
				} else if sawStart {
					sawStop = true
				}
			}
		}
		since = nextBatch(t, r.Raw)
	}
	if !sawStart || !sawStop {
		t.Fatalf("typing start %v, stop on expiry %v", sawStart, sawStop)
	}
	// Nothing more happens: the next long-poll brings no typing again.
	r := bob.MustDo("GET", v3("/sync?set_presence=offline&timeout=1500&since="+url.QueryEscape(since)), nil)
	if evs := ephemeralOf(t, r.Raw, roomID); len(evs) != 0 {
		t.Fatalf("the expiry was reported again: %s", r.Raw)
	}
}

// A user who newly shares a room gets the other members' presence, and
// lazy-loading clients get the member events of new senders.
func TestPresenceOfNewlySharedAndLazyMembers(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	alice.MustDo("PUT", v3("/presence/"+esc(alice.UserID)+"/status"), map[string]any{"presence": "online", "status_msg": "here"})
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	since := nextBatch(t, bob.MustDo("GET", v3("/sync?set_presence=offline"), nil).Raw)
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	r := bob.MustDo("GET", v3("/sync?set_presence=offline&since="+url.QueryEscape(since)), nil)
	if !strings.Contains(string(r.Raw), `"status_msg":"here"`) {
		t.Fatalf("bob did not get the presence of alice, whose room he joined: %s", r.Raw)
	}
	lazy := url.QueryEscape(`{"room":{"state":{"lazy_load_members":true}}}`)
	since = nextBatch(t, bob.MustDo("GET", v3("/sync?set_presence=offline&filter="+lazy), nil).Raw)
	carol := user(t, base, "carol")
	carol.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	since2 := nextBatch(t, bob.MustDo("GET", v3("/sync?set_presence=offline&filter="+lazy+"&since="+url.QueryEscape(since)), nil).Raw)
	send(t, carol, roomID, "hello from carol")
	r = bob.MustDo("GET", v3("/sync?set_presence=offline&filter="+lazy+"&since="+url.QueryEscape(since2)), nil)
	var s syncResp
	_ = json.Unmarshal(r.Raw, &s)
	found := false
	for _, e := range s.Rooms.Join[roomID].State.Events {
		found = found || (e.Type == "m.room.member" && *e.StateKey == carol.UserID)
	}
	if !found {
		t.Fatalf("lazy-loading incremental sync lacks the new sender's member event: %s", r.Raw)
	}
}

// A lazy-loading client that joins a room gets the presence of its
// members also when their member events are not in the response (a
// lazy-loading build reads only the member events it sends).
func TestPresenceOfNewlySharedLazyBeyondTimeline(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	alice.MustDo("PUT", v3("/presence/"+esc(alice.UserID)+"/status"), map[string]any{"presence": "online", "status_msg": "here"})
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	lazy := url.QueryEscape(`{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`)
	since := nextBatch(t, bob.MustDo("GET", v3("/sync?set_presence=offline&filter="+lazy), nil).Raw)
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	r := bob.MustDo("GET", v3("/sync?set_presence=offline&filter="+lazy+"&since="+url.QueryEscape(since)), nil)
	var s syncResp
	_ = json.Unmarshal(r.Raw, &s)
	for _, e := range s.Rooms.Join[roomID].State.Events {
		if e.Type == "m.room.member" && *e.StateKey == alice.UserID {
			t.Fatalf("lazy-loading sync with a timeline of bob's join sent alice's member event: %s", r.Raw)
		}
	}
	if !strings.Contains(string(r.Raw), `"status_msg":"here"`) {
		t.Fatalf("bob did not get the presence of alice, whose room he joined: %s", r.Raw)
	}
}

// The presence, room.ephemeral, room.account_data and contains_url parts
// of a filter.
func TestSyncFilterEphemeralFields(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	bob.MustDo("PUT", v3("/presence/"+esc(bob.UserID)+"/status"), map[string]any{"presence": "online"})
	last := send(t, bob, roomID, "plain")
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/send/m.room.message/img"), map[string]any{"msgtype": "m.image", "body": "a.png", "url": "mxc://localhost/a"})
	alice.MustDo("POST", v3("/rooms/"+esc(roomID)+"/receipt/m.read/"+esc(last)), map[string]any{})
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/typing/"+esc(alice.UserID)), map[string]any{"typing": true, "timeout": 30000})
	alice.MustDo("PUT", v3("/user/"+esc(alice.UserID)+"/rooms/"+esc(roomID)+"/account_data/org.example.r"), map[string]any{"r": 1})
	get := func(filter string) string {
		return string(alice.MustDo("GET", v3("/sync?set_presence=offline&filter="+url.QueryEscape(filter)), nil).Raw)
	}
	all := get(`{}`)
	for _, want := range []string{`"m.presence"`, `"m.typing"`, `"m.receipt"`, `"org.example.r"`, `"mxc://localhost/a"`} {
		if !strings.Contains(all, want) {
			t.Fatalf("unfiltered sync lacks %s: %s", want, all)
		}
	}
	for _, tc := range []struct{ filter, absent, present string }{
		{`{"presence":{"not_types":["*"]}}`, `"m.presence"`, `"m.typing"`},
		{`{"presence":{"senders":["@nobody:localhost"]}}`, `"m.presence"`, `"m.receipt"`},
		{`{"room":{"ephemeral":{"types":["m.receipt"]}}}`, `"m.typing"`, `"m.receipt"`},
		{`{"room":{"ephemeral":{"not_rooms":["` + roomID + `"]}}}`, `"m.receipt"`, `"m.presence"`},
		{`{"room":{"account_data":{"not_types":["org.example.r"]}}}`, `"org.example.r"`, `"m.typing"`},
		{`{"room":{"timeline":{"contains_url":false}}}`, `"mxc://localhost/a"`, `"plain"`},
		{`{"room":{"timeline":{"contains_url":true}}}`, `"plain"`, `"mxc://localhost/a"`},
	} {
		got := get(tc.filter)
		if strings.Contains(got, tc.absent) || !strings.Contains(got, tc.present) {
			t.Errorf("filter %s: want no %s and a %s: %s", tc.filter, tc.absent, tc.present, got)
		}
	}
}

// A typing timeout too large for a Duration is capped (two minutes), not
// wrapped around into a notice that has already run out.
func TestTypingHugeTimeoutIsCapped(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	since := nextBatch(t, bob.MustDo("GET", v3("/sync?set_presence=offline"), nil).Raw)
	wait := longPoll(bob, since)
	time.Sleep(100 * time.Millisecond)
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/typing/"+esc(alice.UserID)), `{"typing":true,"timeout":9223372036854775807}`)
	r, _ := wait()
	evs := ephemeralOf(t, r.Raw, roomID)
	if len(evs) != 1 || evs[0]["type"] != "m.typing" || !strings.Contains(mustJSON(evs[0]), alice.UserID) {
		t.Fatalf("typing with a huge timeout: %s", r.Raw)
	}
	// Still typing a moment later: the notice did not expire at once.
	time.Sleep(500 * time.Millisecond)
	if s := bob.MustDo("GET", v3("/sync?set_presence=offline"), nil); !strings.Contains(mustJSON(ephemeralOf(t, s.Raw, roomID)), alice.UserID) {
		t.Fatalf("typing notice gone after half a second: %s", s.Raw)
	}
}
