package api_test

import (
	"testing"

	"strand/api/apitest"
)

// Restricted joins (room versions 8+), as Complement's
// TestRestrictedRoomsLocalJoin drives them: a user joined to an allowed
// room may join, authorised by a local member who can invite (named in
// join_authorised_via_users_server by the server, never the client); a
// profile change (join→join) ignores the key; leaving the allowed room
// closes the door; an invite opens it; malformed allow lists allow nobody.
func TestRestrictedJoins(t *testing.T) {
	_, alice := newServer(t)
	alice.Register("ralice", "pw")
	bob := alice.As("")
	bob.Register("rbob", "pw")
	const aliceID, bobID = "@ralice:localhost", "@rbob:localhost"

	for _, tc := range []struct{ version, rule string }{{"8", "restricted"}, {"10", "knock_restricted"}, {"12", "restricted"}} {
		t.Run("v"+tc.version+"_"+tc.rule, func(t *testing.T) {
			alice, bob := within(t, alice), within(t, bob)
			allowed := createRoom(t, alice, map[string]any{"preset": "public_chat"})
			room := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": tc.version,
				"initial_state": []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
					"join_rule": tc.rule, "allow": []map[string]any{{"type": "m.room_membership", "room_id": allowed, "via": []string{"localhost"}}}}}}})
			join := func(c *apitest.Client, room string) apitest.Response {
				return c.Do("POST", v3("/join/"+esc(room)), map[string]any{})
			}
			member := func(user string) apitest.Response {
				return alice.MustDo("GET", v3("/rooms/"+esc(room)+"/state/m.room.member/"+esc(user)), nil)
			}
			if r := join(bob, room); r.Status != 403 {
				t.Fatalf("join before joining the allowed room: %d %s", r.Status, r.Raw)
			}
			// A client cannot name an authoriser itself.
			if r := bob.Do("PUT", v3("/rooms/"+esc(room)+"/state/m.room.member/"+esc(bobID)),
				map[string]any{"membership": "join", "join_authorised_via_users_server": aliceID}); r.Status != 403 {
				t.Fatalf("join with a client-chosen authoriser: %d %s", r.Status, r.Raw)
			}
			// Not with "join" escaped either: it is "join" once canonical.
			escaped := `{"membership":"\u006aoin","join_authorised_via_users_server":"` + aliceID + `"}`
			if r := bob.Do("PUT", v3("/rooms/"+esc(room)+"/state/m.room.member/"+esc(bobID)), escaped); r.Status != 403 {
				t.Fatalf("join with an escaped membership and a client-chosen authoriser: %d %s", r.Status, r.Raw)
			}

			join(bob, allowed)
			if r := join(bob, room); r.Status != 200 {
				t.Fatalf("join as a member of the allowed room: %d %s", r.Status, r.Raw)
			}
			if m := member(bobID); m.Str("join_authorised_via_users_server") != aliceID {
				t.Fatalf("join content %s", m.Raw)
			}
			// join→join: the key is ignored, even when it names nobody.
			bob.MustDo("PUT", v3("/rooms/"+esc(room)+"/state/m.room.member/"+esc(bobID)),
				map[string]any{"membership": "join", "displayname": "Bobby", "join_authorised_via_users_server": "unused"})
			if m := member(bobID); m.Str("displayname") != "Bobby" || m.Body["join_authorised_via_users_server"] != nil {
				t.Fatalf("profile change content %s", m.Raw)
			}

			bob.MustDo("POST", v3("/rooms/"+esc(room)+"/leave"), map[string]any{})
			bob.MustDo("POST", v3("/rooms/"+esc(allowed)+"/leave"), map[string]any{})
			if r := join(bob, room); r.Status != 403 {
				t.Fatalf("join after leaving the allowed room: %d %s", r.Status, r.Raw)
			}
			alice.MustDo("POST", v3("/rooms/"+esc(room)+"/invite"), map[string]any{"user_id": bobID})
			if r := join(bob, room); r.Status != 200 {
				t.Fatalf("invited join: %d %s", r.Status, r.Raw)
			}
			if m := member(bobID); m.Body["join_authorised_via_users_server"] != nil {
				t.Fatalf("invited join names an authoriser: %s", m.Raw)
			}
			bob.MustDo("POST", v3("/rooms/"+esc(room)+"/leave"), map[string]any{})
			join(bob, allowed)

			// The authoriser must be able to invite: with invite at 100,
			// the creator (100) authorises, not a member at 0.
			if r := join(bob, room); r.Status != 200 {
				t.Fatalf("bob's rejoin: %d %s", r.Status, r.Raw)
			}
			pl := alice.MustDo("GET", v3("/rooms/"+esc(room)+"/state/m.room.power_levels/"), nil).Body
			pl["invite"] = 100
			alice.MustDo("PUT", v3("/rooms/"+esc(room)+"/state/m.room.power_levels/"), pl)
			carol := alice.As("")
			carol.Register("rcarol"+tc.version, "pw")
			join(carol, allowed)
			if r := join(carol, room); r.Status != 200 {
				t.Fatalf("carol's join: %d %s", r.Status, r.Raw)
			}
			if m := member("@rcarol" + tc.version + ":localhost"); m.Str("join_authorised_via_users_server") != aliceID {
				t.Fatalf("carol's join content %s", m.Raw)
			}
			bob.MustDo("POST", v3("/rooms/"+esc(room)+"/leave"), map[string]any{})

			for _, allow := range []any{[]string{"invalid"}, "invalid"} {
				alice.MustDo("PUT", v3("/rooms/"+esc(room)+"/state/m.room.join_rules/"), map[string]any{"join_rule": tc.rule, "allow": allow})
				if r := join(bob, room); r.Status != 403 {
					t.Fatalf("join with allow %v: %d %s", allow, r.Status, r.Raw)
				}
			}
		})
	}

	// Before version 8 the join rule admits nobody.
	allowed := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	room := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "7",
		"initial_state": []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []map[string]any{{"type": "m.room_membership", "room_id": allowed}}}}}})
	bob.MustDo("POST", v3("/join/"+esc(allowed)), map[string]any{})
	if r := bob.Do("POST", v3("/join/"+esc(room)), map[string]any{}); r.Status != 403 {
		t.Fatalf("restricted join in a v7 room: %d %s", r.Status, r.Raw)
	}
}

