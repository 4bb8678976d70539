package api_test

import (
	"testing"
)

// Version 12 as clients see it (MSC4289, MSC4291): upgrading needs PL 150
// in the default power levels; listing a creator in power levels is a bad
// request, at createRoom and later; a trusted private chat makes its
// invitees additional creators next to those creation_content names; and
// m.room.create cannot be sent into an existing room (400).
func TestVersion12Creators(t *testing.T) {
	_, alice := newServer(t)
	alice.Register("c12alice", "pw")
	bob := alice.As("")
	bob.Register("c12bob", "pw")
	const aliceID, bobID, carolID = "@c12alice:localhost", "@c12bob:localhost", "@c12carol:localhost"

	room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "public_chat"})
	pl := alice.MustDo("GET", v3("/rooms/"+esc(room)+"/state/m.room.power_levels/"), nil)
	if ev := pl.Body["events"].(map[string]any); ev["m.room.tombstone"] != float64(150) {
		t.Fatalf("v12 power levels %s", pl.Raw)
	}
	if users := pl.Body["users"].(map[string]any); len(users) != 0 {
		t.Fatalf("v12 power levels list users %v", users)
	}
	for _, body := range []map[string]any{{"users": map[string]any{aliceID: 100}}} {
		if r := alice.Do("PUT", v3("/rooms/"+esc(room)+"/state/m.room.power_levels/"), body); r.Status != 400 {
			t.Fatalf("listing the creator: %d %s", r.Status, r.Raw)
		}
	}
	if r := alice.Do("POST", v3("/createRoom"), map[string]any{"room_version": "12",
		"power_level_content_override": map[string]any{"users": map[string]any{aliceID: 100}}}); r.Status != 400 {
		t.Fatalf("override listing the creator: %d %s", r.Status, r.Raw)
	}
	// Before v12 the creator is listed, and tombstones need 100.
	room10 := createRoom(t, alice, map[string]any{"room_version": "11"})
	pl = alice.MustDo("GET", v3("/rooms/"+esc(room10)+"/state/m.room.power_levels/"), nil)
	if pl.Body["events"].(map[string]any)["m.room.tombstone"] != float64(100) || pl.Body["users"].(map[string]any)[aliceID] != float64(100) {
		t.Fatalf("v11 power levels %s", pl.Raw)
	}

	dm := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "trusted_private_chat", "is_direct": true,
		"invite": []string{bobID}, "creation_content": map[string]any{"additional_creators": []string{carolID}}})
	create := alice.MustDo("GET", v3("/rooms/"+esc(dm)+"/state/m.room.create/"), nil)
	got, _ := create.Body["additional_creators"].([]any)
	if len(got) != 2 || got[0] != carolID || got[1] != bobID {
		t.Fatalf("additional_creators %s", create.Raw)
	}
	bob.MustDo("POST", v3("/join/"+esc(dm)), map[string]any{})
	if r := alice.Do("PUT", v3("/rooms/"+esc(dm)+"/state/m.room.power_levels/"), map[string]any{"users": map[string]any{bobID: 100}}); r.Status != 400 {
		t.Fatalf("listing an additional creator: %d %s", r.Status, r.Raw)
	}
	if r := alice.Do("POST", v3("/rooms/"+esc(dm)+"/kick"), map[string]any{"user_id": bobID}); r.Status != 403 {
		t.Fatalf("kicking an additional creator: %d %s", r.Status, r.Raw)
	}
}
