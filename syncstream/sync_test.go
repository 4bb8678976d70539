package syncstream_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"strand/api/apitest"
)

func v3(p string) string { return "/_matrix/client/v3" + p }

func esc(s string) string { return url.PathEscape(s) }

func newServe(t *testing.T) (*apitest.Env, string) {
	t.Helper()
	env := apitest.New(t)
	env.Projector()
	return env, env.Serve(apitest.DefaultConfig()).URL
}

func user(t *testing.T, base, name string) *apitest.Client {
	t.Helper()
	c := apitest.NewClient(t, base)
	c.Register(name, "pw")
	return c
}

// syncResp is the part of a sync response the tests read.
type syncResp struct {
	NextBatch   string `json:"next_batch"`
	AccountData struct {
		Events []json.RawMessage `json:"events"`
	} `json:"account_data"`
	Presence struct {
		Events []event `json:"events"`
	} `json:"presence"`
	Rooms struct {
		Join map[string]struct {
			State struct {
				Events []event `json:"events"`
			} `json:"state"`
			Timeline struct {
				Events    []event `json:"events"`
				Limited   bool    `json:"limited"`
				PrevBatch string  `json:"prev_batch"`
			} `json:"timeline"`
			AccountData struct {
				Events []event `json:"events"`
			} `json:"account_data"`
			Ephemeral struct {
				Events []event `json:"events"`
			} `json:"ephemeral"`
			Summary map[string]any `json:"summary"`
		} `json:"join"`
		Invite map[string]struct {
			InviteState struct {
				Events []event `json:"events"`
			} `json:"invite_state"`
		} `json:"invite"`
		Leave map[string]struct {
			Timeline struct {
				Events []event `json:"events"`
			} `json:"timeline"`
		} `json:"leave"`
	} `json:"rooms"`
}

type event struct {
	Type     string         `json:"type"`
	EventID  string         `json:"event_id"`
	Sender   string         `json:"sender"`
	StateKey *string        `json:"state_key"`
	Content  map[string]any `json:"content"`
}

// doSync syncs without touching presence (set_presence=offline), so that
// a test's own presence updates do not wake its long-polls.
func doSync(t *testing.T, c *apitest.Client, query string) syncResp {
	t.Helper()
	if query == "" {
		query = "?set_presence=offline"
	} else {
		query += "&set_presence=offline"
	}
	r := c.MustDo("GET", v3("/sync")+query, nil)
	var s syncResp
	if err := json.Unmarshal(r.Raw, &s); err != nil {
		t.Fatalf("sync response: %v: %s", err, r.Raw)
	}
	for _, k := range []string{"next_batch", "account_data", "presence", "rooms", "to_device", "device_lists"} {
		if _, ok := r.Body[k]; !ok {
			t.Fatalf("sync response lacks %s: %s", k, r.Raw)
		}
	}
	return s
}

func bodies(evs []event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			out = append(out, fmt.Sprint(e.Content["body"]))
		}
	}
	return out
}

func send(t *testing.T, c *apitest.Client, roomID, body string) string {
	t.Helper()
	return c.MustDo("POST", v3("/rooms/"+esc(roomID)+"/send/m.room.message"), map[string]any{"msgtype": "m.text", "body": body}).Str("event_id")
}

