package api_test

import (
	"testing"

	"strand/api/apitest"
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
	victim := owner.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat"}).Str("room_id")
	victim10 := owner.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat", "room_version": "10"}).Str("room_id")
	var evs []string
	for i := range 5 {
		evs = append(evs, sendText(t, owner, victim, "private "+string(rune('a'+i)), nil))
	}
	ev10 := sendText(t, owner, victim10, "private v10", nil)
	own := stranger.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat"}).Str("room_id")
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