// GET /v1/room_summary describes a room before joining: a restricted
// room's allowed_room_ids (absent for other join rules), the version and
// the caller's membership; a private room the caller cannot join is 404,
// like a room that does not exist, and so is a public room to a user
// banned from it.
func TestRoomSummary(t *testing.T) {
	_, alice := newServer(t)
	alice.Register("salice", "pw")
	bob := alice.As("")
	bob.Register("sbob", "pw")
	space := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Space", "room_alias_name": "space",
		"creation_content": map[string]any{"type": "m.space"}})
	restricted := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "8",
		"initial_state": []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}, "junk"}}}}})
	private := createRoom(t, alice, map[string]any{"preset": "private_chat", "topic": "secret"})

	s := alice.MustDo("GET", "/_matrix/client/v1/room_summary/"+esc(restricted), nil)
	ids, _ := s.Body["allowed_room_ids"].([]any)
	if s.Str("room_id") != restricted || s.Str("join_rule") != "restricted" || len(ids) != 1 || ids[0] != space ||
		s.Str("room_version") != "8" || s.Str("membership") != "join" || s.Body["num_joined_members"] != float64(1) {
		t.Fatalf("restricted summary %s", s.Raw)
	}
	s = alice.MustDo("GET", "/_matrix/client/v1/room_summary/"+esc("#space:localhost"), nil)
	if s.Str("room_id") != space || s.Str("room_type") != "m.space" || s.Str("name") != "Space" || s.Body["allowed_room_ids"] != nil ||
		s.Str("join_rule") != "public" || s.Str("room_version") != "10" {
		t.Fatalf("space summary %s", s.Raw)
	}
	if s := alice.MustDo("GET", "/_matrix/client/v1/room_summary/"+esc(private), nil); s.Str("topic") != "secret" || s.Body["allowed_room_ids"] != nil {
		t.Fatalf("private summary for a member %s", s.Raw)
	}
	// bob: the public space yes (without membership), the private room no,
	// the restricted room once he is in the space.
	if s := bob.MustDo("GET", "/_matrix/client/v1/room_summary/"+esc(space), nil); s.Body["membership"] != nil {
		t.Fatalf("non-member's summary %s", s.Raw)
	}
	for _, room := range []string{private, restricted, "!nowhere:localhost"} {
		if r := bob.Do("GET", "/_matrix/client/v1/room_summary/"+esc(room), nil); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
			t.Fatalf("summary of %s for bob: %d %s", room, r.Status, r.Raw)
		}
	}
	bob.MustDo("POST", v3("/join/"+esc(space)), map[string]any{})
	bob.MustDo("GET", "/_matrix/client/v1/room_summary/"+esc(restricted), nil)
	// Banned from the public space: its summary is hidden from bob, as
	// the hierarchy is (one rule for both).
	alice.MustDo("POST", v3("/rooms/"+esc(space)+"/ban"), map[string]any{"user_id": bob.UserID})
	if r := bob.Do("GET", "/_matrix/client/v1/room_summary/"+esc(space), nil); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("summary of a public room for a banned user: %d %s", r.Status, r.Raw)
	}
	if r := bob.Do("GET", "/_matrix/client/v1/rooms/"+esc(space)+"/hierarchy", nil); r.Status != 403 {
		t.Fatalf("hierarchy of a public room for a banned user: %d %s", r.Status, r.Raw)
	}
}