// The classic guide's "Getting events" steps: a full sync, the same with
// the inline timeline-limit filter, an incremental sync with since, and a
// long-poll with timeout that returns when a message arrives.
func TestGuideGettingEvents(t *testing.T) {
	_, base := newServe(t)
	c := user(t, base, "alice")
	roomID := c.MustDo("POST", "/_matrix/client/r0/createRoom?access_token="+c.Token, `{"room_alias_name":"tutorial"}`).Str("room_id")
	send(t, c, roomID, "one")
	send(t, c, roomID, "two")
	anon := c.As("")
	tok := "?access_token=" + c.Token

	full := anon.MustDo("GET", "/_matrix/client/r0/sync"+tok, nil)
	var s syncResp
	_ = json.Unmarshal(full.Raw, &s)
	room, ok := s.Rooms.Join[roomID]
	if !ok || strings.Join(bodies(room.Timeline.Events), ",") != "one,two" || len(room.State.Events)+len(room.Timeline.Events) < 8 {
		t.Fatalf("full sync: %s", full.Raw)
	}
	if room.Summary["m.joined_member_count"] != float64(1) || room.Summary["m.invited_member_count"] != float64(0) {
		t.Fatalf("summary of a full sync: %v", room.Summary)
	}
	// The guide's filter, with its single quotes.
	filtered := anon.MustDo("GET", "/_matrix/client/r0/sync"+tok+"&filter="+url.QueryEscape(`{'room':{'timeline':{'limit':1}}}`), nil)
	_ = json.Unmarshal(filtered.Raw, &s)
	room = s.Rooms.Join[roomID]
	if len(room.Timeline.Events) != 1 || !room.Timeline.Limited || room.Timeline.PrevBatch == "" || bodies(room.Timeline.Events)[0] != "two" {
		t.Fatalf("filtered sync: %s", filtered.Raw)
	}
	next := s.NextBatch
	// Nothing new: an incremental sync with timeout 0 returns at once, empty.
	inc := doSync(t, c, "?since="+url.QueryEscape(next))
	if len(inc.Rooms.Join) != 0 {
		t.Fatalf("incremental sync with nothing new: %+v", inc.Rooms.Join)
	}
	// A long-poll returns as soon as a message arrives.
	start := time.Now()
	go func() {
		time.Sleep(300 * time.Millisecond)
		send(t, c, roomID, "three")
	}()
	lp := anon.MustDo("GET", "/_matrix/client/r0/sync"+tok+"&since="+url.QueryEscape(next)+"&timeout=20000", nil)
	_ = json.Unmarshal(lp.Raw, &s)
	if got := bodies(s.Rooms.Join[roomID].Timeline.Events); len(got) != 1 || got[0] != "three" {
		t.Fatalf("long-poll: %s", lp.Raw)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("long-poll returned after %s, not when the message arrived", waited)
	}
	// An idle long-poll returns empty after its timeout.
	idle := doSync(t, c, "?since="+url.QueryEscape(s.NextBatch)+"&timeout=200")
	if len(idle.Rooms.Join) != 0 || idle.NextBatch == "" {
		t.Fatalf("idle long-poll: %+v", idle)
	}
}

func TestSyncBadInput(t *testing.T) {
	_, base := newServe(t)
	c := user(t, base, "bad")
	cases := []struct{ q, code string }{
		{"?since=garbage", "M_INVALID_PARAM"},
		{"?since=s1_2", "M_INVALID_PARAM"},
		{"?since=s999999_0_0_0", "M_INVALID_PARAM"},
		{"?timeout=soon", "M_INVALID_PARAM"},
		{"?timeout=-5", "M_INVALID_PARAM"},
		{"?full_state=maybe", "M_INVALID_PARAM"},
		{"?set_presence=dancing", "M_INVALID_PARAM"},
		{"?filter=%7Bbroken", "M_INVALID_PARAM"},
		{"?filter=12345", "M_INVALID_PARAM"},
	}
	for _, tc := range cases {
		r := c.Do("GET", v3("/sync")+tc.q, nil)
		if r.Status != 400 || r.Errcode() != tc.code {
			t.Errorf("%s: %d %s", tc.q, r.Status, r.Raw)
		}
	}
	if r := c.As("").Do("GET", v3("/sync"), nil); r.Status != 401 || r.Errcode() != "M_MISSING_TOKEN" {
		t.Errorf("no token: %d %s", r.Status, r.Raw)
	}
}

