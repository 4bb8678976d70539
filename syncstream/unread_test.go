package syncstream_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"testing"

	"strand/api/apitest"
	"strand/projector/store"
)

type counts struct {
	Highlight    int `json:"highlight_count"`
	Notification int `json:"notification_count"`
}

type unreadResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Unread  *counts           `json:"unread_notifications"`
			Threads map[string]counts `json:"unread_thread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

// TestUnreadFollowsPushRules: unread counts come from the user's push
// rules (a muted room counts nothing, a keyword highlights), read
// receipts reset them (a threaded receipt only its thread), and MSC3773
// splits them per thread. Every step asks a worker that may answer from
// its window and a fresh one that builds, and requires the same answer.
func TestUnreadFollowsPushRules(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	apiSrv := env.API(apitest.DefaultConfig())
	wA, hA, _ := env.SyncWorkerHandler()

	alice := user(t, apiSrv.URL, "alice")
	bob := user(t, apiSrv.URL, "bob")
	carol := user(t, apiSrv.URL, "carol")
	r1 := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	muted := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	for _, r := range []string{r1, muted} {
		bob.MustDo("POST", v3("/rooms/"+esc(r)+"/join"), nil)
		carol.MustDo("POST", v3("/rooms/"+esc(r)+"/join"), nil)
	}
	// Bob mutes one room and wants to hear about cake.
	bob.MustDo("PUT", v3("/pushrules/global/room/"+esc(muted)), map[string]any{"actions": []any{}})
	bob.MustDo("PUT", v3("/pushrules/global/content/cake"), map[string]any{"pattern": "cake",
		"actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})

	onA := bob.As(bob.Token)
	onA.Base = wA.URL
	const threads = `{"room":{"timeline":{"unread_thread_notifications":true}}}`

	compare := func(step, token, filter string, wantWindow bool) unreadResp {
		t.Helper()
		q := "?set_presence=offline&since=" + url.QueryEscape(token)
		if filter != "" {
			q += "&filter=" + url.QueryEscape(filter)
		}
		_, w0, _ := hA.Paths()
		ra := onA.MustDo("GET", v3("/sync")+q, nil)
		if _, w1, _ := hA.Paths(); (w1 > w0) != wantWindow {
			t.Fatalf("%s: answered from the window: %v, want %v", step, w1 > w0, wantWindow)
		}
		wB, _, stopB := env.SyncWorkerHandler()
		defer stopB()
		onB := bob.As(bob.Token)
		onB.Base = wB.URL
		rb := onB.MustDo("GET", v3("/sync")+q, nil)
		if a, b := normalised(t, ra.Raw), normalised(t, rb.Raw); !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: window and build differ:\nwindow: %s\nbuild:  %s", step, ra.Raw, rb.Raw)
		}
		var s unreadResp
		if err := json.Unmarshal(ra.Raw, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	want := func(step string, s unreadResp, roomID string, main counts, threads map[string]counts) {
		t.Helper()
		jr, ok := s.Rooms.Join[roomID]
		if !ok || jr.Unread == nil {
			t.Fatalf("%s: room %s has no unread_notifications", step, roomID)
		}
		if *jr.Unread != main || !reflect.DeepEqual(jr.Threads, threads) {
			t.Fatalf("%s: counts %+v threads %+v, want %+v %+v", step, *jr.Unread, jr.Threads, main, threads)
		}
	}

	first := doSync(t, onA, "")
	// A message in the muted room and two in the other, one with the
	// keyword; carol's message in the muted room with the keyword still
	// highlights (content rules come before room rules).
	send(t, alice, muted, "muted chatter")
	send(t, alice, r1, "hello")
	send(t, alice, r1, "There is CAKE.")
	s := compare("muted room and a keyword", first.NextBatch, "", true)
	want("keyword", s, r1, counts{Highlight: 1, Notification: 2}, nil)
	want("muted", s, muted, counts{}, nil)
	send(t, carol, muted, "cake in here")
	s = compare("keyword in the muted room", s.NextBatch, "", true)
	want("keyword in the muted room", s, muted, counts{Highlight: 1, Notification: 1}, nil)

	// A thread: its root is in the main timeline, its replies in the
	// thread; one reply mentions bob.
	root := send(t, alice, r1, "a thread starts")
	inThread := func(body string, mentions bool) string {
		c := map[string]any{"msgtype": "m.text", "body": body,
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}
		if mentions {
			c["m.mentions"] = map[string]any{"user_ids": []string{bob.UserID}}
		}
		return alice.MustDo("POST", v3("/rooms/"+esc(r1)+"/send/m.room.message"), c).Str("event_id")
	}
	b1 := inThread("first reply", false)
	b2 := inThread("second reply", true)
	base := s.NextBatch
	s = compare("thread, counted in the room", base, "", true)
	want("thread, counted in the room", s, r1, counts{Highlight: 2, Notification: 5}, nil)
	st := compare("thread, apart", base, threads, true)
	want("thread, apart", st, r1, counts{Highlight: 1, Notification: 3}, map[string]counts{root: {Highlight: 1, Notification: 2}})

	// A reference to a thread reply belongs to the thread (the spec's
	// hops), which the window cannot tell: the build answers.
	alice.MustDo("POST", v3("/rooms/"+esc(r1)+"/send/m.room.message"), map[string]any{"msgtype": "m.text", "body": "see above",
		"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": b1}})
	st = compare("reference into the thread", st.NextBatch, threads, false)
	want("reference into the thread", st, r1, counts{Highlight: 1, Notification: 3}, map[string]counts{root: {Highlight: 1, Notification: 3}})
	// A reaction does not notify, so the window can answer.
	alice.MustDo("POST", v3("/rooms/"+esc(r1)+"/send/m.reaction"), map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": b2, "key": "+1"}})
	st = compare("reaction", st.NextBatch, threads, true)
	want("reaction", st, r1, counts{Highlight: 1, Notification: 3}, map[string]counts{root: {Highlight: 1, Notification: 3}})

	// A threaded receipt reads the thread up to b1 only.
	bob.MustDo("POST", v3("/rooms/"+esc(r1)+"/receipt/m.read/"+esc(b1)), map[string]any{"thread_id": root})
	st = compare("thread receipt", st.NextBatch, threads, false)
	want("thread receipt", st, r1, counts{Highlight: 1, Notification: 3}, map[string]counts{root: {Highlight: 1, Notification: 2}})
	// A main-timeline receipt on the root reads the main timeline to it.
	bob.MustDo("POST", v3("/rooms/"+esc(r1)+"/receipt/m.read/"+esc(root)), map[string]any{"thread_id": "main"})
	st = compare("main receipt", st.NextBatch, threads, false)
	want("main receipt", st, r1, counts{}, map[string]counts{root: {Highlight: 1, Notification: 2}})
	// New events after the receipts, from the window.
	inThread("third reply", false)
	send(t, alice, r1, "back in the room")
	st = compare("after the receipts", st.NextBatch, threads, true)
	want("after the receipts", st, r1, counts{Notification: 1}, map[string]counts{root: {Highlight: 1, Notification: 3}})
	// An unthreaded receipt on the newest event reads everything.
	last := send(t, alice, r1, "last")
	bob.MustDo("POST", v3("/rooms/"+esc(r1)+"/receipt/m.read/"+esc(last)), map[string]any{})
	st = compare("unthreaded receipt", st.NextBatch, threads, false)
	want("unthreaded receipt", st, r1, counts{}, nil)
	// And bob's own messages never count.
	send(t, bob, r1, "cake from bob")
	st = compare("own message", st.NextBatch, threads, true)
	want("own message", st, r1, counts{}, nil)
}

// TestUnreadBound: past store.MaxUnreadExamined unread events a room's
// count stops growing for plain messages but still counts mentions, in
// the window as in the build.
func TestUnreadBound(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	apiSrv := env.API(apitest.DefaultConfig())
	wA, hA, _ := env.SyncWorkerHandler()
	alice := user(t, apiSrv.URL, "alice")
	bob := user(t, apiSrv.URL, "bob")
	room := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(room)+"/join"), nil)
	onA := bob.As(bob.Token)
	onA.Base = wA.URL
	syncOn := func(c *apitest.Client, since string) unreadResp {
		t.Helper()
		r := c.MustDo("GET", v3("/sync")+"?set_presence=offline&since="+url.QueryEscape(since), nil)
		var s unreadResp
		if err := json.Unmarshal(r.Raw, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := doSync(t, onA, "")
	for i := 0; i < store.MaxUnreadExamined+3; i++ {
		send(t, alice, room, fmt.Sprintf("message %d", i))
	}
	s := syncOn(onA, first.NextBatch)
	if got := *s.Rooms.Join[room].Unread; got != (counts{Notification: store.MaxUnreadExamined}) {
		t.Fatalf("past the bound: %+v", got)
	}
	send(t, alice, room, "one more")
	alice.MustDo("POST", v3("/rooms/"+esc(room)+"/send/m.room.message"), map[string]any{"msgtype": "m.text", "body": "look",
		"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
	_, w0, _ := hA.Paths()
	win := syncOn(onA, s.NextBatch)
	if _, w1, _ := hA.Paths(); w1 != w0+1 {
		t.Fatal("not answered from the window")
	}
	wB, _, stopB := env.SyncWorkerHandler()
	defer stopB()
	onB := bob.As(bob.Token)
	onB.Base = wB.URL
	built := syncOn(onB, s.NextBatch)
	want := counts{Notification: store.MaxUnreadExamined + 1, Highlight: 1}
	if *win.Rooms.Join[room].Unread != want || *built.Rooms.Join[room].Unread != want {
		t.Fatalf("window %+v build %+v, want %+v", *win.Rooms.Join[room].Unread, *built.Rooms.Join[room].Unread, want)
	}
}

// TestThreadedReceiptCounts follows Complement's TestThreadedReceipts:
// A, then B, C (mentions bob), E in A's thread, D (mentions bob) in the
// main timeline, F referencing A, G (an m.room.reaction, which no rule
// notifies) annotating F; then receipts main@A, A-thread@B, unthreaded@D
// and A-thread@G.
func TestThreadedReceiptCounts(t *testing.T) {
	_, base := newServe(t)
	alice, bob := user(t, base, "alice"), user(t, base, "bob")
	room := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/rooms/"+esc(room)+"/join"), nil)
	since := doSync(t, bob, "").NextBatch
	post := func(typ string, c map[string]any) string {
		return alice.MustDo("POST", v3("/rooms/"+esc(room)+"/send/"+typ), c).Str("event_id")
	}
	msg := func(body string, rel map[string]any) map[string]any {
		c := map[string]any{"msgtype": "m.text", "body": body}
		if rel != nil {
			c["m.relates_to"] = rel
		}
		return c
	}
	a := post("m.room.message", msg("Hello world!", nil))
	inA := map[string]any{"event_id": a, "rel_type": "m.thread"}
	b := post("m.room.message", msg("Start thread!", inA))
	post("m.room.message", msg("Thread response "+bob.UserID+"!", inA))
	d := post("m.room.message", msg("Hello "+bob.UserID+"!", nil))
	post("m.room.message", msg("End thread", inA))
	f := post("m.room.message", msg("Reference!", map[string]any{"event_id": a, "rel_type": "m.reference"}))
	g := post("m.room.reaction", map[string]any{"m.relates_to": map[string]any{"event_id": f, "rel_type": "m.annotation", "key": "test"}})

	const threads = `{"room":{"timeline":{"unread_thread_notifications":true}}}`
	check := func(step string, main counts, thread *counts, total counts) {
		t.Helper()
		for _, filter := range []string{"", threads} {
			q := "?set_presence=offline&since=" + url.QueryEscape(since)
			if filter != "" {
				q += "&filter=" + url.QueryEscape(filter)
			}
			var s unreadResp
			if err := json.Unmarshal(bob.MustDo("GET", v3("/sync")+q, nil).Raw, &s); err != nil {
				t.Fatal(err)
			}
			jr := s.Rooms.Join[room]
			if jr.Unread == nil {
				t.Fatalf("%s: no unread_notifications", step)
			}
			if filter == "" {
				if *jr.Unread != total || jr.Threads != nil {
					t.Fatalf("%s: %+v %+v, want %+v and no threads", step, *jr.Unread, jr.Threads, total)
				}
				continue
			}
			var want map[string]counts
			if thread != nil {
				want = map[string]counts{a: *thread}
			}
			if *jr.Unread != main || !reflect.DeepEqual(jr.Threads, want) {
				t.Fatalf("%s (threads): %+v %+v, want %+v %+v", step, *jr.Unread, jr.Threads, main, want)
			}
		}
	}
	check("all unread", counts{1, 3}, &counts{1, 3}, counts{2, 6})
	receipt := func(event string, body map[string]any) {
		bob.MustDo("POST", v3("/rooms/"+esc(room)+"/receipt/m.read/"+esc(event)), body)
	}
	receipt(a, map[string]any{"thread_id": "main"})
	check("main receipt at A", counts{1, 2}, &counts{1, 3}, counts{2, 5})
	receipt(b, map[string]any{"thread_id": a})
	check("thread receipt at B", counts{1, 2}, &counts{1, 2}, counts{2, 4})
	receipt(d, map[string]any{})
	check("unthreaded receipt at D", counts{0, 1}, &counts{0, 1}, counts{0, 2})
	receipt(g, map[string]any{"thread_id": a})
	check("thread receipt at G", counts{0, 1}, nil, counts{0, 1})
}
