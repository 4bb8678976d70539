package syncstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"strand/api/apitest"
	"strand/eventlog"
	"strand/syncstream"
)

// normalised drops what legitimately differs between two correct answers
// to the same request: the token (each worker names the position it
// reflects), each event's age and a presence's last_active_ago (both read
// off the clock when answering).
func normalised(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("sync response: %v: %s", err, raw)
	}
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			if u, ok := x["unsigned"].(map[string]any); ok {
				delete(u, "age")
			}
			if x["type"] == "m.presence" {
				if c, ok := x["content"].(map[string]any); ok {
					delete(c, "last_active_ago")
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	delete(v.(map[string]any), "next_batch")
	return v
}

// TestWindowMatchesBuild checks that a response a worker makes from its
// window of recent events is the response a build from the projection
// gives: worker A has answered the user before (so it may use its window),
// worker B never has (so it builds), and both answer the same token.
func TestWindowMatchesBuild(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	apiSrv := env.API(apitest.DefaultConfig())
	wA, hA, _ := env.SyncWorkerHandler()

	alice := user(t, apiSrv.URL, "alice")
	bob := user(t, apiSrv.URL, "bob")
	r1 := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	r2 := bob.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(r1)+"/join"), nil)
	alice.MustDo("POST", v3("/rooms/"+esc(r2)+"/join"), nil)

	onA := bob.As(bob.Token)
	onA.Base = wA.URL

	// compare asks both workers for the changes since token and fails on
	// any difference; it returns A's response.
	compare := func(step, token, filter string, wantWindow bool) syncResp {
		t.Helper()
		q := "?set_presence=offline&since=" + url.QueryEscape(token)
		if filter != "" {
			q += "&filter=" + url.QueryEscape(filter)
		}
		// Typing and presence are not awaited by the writes that make
		// them: let worker A's notifier have them all first, as the fresh
		// worker B will have.
		head := ephemeralHead(t, env)
		for deadline := time.Now().Add(10 * time.Second); hA.Notifier.Consumed(eventlog.StreamEphemeral) < head; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: worker A did not read EPHEMERAL up to %d", step, head)
			}
			time.Sleep(5 * time.Millisecond)
		}
		_, winBefore, _ := hA.Paths()
		ra := onA.MustDo("GET", v3("/sync")+q, nil)
		_, winAfter, _ := hA.Paths()
		if used := winAfter > winBefore; used != wantWindow {
			t.Errorf("%s: worker A used the window: %v, want %v", step, used, wantWindow)
		}
		// A fresh worker B has never answered bob, so it builds.
		wB, hB, stopB := env.SyncWorkerHandler()
		defer stopB()
		// A fresh worker reads the EPHEMERAL backlog in the background; a
		// build before it has would be right for its own token, but not
		// the same response.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		hB.Ephemeral.WaitFor(ctx, head)
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("%s: worker B did not read EPHEMERAL up to %d", step, head)
		}
		onB := bob.As(bob.Token)
		onB.Base = wB.URL
		rb := onB.MustDo("GET", v3("/sync")+q, nil)
		if _, w, b := hB.Paths(); w != 0 || b != 1 {
			t.Fatalf("%s: worker B made %d window and %d built responses, want 0 and 1", step, w, b)
		}
		if a, b := normalised(t, ra.Raw), normalised(t, rb.Raw); !reflect.DeepEqual(a, b) {
			t.Errorf("%s: window and build differ:\nwindow: %s\nbuild:  %s", step, ra.Raw, rb.Raw)
		}
		var s syncResp
		if err := json.Unmarshal(ra.Raw, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	first := doSync(t, onA, "")
	send(t, alice, r1, "hello bob")                                                                  // highlights bob: his localpart
	send(t, alice, r2, "hello everyone")                                                             // notifies
	alice.MustDo("PUT", v3("/rooms/"+esc(r2)+"/send/org.example.custom/c1"), map[string]any{"x": 1}) // does not notify
	s := compare("messages in two rooms", first.NextBatch, "", true)
	if n := len(s.Rooms.Join[r1].Timeline.Events) + len(s.Rooms.Join[r2].Timeline.Events); n != 3 {
		t.Fatalf("got %d events, want 3", n)
	}

	// Bob's own message does not count; a mention by user ID highlights.
	send(t, bob, r1, "my own")
	alice.MustDo("PUT", v3("/rooms/"+esc(r1)+"/send/m.room.message/m1"), map[string]any{
		"msgtype": "m.text", "body": "ping", "m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
	s = compare("own message and a mention", s.NextBatch, "", true)

	// A long-poll woken by a message is answered from the window.
	_, winBefore, _ := hA.Paths()
	done := make(chan apitest.Response, 1)
	go func() {
		done <- onA.Do("GET", v3("/sync")+"?set_presence=offline&timeout=10000&since="+url.QueryEscape(s.NextBatch), nil)
	}()
	waitWaiting(t, hA, 1)
	send(t, alice, r1, "while you wait")
	woken := <-done
	if woken.Status != 200 {
		t.Fatalf("long-poll: %d %s", woken.Status, woken.Raw)
	}
	var ws syncResp
	if err := json.Unmarshal(woken.Raw, &ws); err != nil {
		t.Fatal(err)
	}
	if got := bodies(ws.Rooms.Join[r1].Timeline.Events); len(got) != 1 || got[0] != "while you wait" {
		t.Fatalf("long-poll got %v", got)
	}
	if _, w, _ := hA.Paths(); w != winBefore+1 {
		t.Errorf("the woken long-poll was not answered from the window")
	}
	s = ws

	// A timeline filter: the window filters as the build does.
	send(t, alice, r1, "filtered in")
	alice.MustDo("PUT", v3("/rooms/"+esc(r1)+"/send/org.example.custom/c2"), map[string]any{"x": 2})
	s = compare("timeline filter", s.NextBatch, `{"room":{"timeline":{"types":["m.room.message"]}}}`, true)

	// A state change is left to the build.
	alice.MustDo("PUT", v3("/rooms/"+esc(r1)+"/state/m.room.name/"), map[string]any{"name": "renamed"})
	s = compare("state change", s.NextBatch, "", false)

	// More events than the timeline limit: a gap, left to the build.
	for i := 0; i < 3; i++ {
		send(t, alice, r2, "burst")
	}
	s = compare("gap", s.NextBatch, `{"room":{"timeline":{"limit":2}}}`, false)
	if !s.Rooms.Join[r2].Timeline.Limited {
		t.Errorf("a burst over the limit is not limited")
	}
	// And after a build the window is used again.
	send(t, alice, r2, "calm again")
	s = compare("after the gap", s.NextBatch, "", true)

	// Lazy-loading members: the senders' member events come with the
	// timeline. The worker has not read them yet (no build so far
	// lazy-loaded): it reads them, once for everyone who needs them, and
	// answers from the window all the same. (The build of the gap left
	// r1 out, so the window does not know its counts: one build first.)
	const lazy = `{"room":{"state":{"lazy_load_members":true}}}`
	send(t, alice, r1, "r1 again")
	s = compare("r1's counts not known", s.NextBatch, "", false)
	send(t, alice, r1, "lazy one")
	send(t, bob, r1, "lazy one from bob")
	s = compare("lazy, senders not known yet", s.NextBatch, lazy, true)
	send(t, alice, r1, "lazy two")
	send(t, bob, r1, "lazy three")
	s = compare("lazy, from the window", s.NextBatch, lazy, true)
	if st := s.Rooms.Join[r1].State.Events; len(st) != 2 {
		t.Errorf("lazy window response carries %d member events, want alice's and bob's", len(st))
	}
	// A sender's member event changes: that range is a build, and the
	// window's next answer carries the new member event, not the one it
	// held before.
	alice.MustDo("PUT", v3("/rooms/"+esc(r1)+"/state/m.room.member/"+esc(alice.UserID)), map[string]any{"membership": "join", "displayname": "Alice Renamed"})
	s = compare("lazy, a sender's member event changed", s.NextBatch, lazy, false)
	send(t, alice, r1, "lazy four")
	s = compare("lazy, after the member change", s.NextBatch, lazy, true)
	if st := s.Rooms.Join[r1].State.Events; len(st) != 1 || st[0].Content["displayname"] != "Alice Renamed" {
		t.Errorf("lazy window response after alice's rename: state %+v, want her new member event", st)
	}
	// A sender whose member event the user was never sent (a lazy
	// initial sync whose timeline is bob's own message): the window reads
	// it (a few rows, not a build: in a big room, a message from someone
	// the initial sync did not show would otherwise make every member's
	// long-poll a build).
	const lazyOne = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`
	send(t, bob, r1, "bob last")
	init := doSync(t, onA, "?filter="+url.QueryEscape(lazyOne))
	for _, e := range init.Rooms.Join[r1].State.Events {
		if e.Type == "m.room.member" && *e.StateKey == alice.UserID {
			t.Fatalf("the lazy initial sync sent alice's member event: the step below tests nothing")
		}
	}
	send(t, alice, r1, "from alice, unseen")
	s = compare("lazy, a sender never sent", init.NextBatch, lazyOne, true)
	if st := s.Rooms.Join[r1].State.Events; len(st) != 1 || *st[0].StateKey != alice.UserID {
		t.Errorf("lazy window response carries %d member events, want alice's", len(st))
	}

	// A filter that leaves member events out of the timeline: a limited
	// build shows bob's member event as of the timeline's start, which a
	// rename after it (filtered out) has replaced. The window must not take
	// that one as bob's current member event.
	const msgsOnly = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1,"types":["m.room.message"]}}}`
	send(t, bob, r1, "bob before the rename")
	send(t, bob, r1, "bob before the rename, again")
	bob.MustDo("PUT", v3("/rooms/"+esc(r1)+"/state/m.room.member/"+esc(bob.UserID)), map[string]any{"membership": "join", "displayname": "Bob Renamed"})
	init = doSync(t, onA, "?filter="+url.QueryEscape(msgsOnly))
	send(t, bob, r1, "bob after the rename")
	s = compare("lazy, timeline filtered by type, a sender renamed", init.NextBatch, msgsOnly, true)
	if st := s.Rooms.Join[r1].State.Events; len(st) != 1 || st[0].Content["displayname"] != "Bob Renamed" {
		t.Errorf("lazy window response after bob's filtered-out rename: state %+v, want his new member event", st)
	}

	// Presence and typing: a room's members going online or typing are
	// answered from the window too, as the build answers them.
	alice.MustDo("PUT", v3("/presence/"+esc(alice.UserID)+"/status"), map[string]any{"presence": "online", "status_msg": "here"})
	s = compare("presence", s.NextBatch, "", true)
	if p := s.Presence.Events; len(p) != 1 || p[0].Sender != alice.UserID || p[0].Content["presence"] != "online" || p[0].Content["status_msg"] != "here" {
		t.Fatalf("presence change: %+v, want alice online with her status", s.Presence.Events)
	}
	alice.MustDo("PUT", v3("/rooms/"+esc(r1)+"/typing/"+esc(alice.UserID)), map[string]any{"typing": true, "timeout": 30000})
	s = compare("typing", s.NextBatch, "", true)
	if e := s.Rooms.Join[r1].Ephemeral.Events; len(e) != 1 || e[0].Type != "m.typing" || fmt.Sprint(e[0].Content["user_ids"]) != fmt.Sprint([]any{alice.UserID}) {
		t.Fatalf("typing: room ephemeral %+v, want one m.typing of alice", s.Rooms.Join[r1].Ephemeral.Events)
	}
	alice.MustDo("PUT", v3("/rooms/"+esc(r1)+"/typing/"+esc(alice.UserID)), map[string]any{"typing": false})
	send(t, alice, r1, "typed it")
	alice.MustDo("PUT", v3("/presence/"+esc(alice.UserID)+"/status"), map[string]any{"presence": "unavailable"})
	s = compare("typing stopped, a message and presence", s.NextBatch, `{"presence":{"not_senders":["@nobody:localhost"]}}`, true)
	if e := s.Rooms.Join[r1].Ephemeral.Events; len(e) != 1 || e[0].Type != "m.typing" || fmt.Sprint(e[0].Content["user_ids"]) != "[]" {
		t.Errorf("typing stopped: room ephemeral %+v, want one m.typing with nobody", e)
	}
	if p := s.Presence.Events; len(p) != 1 || p[0].Sender != alice.UserID || p[0].Content["presence"] != "unavailable" {
		t.Errorf("presence through a filter that keeps alice: %+v, want alice unavailable", p)
	}
	// A presence filter that leaves alice out: the window filters as the
	// build does.
	alice.MustDo("PUT", v3("/presence/"+esc(alice.UserID)+"/status"), map[string]any{"presence": "online"})
	s = compare("presence filtered out", s.NextBatch, `{"presence":{"not_senders":["`+alice.UserID+`"]}}`, true)
	if len(s.Presence.Events) != 0 {
		t.Errorf("presence of a filtered-out sender: %d events", len(s.Presence.Events))
	}
}

// ephemeralHead is the newest sequence of the EPHEMERAL stream.
func ephemeralHead(t *testing.T, env *apitest.Env) uint64 {
	t.Helper()
	js, err := jetstream.New(env.NATS.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), eventlog.StreamEphemeral)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}

// waitWaiting waits until n long-polls wait on h.
func waitWaiting(t *testing.T, h *syncstream.Worker, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.Waiting() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d long-polls waiting, want %d", h.Waiting(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A sync chain that stays on one worker for a few requests, then moves to
// the other: window responses (ahead of the projection, on the worker that
// issued the token) and builds (on the other worker, which waits for the
// projection to reach the token) alternate while three writers send. Every
// event arrives exactly once (invariant 5).
func TestSyncChainExactlyOnceWindowAndBuild(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	apiURL := env.API(apitest.DefaultConfig()).URL
	w1, h1, _ := env.SyncWorkerHandler()
	w2, h2, _ := env.SyncWorkerHandler()
	const perWriter = 80
	reader, roomIDs, sent, writersDone := startWriters(t, apiURL, 3, perWriter, func(int) time.Duration { return 3 * time.Millisecond })

	// A timeline limit no burst reaches: a limited timeline would leave
	// events to back-pagination, which is not what this test follows.
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":1000}}}`)
	workers := []string{w1.URL, w2.URL}
	seen := map[string]int{}
	// The writers are already sending: the initial sync may hold their
	// first events.
	first := doSync(t, apitest.NewClient(t, workers[0]).As(reader.Token), "?filter="+filter)
	for _, id := range roomIDs {
		for _, e := range first.Rooms.Join[id].Timeline.Events {
			if e.Type == "m.room.message" {
				seen[e.EventID]++
			}
		}
	}
	since := first.NextBatch
	deadline := time.Now().Add(20 * time.Second)
	var trace []string
	for i := 0; ; i++ {
		c := apitest.NewClient(t, workers[(i/4)%2]).As(reader.Token)
		hs := []*syncstream.Worker{h1, h2}[(i/4)%2]
		i0, w0, b0 := hs.Paths()
		s := doSync(t, c, "?timeout=500&filter="+filter+"&since="+url.QueryEscape(since))
		i1, w1_, b1 := hs.Paths()
		n := 0
		for _, id := range roomIDs {
			n += len(s.Rooms.Join[id].Timeline.Events)
		}
		trace = append(trace, fmt.Sprintf("req %d worker %d since %s -> %s: %d events (idle %d window %d build %d)", i, (i/4)%2+1, since, s.NextBatch, n, i1-i0, w1_-w0, b1-b0))
		for _, id := range roomIDs {
			tl := s.Rooms.Join[id].Timeline
			if tl.Limited {
				t.Fatalf("request %d: timeline limited", i)
			}
			for _, e := range tl.Events {
				seen[e.EventID]++
			}
		}
		since = s.NextBatch
		done := false
		select {
		case <-writersDone:
			done = len(seen) >= 3*perWriter
		default:
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("trace:\n%s", strings.Join(trace, "\n"))
			t.Fatalf("sync chain saw %d of %d events", len(seen), 3*perWriter)
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
	_, win1, _ := h1.Paths()
	_, win2, _ := h2.Paths()
	if win1+win2 == 0 {
		t.Error("no response came from a window: the test did not exercise it")
	}
	t.Logf("window responses: %d and %d", win1, win2)
}