// A chain of incremental syncs sees every event exactly once while three
// writers send into five rooms, also when consecutive requests go to two
// different sync workers and one of them is restarted in the middle.
func TestSyncChainExactlyOnce(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	apiURL := env.API(apitest.DefaultConfig()).URL
	w1, _ := env.SyncWorker()
	w2, stop2 := env.SyncWorker()
	reader, roomIDs, sent, writersDone := startWriters(t, apiURL, 5, 60, func(j int) time.Duration {
		if j%10 == 0 {
			return 20 * time.Millisecond
		}
		return 0
	})
	const perWriter = 60

	workers := []string{w1.URL, w2.URL}
	seen := map[string]int{}
	since := ""
	restarted := false
	for i := 0; ; i++ {
		base := workers[i%2]
		c := apitest.NewClient(t, base).As(reader.Token)
		// A timeline limit no burst reaches between two syncs (a limited
		// timeline would leave events to back-pagination).
		q := "?timeout=500&filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":1000}}}`)
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		s := doSync(t, c, q)
		for _, id := range roomIDs {
			room := s.Rooms.Join[id]
			if room.Timeline.Limited && since != "" {
				t.Fatalf("incremental timeline was limited; events would need back-pagination")
			}
			for _, e := range room.Timeline.Events {
				seen[e.EventID]++
			}
		}
		since = s.NextBatch
		if i == 6 && !restarted {
			// Kill worker 2 and start a new one in its place: the chain
			// continues with the same token.
			stop2()
			w2b, _ := env.SyncWorker()
			workers[1] = w2b.URL
			restarted = true
		}
		select {
		case <-writersDone:
			if len(seen) >= 3*perWriter+0 && i > 8 {
				goto check
			}
		default:
		}
		if i > 500 {
			t.Fatal("sync chain did not catch up")
		}
	}
check:
	// One final sync picks up anything written last.
	s := doSync(t, apitest.NewClient(t, workers[0]).As(reader.Token), "?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":1000}}}`)+"&since="+url.QueryEscape(since))
	for _, id := range roomIDs {
		for _, e := range s.Rooms.Join[id].Timeline.Events {
			seen[e.EventID]++
		}
	}
	for id := range sent {
		if seen[id] != 1 {
			t.Errorf("event %s seen %d times", id, seen[id])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s seen %d times", id, n)
		}
	}
}

