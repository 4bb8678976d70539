package syncstream_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"strand/api/apitest"
)

// rawRoomTimeline returns the timeline events of a joined room from a raw
// sync response, as generic maps (so unsigned is visible).
func rawRoomTimeline(t *testing.T, r apitest.Response, roomID string) []map[string]any {
	t.Helper()
	var body struct {
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []map[string]any `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatal(err)
	}
	return body.Rooms.Join[roomID].Timeline.Events
}

func unsignedMembership(e map[string]any) any {
	u, _ := e["unsigned"].(map[string]any)
	return u["membership"]
}

// Timeline events carry the syncing user's membership at each event
// (unsigned.membership, MSC4115): leave before their join, join from their
// own join event on; in initial and incremental syncs, /messages and
// /event alike.
func TestUnsignedMembership(t *testing.T) {
	_, base := newServe(t)
	alice := user(t, base, "um_alice")
	bob := user(t, base, "um_bob")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	pre := send(t, alice, roomID, "prejoin")
	bob.MustDo("POST", v3("/join/"+esc(roomID)), map[string]any{})
	send(t, alice, roomID, "postjoin")

	check := func(where string, evs []map[string]any) {
		t.Helper()
		if len(evs) == 0 {
			t.Fatalf("%s: no events", where)
		}
		seenJoin := false
		for _, e := range evs {
			if e["type"] == "m.room.member" && e["state_key"] == bob.UserID {
				seenJoin = true
			}
			want := "leave"
			if seenJoin {
				want = "join"
			}
			if got := unsignedMembership(e); got != want {
				t.Fatalf("%s: event %v %v: membership %v, want %s", where, e["type"], e["content"], got, want)
			}
		}
	}
	r := bob.MustDo("GET", v3("/sync?set_presence=offline"), nil)
	check("initial sync", rawRoomTimeline(t, r, roomID))

	// An incremental sync of a room joined throughout: join.
	since := r.Str("next_batch")
	send(t, alice, roomID, "later")
	r = bob.MustDo("GET", v3("/sync?set_presence=offline&timeout=5000&since="+since), nil)
	inc := rawRoomTimeline(t, r, roomID)
	if len(inc) != 1 || unsignedMembership(inc[0]) != "join" {
		t.Fatalf("incremental sync: %s", r.Raw)
	}

	m := bob.MustDo("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=f&limit=50"), nil)
	var chunk []map[string]any
	for _, e := range m.Body["chunk"].([]any) {
		chunk = append(chunk, e.(map[string]any))
	}
	check("/messages", chunk)

	ev := bob.MustDo("GET", v3("/rooms/"+esc(roomID)+"/event/"+esc(pre)), nil)
	if unsignedMembership(ev.Body) != "leave" {
		t.Fatalf("/event before the join: %s", ev.Raw)
	}
}

// Invites from ignored users are left out of /sync, initial and
// incremental; others' invites still come.
func TestInviteFromIgnoredUserNotInSync(t *testing.T) {
	_, base := newServe(t)
	alice := user(t, base, "ig_alice")
	bob := user(t, base, "ig_bob")
	chris := user(t, base, "ig_chris")
	alice.MustDo("PUT", v3("/user/"+esc(alice.UserID)+"/account_data/m.ignored_user_list"),
		map[string]any{"ignored_users": map[string]any{bob.UserID: map[string]any{}}})
	since := doSync(t, alice, "").NextBatch

	fromBob := bob.MustDo("POST", v3("/createRoom"), map[string]any{"invite": []string{alice.UserID}}).Str("room_id")
	fromChris := chris.MustDo("POST", v3("/createRoom"), map[string]any{"invite": []string{alice.UserID}}).Str("room_id")

	for _, q := range []string{"?since=" + since, ""} {
		s := doSync(t, alice, q)
		if _, ok := s.Rooms.Invite[fromBob]; ok {
			t.Fatalf("sync %q shows the ignored user's invite", q)
		}
		if _, ok := s.Rooms.Invite[fromChris]; !ok {
			t.Fatalf("sync %q lacks chris's invite", q)
		}
	}
}

// An incremental sync after leaving gives the left room with its new
// events and the state changes since the token, not the whole state; a
// room both joined and left within the range is new to the client and
// comes with its state.
func TestLeftRoomStateIsTheDelta(t *testing.T) {
	_, base := newServe(t)
	alice := user(t, base, "lv_alice")
	bob := user(t, base, "lv_bob")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/join/"+esc(roomID)), map[string]any{})
	filter := "?filter=" + esc(`{"room":{"include_leave":true}}`)
	since := doSync(t, bob, filter).NextBatch
	bob.MustDo("POST", v3("/rooms/"+esc(roomID)+"/leave"), map[string]any{})

	raw := bob.MustDo("GET", v3("/sync")+filter+"&set_presence=offline&since="+since, nil)
	var s struct {
		Rooms struct {
			Leave map[string]struct {
				State    struct{ Events []event } `json:"state"`
				Timeline struct{ Events []event } `json:"timeline"`
			} `json:"leave"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(raw.Raw, &s); err != nil {
		t.Fatal(err)
	}
	left, ok := s.Rooms.Leave[roomID]
	if !ok || len(left.State.Events) != 0 || len(left.Timeline.Events) != 1 || left.Timeline.Events[0].Type != "m.room.member" {
		t.Fatalf("left room in incremental sync: %s", raw.Raw)
	}

	// Joined and left since the token (a room made before it): the state
	// comes too.
	other := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	since = doSync(t, bob, filter).NextBatch
	bob.MustDo("POST", v3("/join/"+esc(other)), map[string]any{})
	bob.MustDo("POST", v3("/rooms/"+esc(other)+"/leave"), map[string]any{})
	raw = bob.MustDo("GET", v3("/sync")+filter+"&set_presence=offline&since="+since, nil)
	s.Rooms.Leave = nil
	if err := json.Unmarshal(raw.Raw, &s); err != nil {
		t.Fatal(err)
	}
	if l, ok := s.Rooms.Leave[other]; !ok || len(l.State.Events) == 0 {
		t.Fatalf("room joined and left within the range: %s", raw.Raw)
	}
}

// A room left and forgotten since the token still shows its leave in
// rooms.leave, so the user's other devices learn of it; a sync from after
// the leave, or an initial one, no longer shows it.
func TestForgottenRoomLeaveInIncrementalSync(t *testing.T) {
	_, base := newServe(t)
	alice := user(t, base, "fg_alice")
	bob := user(t, base, "fg_bob")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", v3("/join/"+esc(roomID)), map[string]any{})
	filter := "?filter=" + esc(`{"room":{"include_leave":true}}`)
	before := doSync(t, alice, filter).NextBatch
	alice.MustDo("POST", v3("/rooms/"+esc(roomID)+"/leave"), map[string]any{})
	afterLeave := doSync(t, alice, filter).NextBatch
	alice.MustDo("POST", v3("/rooms/"+esc(roomID)+"/forget"), map[string]any{})
	send(t, bob, roomID, "after the forget")

	leaves := func(q string) map[string]bool {
		t.Helper()
		raw := alice.MustDo("GET", v3("/sync")+filter+"&set_presence=offline"+q, nil)
		var s struct {
			Rooms struct {
				Leave map[string]json.RawMessage `json:"leave"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(raw.Raw, &s); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for id := range s.Rooms.Leave {
			out[id] = true
		}
		return out
	}
	if !leaves("&since=" + before)[roomID] {
		t.Fatal("the leave of a forgotten room is missing from a sync since before it")
	}
	if leaves("&since=" + afterLeave)[roomID] {
		t.Fatal("a forgotten room shows up in a sync since after its leave")
	}
	if leaves("")[roomID] {
		t.Fatal("a forgotten room shows up in an initial sync")
	}
}

// A state event that replaced another carries unsigned.replaces_state, and
// unsigned.prev_content when the viewer may see the replaced event: in
// /sync (initial and incremental) and /messages.
func TestStateEventsCarryPrevContent(t *testing.T) {
	_, base := newServe(t)
	alice := user(t, base, "pc_alice")
	bob := user(t, base, "pc_bob")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}}).Str("room_id")
	topic := v3("/rooms/" + esc(roomID) + "/state/m.room.topic/")
	one := alice.MustDo("PUT", topic, map[string]any{"topic": "one"}).Str("event_id")
	since := doSync(t, alice, "").NextBatch
	two := alice.MustDo("PUT", topic, map[string]any{"topic": "two"}).Str("event_id")
	bob.MustDo("POST", v3("/join/"+esc(roomID)), map[string]any{})

	find := func(evs []map[string]any, id string) map[string]any {
		t.Helper()
		for _, e := range evs {
			if e["event_id"] == id {
				u, _ := e["unsigned"].(map[string]any)
				return u
			}
		}
		t.Fatalf("event %s missing", id)
		return nil
	}
	member := func(evs []map[string]any, user string) map[string]any {
		t.Helper()
		for _, e := range evs {
			if e["type"] == "m.room.member" && e["state_key"] == user && e["content"].(map[string]any)["membership"] == "join" {
				u, _ := e["unsigned"].(map[string]any)
				return u
			}
		}
		t.Fatalf("join of %s missing", user)
		return nil
	}
	check := func(where string, evs []map[string]any) {
		t.Helper()
		u := find(evs, two)
		if u["replaces_state"] != one || u["prev_content"].(map[string]any)["topic"] != "one" || u["prev_sender"] != alice.UserID {
			t.Fatalf("%s: topic change: %v", where, u)
		}
		// An accepted invite: the join replaced the invite.
		if u := member(evs, bob.UserID); u["prev_content"].(map[string]any)["membership"] != "invite" || u["replaces_state"] == nil {
			t.Fatalf("%s: join after invite: %v", where, u)
		}
	}
	r := alice.MustDo("GET", v3("/sync?set_presence=offline&since="+since), nil)
	check("incremental sync", rawRoomTimeline(t, r, roomID))
	r = alice.MustDo("GET", v3("/sync?set_presence=offline"), nil)
	check("initial sync", rawRoomTimeline(t, r, roomID))
	var chunk []map[string]any
	for _, e := range alice.MustDo("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=b&limit=50"), nil).Body["chunk"].([]any) {
		chunk = append(chunk, e.(map[string]any))
	}
	check("/messages", chunk)

	// A replaced event the viewer may not see: replaces_state only.
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/state/m.room.history_visibility/"), map[string]any{"history_visibility": "joined"})
	carol := user(t, base, "pc_carol")
	alice.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/state/m.room.join_rules/"), map[string]any{"join_rule": "public"})
	secret := alice.MustDo("PUT", topic, map[string]any{"topic": "before carol"}).Str("event_id")
	carol.MustDo("POST", v3("/join/"+esc(roomID)), map[string]any{})
	after := alice.MustDo("PUT", topic, map[string]any{"topic": "after carol"}).Str("event_id")
	r = carol.MustDo("GET", v3("/sync?set_presence=offline"), nil)
	u := find(rawRoomTimeline(t, r, roomID), after)
	if u["replaces_state"] != secret || u["prev_content"] != nil {
		t.Fatalf("carol's view of a topic change over one she may not see: %v", u)
	}
}

// A room joined since the token comes with all the state before its
// timeline; when that is not empty (the timeline, here cut by the
// filter's types, does not reach back to the room's start) the timeline is
// limited, as the spec's sync note has it ("empty unless the timeline was
// limited"). A room small enough that its whole history is the timeline
// is not.
func TestNewlyJoinedRoomLimited(t *testing.T) {
	_, base := newServe(t)
	alice := user(t, base, "nj_alice")
	bob := user(t, base, "nj_bob")
	filter := bob.MustDo("POST", v3("/user/"+esc(bob.UserID)+"/filter"), map[string]any{
		"room": map[string]any{"timeline": map[string]any{"limit": 10, "types": []string{"m.room.message"}}, "state": map[string]any{"types": []string{}}},
	}).Str("filter_id")
	roomID := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	for i := range 4 {
		send(t, alice, roomID, fmt.Sprint("before ", i))
	}
	since := doSync(t, bob, "?filter="+filter).NextBatch
	for i := range 4 {
		send(t, alice, roomID, fmt.Sprint("after ", i))
	}
	bob.MustDo("POST", v3("/join/"+esc(roomID)), map[string]any{})
	room, ok := doSync(t, bob, "?filter="+filter+"&since="+since).Rooms.Join[roomID]
	if !ok || len(room.Timeline.Events) != 8 || !room.Timeline.Limited {
		t.Fatalf("newly joined room with a type filter: %d events, limited %v", len(room.Timeline.Events), room.Timeline.Limited)
	}

	// Unfiltered, a new room's whole history fits the timeline.
	small := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	since = doSync(t, bob, "").NextBatch
	bob.MustDo("POST", v3("/join/"+esc(small)), map[string]any{})
	room, ok = doSync(t, bob, "?since="+since).Rooms.Join[small]
	if !ok || room.Timeline.Limited {
		t.Fatalf("newly joined room whose history is the timeline: limited %v (%d events)", room.Timeline.Limited, len(room.Timeline.Events))
	}
}
