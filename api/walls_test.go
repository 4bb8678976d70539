package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/eventlog"
	"strand/eventlog/matrix"
)

// Tests of invariant 12 (rooms are walls) for redactions and relations:
// whatever way a redaction or a relation enters, it reaches no event of
// another room, and a redaction takes effect only where the room's rules
// allow it.

// wallsEnv is a deployment with one api and a projector.
func wallsEnv(t *testing.T) (*apitest.Env, string) {
	t.Helper()
	env := apitest.New(t)
	env.Projector()
	return env, env.API(apitest.DefaultConfig()).URL
}

func newUser(t *testing.T, base, name string) *apitest.Client {
	t.Helper()
	c := apitest.NewClient(t, base)
	c.Register(name, "pw")
	return c
}

func sendText(t *testing.T, c *apitest.Client, roomID, body string, extra map[string]any) string {
	t.Helper()
	content := map[string]any{"msgtype": "m.text", "body": body}
	for k, v := range extra {
		content[k] = v
	}
	return c.MustDo("POST", v3("/rooms/"+esc(roomID)+"/send/m.room.message"), content).Str("event_id")
}

// requireIntact fails unless c reads eventID of roomID unredacted, with
// body.
func requireIntact(t *testing.T, c *apitest.Client, roomID, eventID, body string) {
	t.Helper()
	ev := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/event/"+esc(eventID)), nil)
	content, _ := ev.Body["content"].(map[string]any)
	unsigned, _ := ev.Body["unsigned"].(map[string]any)
	if content["body"] != body || unsigned["redacted_because"] != nil {
		t.Fatalf("%s was redacted: %s", eventID, ev.Raw)
	}
}

// requireRedacted fails unless c reads eventID of roomID redacted.
func requireRedacted(t *testing.T, c *apitest.Client, roomID, eventID string) {
	t.Helper()
	ev := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/event/"+esc(eventID)), nil)
	unsigned, _ := ev.Body["unsigned"].(map[string]any)
	if len(ev.Body["content"].(map[string]any)) != 0 || unsigned["redacted_because"] == nil {
		t.Fatalf("%s is not redacted: %s", eventID, ev.Raw)
	}
}

// A user who is not in a room cannot redact its events by sending a
// redaction into their own room, through any endpoint that makes one:
// /state (m.room.redaction as a state event), createRoom's initial_state,
// /send and /redact; nor from a room of another version (which used to
// stop the projector for good).
func TestRedactionStaysInItsRoom(t *testing.T) {
	env, base := wallsEnv(t)
	owner := newUser(t, base, "owner")
	stranger := newUser(t, base, "stranger")
	victim := owner.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat", "room_version": "12"}).Str("room_id")
	victim10 := owner.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat", "room_version": "10"}).Str("room_id")
	var evs []string
	for i := range 5 {
		evs = append(evs, sendText(t, owner, victim, "private "+string(rune('a'+i)), nil))
	}
	ev10 := sendText(t, owner, victim10, "private v10", nil)
	own := stranger.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat", "room_version": "12"}).Str("room_id")
	own10 := stranger.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat", "room_version": "10"}).Str("room_id")
	ownMsg := sendText(t, stranger, own, "mine", nil)

	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   any
		status int
	}{
		{"state", "PUT", "/rooms/" + esc(own) + "/state/m.room.redaction/x", map[string]any{"redacts": evs[0]}, 404},
		{"state, empty key", "PUT", "/rooms/" + esc(own) + "/state/m.room.redaction/", map[string]any{"redacts": evs[0]}, 404},
		{"initial_state", "POST", "/createRoom", map[string]any{"initial_state": []any{
			map[string]any{"type": "m.room.redaction", "state_key": "", "content": map[string]any{"redacts": evs[1]}}}}, 400},
		{"send", "PUT", "/rooms/" + esc(own) + "/send/m.room.redaction/t1", map[string]any{"redacts": evs[2]}, 404},
		{"redact in own room", "PUT", "/rooms/" + esc(own) + "/redact/" + esc(evs[3]) + "/t2", map[string]any{}, 404},
		{"redact in the room", "PUT", "/rooms/" + esc(victim) + "/redact/" + esc(evs[4]) + "/t3", map[string]any{}, 403},
		{"send in the room", "PUT", "/rooms/" + esc(victim) + "/send/m.room.redaction/t4", map[string]any{"redacts": evs[4]}, 403},
		{"v12 to v10 by state", "PUT", "/rooms/" + esc(own) + "/state/m.room.redaction/y", map[string]any{"redacts": ev10}, 404},
		{"v12 to v10 by send", "PUT", "/rooms/" + esc(own) + "/send/m.room.redaction/t5", map[string]any{"redacts": ev10}, 404},
		{"v10 to v12 by send", "PUT", "/rooms/" + esc(own10) + "/send/m.room.redaction/t6", map[string]any{"redacts": evs[0]}, 404},
		{"v10 to v12 by state", "PUT", "/rooms/" + esc(own10) + "/state/m.room.redaction/z", map[string]any{"redacts": evs[0]}, 404},
		{"send without redacts", "PUT", "/rooms/" + esc(own) + "/send/m.room.redaction/t7", map[string]any{}, 400},
		{"send with a bad redacts", "PUT", "/rooms/" + esc(own) + "/send/m.room.redaction/t8", map[string]any{"redacts": 5}, 400},
	} {
		if r := stranger.Do(tc.method, v3(tc.path), tc.body); r.Status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, r.Status, r.Raw, tc.status)
		}
	}
	for i, id := range evs {
		requireIntact(t, owner, victim, id, "private "+string(rune('a'+i)))
	}
	requireIntact(t, owner, victim10, ev10, "private v10")
	// The stranger's own room still takes redactions of its own events.
	stranger.MustDo("PUT", v3("/rooms/"+esc(own)+"/state/m.room.redaction/mine"), map[string]any{"redacts": ownMsg})
	requireRedacted(t, stranger, own, ownMsg)

	projectionReplays(t, env, 2)
}