// A long-poll wakes for an invite; leaving, being kicked and being banned
// move a room to rooms.leave, after which it receives nothing.
func TestSyncInviteAndLeave(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	s := doSync(t, bob, "")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"name": "Secret"}).Str("room_id")
	go func() {
		time.Sleep(200 * time.Millisecond)
		alice.MustDo("POST", v3("/rooms/"+esc(roomID)+"/invite"), map[string]any{"user_id": bob.UserID})
	}()
	s = doSync(t, bob, "?timeout=20000&since="+url.QueryEscape(s.NextBatch))
	inv, ok := s.Rooms.Invite[roomID]
	if !ok {
		t.Fatalf("invite not delivered: %+v", s.Rooms)
	}
	var sawName, sawMember bool
	for _, e := range inv.InviteState.Events {
		sawName = sawName || e.Type == "m.room.name"
		sawMember = sawMember || (e.Type == "m.room.member" && *e.StateKey == bob.UserID && e.Content["membership"] == "invite")
	}
	if !sawName || !sawMember {
		t.Fatalf("invite_state: %+v", inv.InviteState.Events)
	}
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
	s = doSync(t, bob, "?since="+url.QueryEscape(s.NextBatch))
	if j, ok := s.Rooms.Join[roomID]; !ok || len(j.State.Events)+len(j.Timeline.Events) < 5 {
		t.Fatalf("newly joined room lacks full state: %+v", s.Rooms.Join)
	}
	for _, how := range []string{"leave", "kick", "ban"} {
		if how != "leave" {
			alice.MustDo("POST", v3("/rooms/"+esc(roomID)+"/invite"), map[string]any{"user_id": bob.UserID})
			bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
			s = doSync(t, bob, "?since="+url.QueryEscape(s.NextBatch))
		}
		switch how {
		case "leave":
			bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/leave"), nil)
		case "kick":
			alice.MustDo("POST", v3("/rooms/"+esc(roomID)+"/kick"), map[string]any{"user_id": bob.UserID})
		case "ban":
			alice.MustDo("POST", v3("/rooms/"+esc(roomID)+"/ban"), map[string]any{"user_id": bob.UserID})
		}
		s = doSync(t, bob, "?since="+url.QueryEscape(s.NextBatch))
		left, ok := s.Rooms.Leave[roomID]
		if !ok || len(left.Timeline.Events) == 0 {
			t.Fatalf("%s: room not in rooms.leave: %+v", how, s.Rooms)
		}
		if _, still := s.Rooms.Join[roomID]; still {
			t.Fatalf("%s: room still joined", how)
		}
		last := left.Timeline.Events[len(left.Timeline.Events)-1]
		if last.Type != "m.room.member" || *last.StateKey != bob.UserID {
			t.Fatalf("%s: leave timeline ends with %+v", how, last)
		}
		send(t, alice, roomID, "after "+how)
		s2 := doSync(t, bob, "?since="+url.QueryEscape(s.NextBatch))
		if _, ok := s2.Rooms.Join[roomID]; ok {
			t.Fatalf("%s: left room still receives events", how)
		}
		if _, ok := s2.Rooms.Leave[roomID]; ok {
			t.Fatalf("%s: left room reported again", how)
		}
		s = s2
	}
	// include_leave shows left rooms in an initial sync.
	withLeave := doSync(t, bob, "?filter="+url.QueryEscape(`{"room":{"include_leave":true}}`))
	if _, ok := withLeave.Rooms.Leave[roomID]; !ok {
		t.Fatalf("include_leave: %+v", withLeave.Rooms.Leave)
	}
	if noLeave := doSync(t, bob, ""); len(noLeave.Rooms.Leave) != 0 {
		t.Fatalf("initial sync without include_leave shows left rooms")
	}
}

