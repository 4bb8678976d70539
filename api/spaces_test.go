package api_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"strand/api/apitest"
)

func hierarchyOf(t *testing.T, c *apitest.Client, room, query string) apitest.Response {
	t.Helper()
	return c.MustDo("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/hierarchy"+query, nil)
}

// hierarchyIDs is the room IDs of a hierarchy page, in order.
func hierarchyIDs(r apitest.Response) []string {
	var ids []string
	rooms, _ := r.Body["rooms"].([]any)
	for _, x := range rooms {
		ids = append(ids, x.(map[string]any)["room_id"].(string))
	}
	return ids
}

// hierarchyRoom is one room's entry of a page.
func hierarchyRoom(r apitest.Response, id string) map[string]any {
	rooms, _ := r.Body["rooms"].([]any)
	for _, x := range rooms {
		if m := x.(map[string]any); m["room_id"] == id {
			return m
		}
	}
	return nil
}

// childKeys is the state keys of a room's children_state, in order.
func childKeys(room map[string]any) []string {
	var keys []string
	cs, _ := room["children_state"].([]any)
	for _, x := range cs {
		keys = append(keys, x.(map[string]any)["state_key"].(string))
	}
	return keys
}

func linkChild(t *testing.T, c *apitest.Client, parent, child string, content map[string]any) {
	t.Helper()
	c.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(parent)+"/state/m.space.child/"+url.PathEscape(child), content)
}

func sameIDs(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: rooms %v, want %v", what, got, want)
	}
}