// Inside one room, a redaction of another user's event needs the room's
// redact level, whichever endpoint sends it; one's own events need only
// the right to send the redaction. /send takes redactions in every room
// version (content.redacts moves to the top level before version 11).
func TestRedactionNeedsRedactLevel(t *testing.T) {
	env, base := wallsEnv(t)
	admin := newUser(t, base, "admin")
	mod := newUser(t, base, "mod")
	for _, version := range []string{"12", "10"} {
		users := map[string]any{mod.UserID: 50}
		if version == "10" {
			users[admin.UserID] = 100
		}
		room := admin.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat", "room_version": version,
			"power_level_content_override": map[string]any{"users": users, "redact": 75}}).Str("room_id")
		mod.MustDo("POST", v3("/join/"+esc(room)), nil)
		adminMsg := sendText(t, admin, room, "admin's", nil)
		modMsgs := []string{sendText(t, mod, room, "mod's 1", nil), sendText(t, mod, room, "mod's 2", nil), sendText(t, mod, room, "mod's 3", nil)}
		rp := func(p string) string { return v3("/rooms/" + esc(room) + p) }

		for name, r := range map[string]apitest.Response{
			"redact": mod.Do("PUT", rp("/redact/"+esc(adminMsg)+"/r1"), map[string]any{}),
			"send":   mod.Do("PUT", rp("/send/m.room.redaction/s1"), map[string]any{"redacts": adminMsg}),
			"state":  mod.Do("PUT", rp("/state/m.room.redaction/k1"), map[string]any{"redacts": adminMsg}),
		} {
			if r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
				t.Errorf("v%s: moderator below the redact level redacted the admin's event by %s: %d %s", version, name, r.Status, r.Raw)
			}
		}
		requireIntact(t, admin, room, adminMsg, "admin's")

		// Their own, by each endpoint.
		mod.MustDo("PUT", rp("/redact/"+esc(modMsgs[0])+"/r2"), map[string]any{})
		red := mod.MustDo("PUT", rp("/send/m.room.redaction/s2"), map[string]any{"redacts": modMsgs[1], "reason": "typo"}).Str("event_id")
		mod.MustDo("PUT", rp("/state/m.room.redaction/k2"), map[string]any{"redacts": modMsgs[2]})
		for _, id := range modMsgs {
			requireRedacted(t, admin, room, id)
		}
		// The redaction sent through /send has the version's form.
		ev := admin.MustDo("GET", rp("/event/"+esc(red)), nil)
		content := ev.Body["content"].(map[string]any)
		if content["reason"] != "typo" {
			t.Fatalf("v%s: redaction sent through /send: %s", version, ev.Raw)
		}
		if version == "10" && (ev.Str("redacts") != modMsgs[1] || content["redacts"] != nil) {
			t.Fatalf("v10 redaction sent through /send keeps redacts in content: %s", ev.Raw)
		}
		if version == "12" && content["redacts"] != modMsgs[1] {
			t.Fatalf("v12 redaction without content.redacts: %s", ev.Raw)
		}
		// The admin, at the level, may redact the moderator's.
		other := sendText(t, mod, room, "mod's 4", nil)
		admin.MustDo("PUT", rp("/send/m.room.redaction/a1"), map[string]any{"redacts": other})
		requireRedacted(t, mod, room, other)
	}
	projectionReplays(t, env, 2)
}