// limited + prev_batch continue exactly into /messages.
func TestSyncPrevBatchIntoMessages(t *testing.T) {
	_, base := newServe(t)
	c := user(t, base, "pager")
	roomID := c.MustDo("POST", v3("/createRoom"), map[string]any{}).Str("room_id")
	for i := range 30 {
		send(t, c, roomID, fmt.Sprint(i))
	}
	s := doSync(t, c, "?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":5}}}`))
	room := s.Rooms.Join[roomID]
	if !room.Timeline.Limited || strings.Join(bodies(room.Timeline.Events), ",") != "25,26,27,28,29" {
		t.Fatalf("timeline: %v limited=%v", bodies(room.Timeline.Events), room.Timeline.Limited)
	}
	r := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=b&limit=10&from="+url.QueryEscape(room.Timeline.PrevBatch)), nil)
	var got []string
	for _, e := range r.Body["chunk"].([]any) {
		ev := e.(map[string]any)
		if ev["type"] == "m.room.message" {
			got = append(got, ev["content"].(map[string]any)["body"].(string))
		}
	}
	if strings.Join(got, ",") != "24,23,22,21,20,19,18,17,16,15" {
		t.Fatalf("messages from prev_batch: %v", got)
	}
	// The next_batch of a sync also works as a /messages token.
	r = c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=b&limit=1&from="+url.QueryEscape(s.NextBatch)), nil)
	if r.Body["chunk"].([]any)[0].(map[string]any)["content"].(map[string]any)["body"] != "29" {
		t.Fatalf("messages from next_batch: %s", r.Raw)
	}
}

func TestSyncFilters(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	r1 := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	r2 := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(r1)+"/join"), nil)
	send(t, alice, r1, "from alice")
	send(t, bob, r1, "from bob")
	alice.MustDo("PUT", v3("/rooms/"+esc(r1)+"/send/org.example.custom/t1"), map[string]any{"x": 1})
	alice.MustDo("PUT", v3("/user/"+esc(alice.UserID)+"/account_data/org.example.a"), map[string]any{"a": 1})
	alice.MustDo("PUT", v3("/user/"+esc(alice.UserID)+"/account_data/org.example.b"), map[string]any{"b": 1})
	alice.MustDo("PUT", v3("/user/"+esc(alice.UserID)+"/rooms/"+esc(r1)+"/account_data/org.example.r"), map[string]any{"r": 1})

	types := func(evs []event) string {
		var ts []string
		for _, e := range evs {
			ts = append(ts, e.Type)
		}
		return strings.Join(ts, ",")
	}
	f := func(js string) syncResp { return doSync(t, alice, "?filter="+url.QueryEscape(js)) }

	s := f(`{"room":{"timeline":{"types":["m.room.message"]}}}`)
	if got := types(s.Rooms.Join[r1].Timeline.Events); got != "m.room.message,m.room.message" {
		t.Errorf("types: %s", got)
	}
	s = f(`{"room":{"timeline":{"not_types":["m.room.*"]}}}`)
	if got := types(s.Rooms.Join[r1].Timeline.Events); got != "org.example.custom" {
		t.Errorf("not_types wildcard: %s", got)
	}
	s = f(`{"room":{"timeline":{"senders":["` + bob.UserID + `"]}}}`)
	if got := bodies(s.Rooms.Join[r1].Timeline.Events); strings.Join(got, ",") != "from bob" {
		t.Errorf("senders: %v", got)
	}
	s = f(`{"room":{"timeline":{"not_senders":["` + alice.UserID + `"]}}}`)
	for _, e := range s.Rooms.Join[r1].Timeline.Events {
		if e.Sender == alice.UserID {
			t.Errorf("not_senders let alice through")
		}
	}
	s = f(`{"room":{"rooms":["` + r2 + `"]}}`)
	if _, ok := s.Rooms.Join[r1]; ok || len(s.Rooms.Join) != 1 {
		t.Errorf("rooms: %v", s.Rooms.Join)
	}
	s = f(`{"room":{"not_rooms":["` + r2 + `"]}}`)
	if _, ok := s.Rooms.Join[r2]; ok {
		t.Errorf("not_rooms let r2 through")
	}
	s = f(`{"room":{"timeline":{"limit":1},"state":{"types":["m.room.create"]}}}`)
	if got := types(s.Rooms.Join[r1].State.Events); got != "m.room.create" {
		t.Errorf("state types: %s", got)
	}
	s = f(`{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}`)
	members := 0
	for _, e := range s.Rooms.Join[r1].State.Events {
		if e.Type == "m.room.member" {
			members++
			if *e.StateKey != alice.UserID {
				t.Errorf("lazy loading sent %s's member event", *e.StateKey)
			}
		}
	}
	if members != 1 {
		t.Errorf("lazy loading: %d member events", members)
	}
	s = f(`{"account_data":{"types":["org.example.a"]}}`)
	if len(s.AccountData.Events) != 1 || !strings.Contains(string(s.AccountData.Events[0]), "org.example.a") {
		t.Errorf("account_data filter: %s", s.AccountData.Events)
	}
	s = f(`{}`)
	// Two set by the user, and the default push rules.
	if len(s.AccountData.Events) != 3 || !strings.Contains(string(s.AccountData.Events[2]), ".m.rule.master") || len(s.Rooms.Join[r1].AccountData.Events) != 1 {
		t.Errorf("account data: global %d, room %d", len(s.AccountData.Events), len(s.Rooms.Join[r1].AccountData.Events))
	}
	// event_fields keeps only the listed fields.
	raw := alice.MustDo("GET", v3("/sync?filter="+url.QueryEscape(`{"event_fields":["type","content.body"],"room":{"timeline":{"limit":1,"types":["m.room.message"]}}}`)), nil)
	if !strings.Contains(string(raw.Raw), `"events":[{"content":{"body":"from bob"},"type":"m.room.message"}]`) {
		t.Errorf("event_fields: %s", raw.Raw)
	}
	// A stored filter by ID.
	id := alice.MustDo("POST", v3("/user/"+esc(alice.UserID)+"/filter"), map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}}).Str("filter_id")
	s = doSync(t, alice, "?filter="+id)
	if len(s.Rooms.Join[r1].Timeline.Events) != 1 {
		t.Errorf("stored filter: %d events", len(s.Rooms.Join[r1].Timeline.Events))
	}
	// Account data changes arrive incrementally.
	next := s.NextBatch
	alice.MustDo("PUT", v3("/user/"+esc(alice.UserID)+"/account_data/org.example.c"), map[string]any{"c": 1})
	s = doSync(t, alice, "?timeout=10000&since="+url.QueryEscape(next))
	if len(s.AccountData.Events) != 1 || !strings.Contains(string(s.AccountData.Events[0]), "org.example.c") {
		t.Errorf("incremental account data: %s", s.AccountData.Events)
	}
}

// startWriters registers a reader and three writers, has the reader create
// rooms that the writers join, and starts the writers sending perWriter
// messages each, round robin over the rooms, pausing pause(j) after their
// j-th. sent receives every acknowledged event ID and is closed, like
// done, once all writers are done.
func startWriters(t *testing.T, apiURL string, rooms, perWriter int, pause func(j int) time.Duration) (reader *apitest.Client, roomIDs []string, sent chan string, done chan struct{}) {
	t.Helper()
	reader = user(t, apiURL, "reader")
	writers := []*apitest.Client{user(t, apiURL, "w1"), user(t, apiURL, "w2"), user(t, apiURL, "w3")}
	for range rooms {
		id := reader.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
		for _, w := range writers {
			w.MustDo("POST", v3("/rooms/"+esc(id)+"/join"), nil)
		}
		roomIDs = append(roomIDs, id)
	}
	var wg sync.WaitGroup
	sent = make(chan string, len(writers)*perWriter)
	for wi, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perWriter {
				sent <- send(t, w, roomIDs[(wi+j)%len(roomIDs)], fmt.Sprintf("%d-%d", wi, j))
				time.Sleep(pause(j))
			}
		}()
	}
	done = make(chan struct{})
	go func() { wg.Wait(); close(sent); close(done) }()
	return reader, roomIDs, sent, done
}

// A timeout too large for a time.Duration still long-polls: it is capped
// at MaxTimeout instead of overflowing into a negative wait that answered
// at once. The poll ends when a message arrives.
func TestSyncHugeTimeoutLongPolls(t *testing.T) {
	_, base := newServe(t)
	c := user(t, base, "patient")
	roomID := c.MustDo("POST", v3("/createRoom"), map[string]any{}).Str("room_id")
	since := doSync(t, c, "").NextBatch

	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, err := http.NewRequest("GET", base+v3("/sync")+"?set_presence=offline&timeout=9223372036855&since="+url.QueryEscape(since), nil)
		if err != nil {
			done <- result{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		done <- result{status: res.StatusCode, body: b, err: err}
	}()
	select {
	case r := <-done:
		t.Fatalf("sync with timeout=9223372036855 returned at once: %d %s %v", r.status, r.body, r.err)
	case <-time.After(700 * time.Millisecond):
	}
	send(t, c, roomID, "wake up")
	select {
	case r := <-done:
		if r.err != nil || r.status != 200 || !strings.Contains(string(r.body), "wake up") {
			t.Fatalf("woken long-poll: %d %s %v", r.status, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll was not woken by a message")
	}
}