// The tree (as Complement's spaces tests draw theirs):
//
//	root ─┬─ r1 (suggested)
//	      ├─ ss1 ── ss2 ─┬─ r3
//	      │              └─ r4 (bob's, world-readable; alice not in it)
//	      └─ r2 (suggested) ── r5 (ignored: r2 is not a space)
func TestSpacesHierarchy(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	base := env.API(apitest.DefaultConfig()).URL
	alice, bob := apitest.NewClient(t, base), apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	bob.Register("bob", "pw")
	mk := func(c *apitest.Client, name string, space bool, extra map[string]any) string {
		body := map[string]any{"preset": "public_chat", "name": name}
		if space {
			body["creation_content"] = map[string]any{"type": "m.space"}
		}
		for k, v := range extra {
			body[k] = v
		}
		return c.MustDo("POST", "/_matrix/client/v3/createRoom", body).Str("room_id")
	}
	root := mk(alice, "Root", true, nil)
	r1 := mk(alice, "R1", false, nil)
	ss1 := mk(alice, "Sub-Space 1", true, map[string]any{"topic": "Some topic"})
	r2 := mk(alice, "R2", false, nil)
	ss2 := mk(alice, "SS2", true, nil)
	r3 := mk(alice, "R3", false, nil)
	r4 := mk(bob, "R4", false, map[string]any{"initial_state": []map[string]any{
		{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
	r5 := mk(bob, "R5", false, nil)
	via := []string{"localhost"}
	linkChild(t, alice, root, r1, map[string]any{"via": via, "suggested": true})
	linkChild(t, alice, root, ss1, map[string]any{"via": via})
	linkChild(t, alice, root, r2, map[string]any{"via": via, "suggested": true})
	linkChild(t, alice, r2, r5, map[string]any{"via": via})
	linkChild(t, alice, ss1, ss2, map[string]any{"via": via})
	linkChild(t, alice, ss2, r3, map[string]any{"via": via})
	linkChild(t, alice, ss2, r4, map[string]any{"via": via})
	// Not a link: no via, or a state key that is no room ID.
	linkChild(t, alice, ss2, "!nowhere:localhost", map[string]any{})
	linkChild(t, alice, ss2, "not-a-room", map[string]any{"via": via})

	// The whole tree, depth first, children in the order they were linked.
	r := hierarchyOf(t, alice, root, "")
	sameIDs(t, "whole tree", hierarchyIDs(r), root, r1, ss1, ss2, r3, r4, r2)
	if _, ok := r.Body["next_batch"]; ok {
		t.Fatalf("next_batch on the only page: %s", r.Raw)
	}
	sameIDs(t, "root's children", childKeys(hierarchyRoom(r, root)), r1, ss1, r2)
	sameIDs(t, "ss2's children", childKeys(hierarchyRoom(r, ss2)), r3, r4)
	if ks := childKeys(hierarchyRoom(r, r2)); len(ks) != 0 {
		t.Fatalf("a room that is no space has children_state %v", ks)
	}
	s1 := hierarchyRoom(r, ss1)
	if s1["name"] != "Sub-Space 1" || s1["topic"] != "Some topic" || s1["room_type"] != "m.space" || s1["join_rule"] != "public" ||
		s1["num_joined_members"] != float64(1) || s1["world_readable"] != false || s1["guest_can_join"] != false {
		t.Fatalf("ss1's summary: %v", s1)
	}
	if r4e := hierarchyRoom(r, r4); r4e["world_readable"] != true || r4e["name"] != "R4" {
		t.Fatalf("r4's summary: %v", r4e)
	}
	child := hierarchyRoom(r, root)["children_state"].([]any)[0].(map[string]any)
	if child["type"] != "m.space.child" || child["sender"] != alice.UserID || child["origin_server_ts"] == nil ||
		child["content"].(map[string]any)["suggested"] != true {
		t.Fatalf("stripped child event: %v", child)
	}

	sameIDs(t, "max_depth=1", hierarchyIDs(hierarchyOf(t, alice, root, "?max_depth=1")), root, r1, ss1, r2)
	r = hierarchyOf(t, alice, root, "?max_depth=1")
	sameIDs(t, "max_depth=1: ss1's links still listed", childKeys(hierarchyRoom(r, ss1)), ss2)
	sameIDs(t, "max_depth=0", hierarchyIDs(hierarchyOf(t, alice, root, "?max_depth=0")), root)
	r = hierarchyOf(t, alice, root, "?suggested_only=true")
	sameIDs(t, "suggested_only", hierarchyIDs(r), root, r1, r2)
	sameIDs(t, "suggested_only: root's links", childKeys(hierarchyRoom(r, root)), r1, r2)

	// Pages continue where the last ended, with the first page's settings.
	r = hierarchyOf(t, alice, root, "?limit=4")
	sameIDs(t, "page 1", hierarchyIDs(r), root, r1, ss1, ss2)
	next := r.Str("next_batch")
	r = hierarchyOf(t, alice, root, "?from="+url.QueryEscape(next))
	sameIDs(t, "page 2", hierarchyIDs(r), r3, r4, r2)
	r = hierarchyOf(t, alice, root, "?limit=2&max_depth=1")
	r = hierarchyOf(t, alice, root, "?limit=2&from="+url.QueryEscape(r.Str("next_batch")))
	sameIDs(t, "page 2 keeps max_depth", hierarchyIDs(r), ss1, r2)
	for _, q := range []string{"?from=" + url.QueryEscape(next) + "&max_depth=1", "?from=" + url.QueryEscape(next) + "&suggested_only=true",
		"?from=bogus", "?limit=0", "?limit=x", "?max_depth=-1", "?suggested_only=yes"} {
		if r := alice.Do("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(root)+"/hierarchy"+q, nil); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Fatalf("hierarchy%s: %d %s", q, r.Status, r.Raw)
		}
	}

	// An order puts a link first; a link emptied is no link.
	linkChild(t, alice, root, r2, map[string]any{"via": via, "suggested": true, "order": "a"})
	sameIDs(t, "ordered", childKeys(hierarchyRoom(hierarchyOf(t, alice, root, ""), root)), r2, r1, ss1)
	linkChild(t, alice, root, ss1, map[string]any{})
	r = hierarchyOf(t, alice, root, "")
	sameIDs(t, "link removed", hierarchyIDs(r), root, r2, r1)
	sameIDs(t, "link removed: root's links", childKeys(hierarchyRoom(r, root)), r2, r1)
}

// Rooms the caller may not join, see or knock on are left out, and so is
// everything below a space they may not see.
//
//	root (public) ─┬─ r1 (invite only)
//	               └─ ss1 (invite only) ─┬─ r2 (public)
//	                                     └─ r3 (invite only)
func TestSpacesHierarchyJoinRules(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	base := env.API(apitest.DefaultConfig()).URL
	alice, bob, carol := apitest.NewClient(t, base), apitest.NewClient(t, base), apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	bob.Register("bob", "pw")
	carol.Register("carol", "pw")
	mk := func(preset string, space bool, extra map[string]any) string {
		body := map[string]any{"preset": preset}
		if space {
			body["creation_content"] = map[string]any{"type": "m.space"}
		}
		for k, v := range extra {
			body[k] = v
		}
		return alice.MustDo("POST", "/_matrix/client/v3/createRoom", body).Str("room_id")
	}
	root := mk("public_chat", true, nil)
	r1 := mk("private_chat", false, nil)
	ss1 := mk("private_chat", true, nil)
	r2 := mk("public_chat", false, nil)
	r3 := mk("private_chat", false, nil)
	via := []string{"localhost"}
	linkChild(t, alice, root, r1, map[string]any{"via": via})
	linkChild(t, alice, root, ss1, map[string]any{"via": via})
	linkChild(t, alice, ss1, r2, map[string]any{"via": via})
	linkChild(t, alice, ss1, r3, map[string]any{"via": via})

	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(root), map[string]any{})
	r := hierarchyOf(t, bob, root, "")
	sameIDs(t, "bob, member of root only", hierarchyIDs(r), root)
	sameIDs(t, "links of root", childKeys(hierarchyRoom(r, root)), r1, ss1)

	invite := func(room string) {
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": bob.UserID})
	}
	invite(r1)
	invite(r3)
	sameIDs(t, "bob invited to r1 and r3", hierarchyIDs(hierarchyOf(t, bob, root, "")), root, r1)
	invite(ss1)
	sameIDs(t, "bob invited to ss1 too", hierarchyIDs(hierarchyOf(t, bob, root, "")), root, r1, ss1, r2, r3)

	// A restricted room is visible to members of a room it allows.
	restricted := mk("private_chat", false, map[string]any{"room_version": "10", "initial_state": []map[string]any{
		{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "restricted",
			"allow": []map[string]any{{"type": "m.room_membership", "room_id": root}}}}}})
	linkChild(t, alice, root, restricted, map[string]any{"via": via})
	r = hierarchyOf(t, bob, root, "?max_depth=1")
	sameIDs(t, "restricted to root's members", hierarchyIDs(r), root, r1, ss1, restricted)
	if ids, _ := hierarchyRoom(r, restricted)["allowed_room_ids"].([]any); len(ids) != 1 || ids[0] != root {
		t.Fatalf("allowed_room_ids: %v", hierarchyRoom(r, restricted))
	}

	// A space the caller may not see at all is 403, as is an unknown room.
	private := mk("private_chat", true, nil)
	for _, room := range []string{private, "!unknown:localhost"} {
		if r := carol.Do("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/hierarchy", nil); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
			t.Fatalf("hierarchy of %s for a stranger: %d %s", room, r.Status, r.Raw)
		}
	}
	if r := carol.Do("GET", "/_matrix/client/v1/rooms/not-a-room/hierarchy", nil); r.Status != 400 || !strings.Contains(r.Errcode(), "M_INVALID_PARAM") {
		t.Fatalf("invalid room ID: %d %s", r.Status, r.Raw)
	}
}

// A from token past the end of the walk, up to the largest offset, is an
// empty last page: the offset must not overflow into a next_batch.
func TestSpacesHierarchyFromPastEnd(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	base := env.API(apitest.DefaultConfig()).URL
	alice := apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	root := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{
		"preset": "public_chat", "creation_content": map[string]any{"type": "m.space"}}).Str("room_id")
	for _, from := range []string{"h5_10_0", "h9223372036854775807_10_0"} {
		r := hierarchyOf(t, alice, root, "?from="+url.QueryEscape(from))
		if ids := hierarchyIDs(r); len(ids) != 0 {
			t.Fatalf("from=%s: rooms %v, want none", from, ids)
		}
		if _, ok := r.Body["next_batch"]; ok {
			t.Fatalf("from=%s: next_batch %v on a page past the end", from, r.Body["next_batch"])
		}
	}
}