// appendRaw builds protos as events of roomID on top of its projected
// state and appends them as one record straight to the log, as a record
// written by another (older, or faulty) api would be: no check but the
// log's expected sequence. FIRST_EVENT in a proto's content stands for the
// ID of the record's first event.
func appendRaw(t *testing.T, env *apitest.Env, roomID string, protos ...*matrix.ProtoEvent) []*matrix.Event {
	t.Helper()
	ctx := context.Background()
	snap, err := env.Store().RoomAuthSnapshot(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	v := matrix.RoomVersion(snap.Head.Version)
	var st matrix.State
	for _, e := range snap.Events {
		ev, err := matrix.ParseEvent(v, e.PDU)
		if err != nil {
			t.Fatal(err)
		}
		st = matrix.Apply(st, ev)
	}
	prev, depth := matrix.EventID(snap.Head.LastEventID), snap.Head.Depth
	rec := &eventlog.RoomEvents{RoomID: roomID, RoomVersion: snap.Head.Version}
	var out []*matrix.Event
	for _, p := range protos {
		depth++
		if len(out) > 0 {
			p.Content = json.RawMessage(strings.ReplaceAll(string(p.Content), "FIRST_EVENT", string(out[0].ID())))
		}
		p.RoomID, p.PrevEvents, p.Depth, p.OriginServerTS = matrix.RoomID(roomID), []matrix.EventID{prev}, depth, time.Now().UnixMilli()
		if p.AuthEvents, err = matrix.AuthEventsFor(st, p); err != nil {
			t.Fatal(err)
		}
		ev, err := matrix.BuildEvent(v, p, "localhost", apitest.DefaultConfig().SigningKey)
		if err != nil {
			t.Fatal(err)
		}
		st = matrix.Apply(st, ev)
		prev = ev.ID()
		rec.Events = append(rec.Events, ev.JSON())
		out = append(out, ev)
	}
	if _, err := env.Conn().Append(ctx, eventlog.RoomSubject(roomID), rec,
		eventlog.AppendOptions{ExpectSeq: eventlog.Expect(snap.Head.LastSeq), Room: roomID}); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, env, env.Store())
	return out
}

