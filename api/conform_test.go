package api_test

import (
	"testing"

	"strand/api/apitest"
)

// /joined_members lists who is in the room now: a caller who left gets 403,
// and every member has display_name and avatar_url, null when unset.
func TestJoinedMembersNeedsCurrentMembership(t *testing.T) {
	_, c := newServer(t)
	c.Register("jm_owner", "pw")
	bob := apitest.NewClient(t, c.Base)
	bob.Register("jm_bob", "pw")
	roomID := createRoom(t, c, map[string]any{"preset": "public_chat"})
	rp := func(p string) string { return v3("/rooms/" + esc(roomID) + p) }
	bob.MustDo("POST", rp("/join"), map[string]any{})

	r := bob.MustDo("GET", rp("/joined_members"), nil)
	me, ok := r.Body["joined"].(map[string]any)[bob.UserID].(map[string]any)
	if !ok {
		t.Fatalf("joined_members: %s", r.Raw)
	}
	for _, k := range []string{"display_name", "avatar_url"} {
		if v, ok := me[k]; !ok || v != nil {
			t.Fatalf("%s: want null, got %v (%s)", k, v, r.Raw)
		}
	}

	bob.MustDo("POST", rp("/leave"), map[string]any{})
	if r := bob.Do("GET", rp("/joined_members"), nil); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("joined_members after leaving: %d %s", r.Status, r.Raw)
	}
	// /members stays readable as of the leave.
	bob.MustDo("GET", rp("/members"), nil)
}