// The projector decides for itself whether a redaction on the log takes
// effect: one aimed at an event of another room (here also of another
// room version, which used to stop the projector), at an unknown event, or
// at another user's event by a sender below the redact level, changes
// nothing; the projector goes on, and replay, in batches of any size,
// gives the same projection. A relation to an event of another room is not
// recorded, one to an event earlier in the same record is; a receipt naming
// another room's event takes no position from it.
func TestProjectorIgnoresRedactionsAcrossWalls(t *testing.T) {
	env, base := wallsEnv(t)
	owner := newUser(t, base, "owner")
	stranger := newUser(t, base, "stranger")
	member := newUser(t, base, "member")
	victim := owner.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat", "room_version": "10"}).Str("room_id")
	secret := sendText(t, owner, victim, "secret", nil)
	own := stranger.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat", "room_version": "12"}).Str("room_id")
	member.MustDo("POST", v3("/join/"+esc(own)), nil)
	strangers := sendText(t, stranger, own, "stranger's", nil)
	members := sendText(t, member, own, "member's", nil)

	redaction := func(sender *apitest.Client, target string) *matrix.ProtoEvent {
		return &matrix.ProtoEvent{Type: matrix.TypeRedaction, Sender: matrix.UserID(sender.UserID), Redacts: matrix.EventID(target), Content: json.RawMessage(`{}`)}
	}
	unknown := "$" + strings.Repeat("A", 43)
	// Each in a record of its own, then all in one record, on a later
	// message each time.
	appendRaw(t, env, own, redaction(stranger, secret))
	appendRaw(t, env, own, redaction(member, strangers))
	appendRaw(t, env, own, redaction(stranger, unknown))
	later := sendText(t, stranger, own, "stranger's later", nil)
	thread := &matrix.ProtoEvent{Type: "m.room.message", Sender: matrix.UserID(stranger.UserID),
		Content: json.RawMessage(`{"msgtype":"m.text","body":"a thread across the wall","m.relates_to":{"rel_type":"m.thread","event_id":"` + secret + `"}}`)}
	root := &matrix.ProtoEvent{Type: "m.room.message", Sender: matrix.UserID(stranger.UserID), Content: json.RawMessage(`{"msgtype":"m.text","body":"root"}`)}
	evs := appendRaw(t, env, own, redaction(stranger, secret), redaction(member, later), redaction(stranger, unknown), thread, root)
	reply := appendRaw(t, env, own, &matrix.ProtoEvent{Type: "m.room.message", Sender: matrix.UserID(member.UserID),
		Content: json.RawMessage(`{"msgtype":"m.text","body":"reply","m.relates_to":{"rel_type":"m.thread","event_id":"` + string(evs[4].ID()) + `"}}`)})
	// A relation to an event earlier in its own record counts.
	inRecord := appendRaw(t, env, own, &matrix.ProtoEvent{Type: "m.room.message", Sender: matrix.UserID(stranger.UserID),
		Content: json.RawMessage(`{"msgtype":"m.text","body":"root 2"}`)}, &matrix.ProtoEvent{Type: "m.room.message", Sender: matrix.UserID(member.UserID),
		Content: json.RawMessage(`{"msgtype":"m.text","body":"reply 2","m.relates_to":{"rel_type":"m.thread","event_id":"FIRST_EVENT"}}`)})
	// The member may redact their own.
	appendRaw(t, env, own, redaction(member, members))
	// A receipt in one room naming another room's event takes no position
	// from it (unread counts compare positions).
	if _, err := env.Conn().Append(context.Background(), eventlog.ReceiptSubject(own),
		&eventlog.ReceiptSet{RoomID: own, UserID: stranger.UserID, Type: "m.read", EventID: secret, TS: 1},
		eventlog.AppendOptions{Room: own}); err != nil {
		t.Fatal(err)
	}

	requireIntact(t, owner, victim, secret, "secret")
	requireIntact(t, stranger, own, strangers, "stranger's")
	requireIntact(t, stranger, own, later, "stranger's later")
	requireRedacted(t, stranger, own, members)
	// The projector is still applying: both rooms take writes.
	sendText(t, owner, victim, "still here", nil)
	sendText(t, stranger, own, "still here", nil)

	th := stranger.MustDo("GET", "/_matrix/client/v1/rooms/"+esc(own)+"/threads", nil)
	if strings.Contains(string(th.Raw), secret) || strings.Contains(string(th.Raw), `"secret"`) {
		t.Fatalf("threads of the stranger's room show the other room's event: %s", th.Raw)
	}
	if chunk := th.Body["chunk"].([]any); len(chunk) != 2 || chunk[0].(map[string]any)["event_id"] != string(inRecord[0].ID()) ||
		chunk[1].(map[string]any)["event_id"] != string(evs[4].ID()) {
		t.Fatalf("threads: %s\nwant the roots %s (reply in its record) and %s (reply %s)", th.Raw, inRecord[0].ID(), evs[4].ID(), reply[0].ID())
	}

	dump := projectionReplays(t, env, 1)
	replayMatches(t, env, dump, 1000)
	for _, row := range dumpRows(dump, "receipts") {
		if strings.Contains(row, secret) && !strings.Contains(row, `"event_pos":0,`) {
			t.Fatalf("a receipt took the position of another room's event: %s", row)
		}
	}
}

// dumpRows returns the rows of table in a store.Dump.
func dumpRows(dump, table string) []string {
	_, rest, ok := strings.Cut(dump, "== "+table+"\n")
	if !ok {
		return nil
	}
	section, _, _ := strings.Cut(rest, "\n== ")
	return strings.Split(strings.TrimSpace(section), "\n")
}

// A relation (thread, edit, annotation, reference, reply) written in one
// room about an event of another links nothing: the projection does not
// record it, /threads and /relations of either room do not return the
// other room's event, and the parent's room shows no stranger's event.
func TestRelationsStayInTheirRoom(t *testing.T) {
	env, base := wallsEnv(t)
	owner := newUser(t, base, "owner")
	stranger := newUser(t, base, "stranger")
	victim := owner.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat"}).Str("room_id")
	secret := sendText(t, owner, victim, "the secret", nil)
	own := stranger.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat"}).Str("room_id")
	rel := func(relType string, extra map[string]any) map[string]any {
		r := map[string]any{"rel_type": relType, "event_id": secret}
		for k, v := range extra {
			r[k] = v
		}
		return map[string]any{"m.relates_to": r}
	}
	sendText(t, stranger, own, "thread", rel("m.thread", map[string]any{"is_falling_back": true, "m.in_reply_to": map[string]any{"event_id": secret}}))
	sendText(t, stranger, own, "* edit", map[string]any{"m.new_content": map[string]any{"msgtype": "m.text", "body": "edit"},
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": secret}})
	sendText(t, stranger, own, "reference", rel("m.reference", nil))
	sendText(t, stranger, own, "reply", map[string]any{"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": secret}}})
	stranger.MustDo("PUT", v3("/rooms/"+esc(own)+"/send/m.reaction/1"), map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": secret, "key": "👀"}})
	// State events relate too, also in a room's creation record.
	stranger.MustDo("PUT", v3("/rooms/"+esc(own)+"/state/com.example.note/"), rel("m.thread", nil))
	stranger.MustDo("POST", v3("/createRoom"), map[string]any{"initial_state": []any{
		map[string]any{"type": "com.example.note", "state_key": "", "content": rel("m.thread", nil)}}})
	// A thread inside the stranger's room is one.
	ownRoot := sendText(t, stranger, own, "own root", nil)
	sendText(t, stranger, own, "own reply", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": ownRoot}})

	leaks := func(what string, r apitest.Response) {
		t.Helper()
		if strings.Contains(string(r.Raw), secret) || strings.Contains(string(r.Raw), "the secret") {
			t.Errorf("%s shows the other room's event: %s", what, r.Raw)
		}
	}
	th := stranger.MustDo("GET", "/_matrix/client/v1/rooms/"+esc(own)+"/threads", nil)
	leaks("/threads", th)
	if chunk := th.Body["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != ownRoot {
		t.Errorf("threads of the stranger's room: %s", th.Raw)
	}
	for _, relType := range []string{"", "/m.thread", "/m.annotation", "/m.replace", "/m.reference"} {
		r := stranger.Do("GET", "/_matrix/client/v1/rooms/"+esc(own)+"/relations/"+esc(secret)+relType, nil)
		if r.Status != 404 {
			t.Errorf("relations%s of the other room's event, asked in the stranger's room: %d %s", relType, r.Status, r.Raw)
		}
		leaks("/relations"+relType, r)
		// In the parent's own room its owner sees no relation from
		// elsewhere.
		if r := owner.MustDo("GET", "/_matrix/client/v1/rooms/"+esc(victim)+"/relations/"+esc(secret)+relType, nil); len(r.Body["chunk"].([]any)) != 0 {
			t.Errorf("relations%s of the secret in its room: %s", relType, r.Raw)
		}
	}
	if r := owner.MustDo("GET", "/_matrix/client/v1/rooms/"+esc(victim)+"/threads", nil); len(r.Body["chunk"].([]any)) != 0 {
		t.Errorf("threads of the victim's room: %s", r.Raw)
	}
	// Every lookup by event ID is of the path's room: even the owner, who
	// may see the event, does not get it through another of their rooms.
	other := owner.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat"}).Str("room_id")
	for _, tc := range []struct{ method, path string }{
		{"GET", v3("/rooms/" + esc(other) + "/event/" + esc(secret))},
		{"GET", v3("/rooms/" + esc(other) + "/context/" + esc(secret))},
		{"GET", "/_matrix/client/v1/rooms/" + esc(other) + "/relations/" + esc(secret)},
		{"POST", v3("/rooms/" + esc(other) + "/receipt/m.read/" + esc(secret))},
		{"PUT", v3("/rooms/" + esc(other) + "/redact/" + esc(secret) + "/x")},
	} {
		var body any
		if tc.method != "GET" {
			body = map[string]any{}
		}
		if r := owner.Do(tc.method, tc.path, body); r.Status != 404 {
			t.Errorf("%s %s: %d %s, want 404", tc.method, tc.path, r.Status, r.Raw)
		}
	}
	requireIntact(t, owner, victim, secret, "the secret")

	dump := projectionReplays(t, env, 3)
	rows := dumpRows(dump, "event_relations")
	if len(rows) != 1 || !strings.Contains(rows[0], ownRoot) {
		t.Fatalf("event_relations holds links across rooms: %q", rows)
	}
}

// Thread summaries and /search count only the events the caller may see:
// here a member who was away for part of a room's history (visibility
// "joined"), and one who joined at the end.
func TestCountsOnlyVisibleEvents(t *testing.T) {
	env, base := wallsEnv(t)
	author := newUser(t, base, "author")
	away := newUser(t, base, "away")
	late := newUser(t, base, "late")
	room := author.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}}).Str("room_id")
	rp := func(p string) string { return v3("/rooms/" + esc(room) + p) }
	thread := func(body, root string) string {
		return sendText(t, author, room, body, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	}
	sendText(t, author, room, "fog before anyone", nil)
	away.MustDo("POST", v3("/join/"+esc(room)), nil)
	root := sendText(t, author, room, "fog root", nil)
	thread("fog one", root)
	away.MustDo("POST", rp("/leave"), nil)
	thread("fog two", root)
	away.MustDo("POST", v3("/join/"+esc(room)), nil)
	three := thread("fog three", root)
	late.MustDo("POST", v3("/join/"+esc(room)), nil)

	summary := func(c *apitest.Client) map[string]any {
		t.Helper()
		r := c.MustDo("GET", "/_matrix/client/v1/rooms/"+esc(room)+"/threads", nil)
		chunk := r.Body["chunk"].([]any)
		if len(chunk) == 0 {
			return nil
		}
		return chunk[0].(map[string]any)["unsigned"].(map[string]any)["m.relations"].(map[string]any)["m.thread"].(map[string]any)
	}
	if s := summary(author); s["count"] != float64(3) {
		t.Errorf("author's thread summary: %v", s)
	}
	if s := summary(away); s["count"] != float64(2) || s["latest_event"].(map[string]any)["event_id"] != three {
		t.Errorf("thread summary of a member away for one reply: %v, want 2 replies, the latest %s", s, three)
	}
	if s := summary(late); s != nil {
		t.Errorf("thread summary for a member who sees none of it: %v", s)
	}

	search := func(c *apitest.Client) (count float64, results int) {
		t.Helper()
		r := c.MustDo("POST", v3("/search"), map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "fog"}}})
		re := r.Body["search_categories"].(map[string]any)["room_events"].(map[string]any)
		return re["count"].(float64), len(re["results"].([]any))
	}
	for _, tc := range []struct {
		name string
		c    *apitest.Client
		want int
	}{{"author", author, 5}, {"away", away, 3}, {"late", late, 0}} {
		if count, results := search(tc.c); count != float64(tc.want) || results != tc.want {
			t.Errorf("search by %s: count %v, %d results, want %d", tc.name, count, results, tc.want)
		}
	}
	projectionReplays(t, env, 4)
}

// A room's m.room.create event cannot be changed: 400 (no one may send
// it, whatever their power), in every room version, and through /send as
// well.
func TestCreateEventCannotChange(t *testing.T) {
	_, base := wallsEnv(t)
	c := newUser(t, base, "creator")
	for _, version := range []string{"10", "11", "12"} {
		room := c.MustDo("POST", v3("/createRoom"), map[string]any{"room_version": version}).Str("room_id")
		for _, r := range []apitest.Response{
			c.Do("PUT", v3("/rooms/"+esc(room)+"/state/m.room.create/"), map[string]any{"room_version": version}),
			c.Do("PUT", v3("/rooms/"+esc(room)+"/state/m.room.create/x"), map[string]any{}),
			c.Do("PUT", v3("/rooms/"+esc(room)+"/send/m.room.create/1"), map[string]any{}),
		} {
			if r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
				t.Errorf("v%s: changing m.room.create: %d %s", version, r.Status, r.Raw)
			}
		}
	}
}
