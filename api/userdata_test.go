package api_test

import (
	"strings"
	"testing"

	"strand/api/apitest"
)

func TestRoomTags(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	c.Register("tagger", "pw")
	roomID := createRoom(t, c, map[string]any{})
	base := v3("/user/" + esc(c.UserID) + "/rooms/" + esc(roomID) + "/tags")
	c.MustDo("PUT", base+"/m.favourite", map[string]any{"order": 0.25})
	c.MustDo("PUT", base+"/u.work", map[string]any{})
	r := c.MustDo("GET", base, nil)
	tags := r.Body["tags"].(map[string]any)
	if len(tags) != 2 || tags["m.favourite"].(map[string]any)["order"] != 0.25 {
		t.Fatalf("tags: %s", r.Raw)
	}
	c.MustDo("DELETE", base+"/u.work", nil)
	if r := c.MustDo("GET", base, nil); len(r.Body["tags"].(map[string]any)) != 1 {
		t.Fatalf("after delete: %s", r.Raw)
	}
	if r := c.Do("PUT", base+"/m.lowpriority", map[string]any{"order": "high"}); r.Status != 400 {
		t.Fatalf("bad order: %d", r.Status)
	}
	if r := c.Do("PUT", v3("/user/@other:localhost/rooms/"+esc(roomID)+"/tags/x"), map[string]any{}); r.Status != 403 {
		t.Fatalf("tagging for another user: %d", r.Status)
	}
	if r := c.MustDo("GET", v3("/sync?set_presence=offline"), nil); !strings.Contains(string(r.Raw), `"m.tag"`) {
		t.Fatalf("tags not in sync: %.300s", r.Raw)
	}
	c.MustDo("GET", v3("/voip/turnServer"), nil)
	c.MustDo("GET", v3("/thirdparty/protocols"), nil)
}

func TestUserDirectorySearch(t *testing.T) {
	_, c := newServer(t)
	c.Register("searcher", "pw")
	mate := apitest.NewClient(t, c.Base)
	mate.Register("roommate", "pw")
	mate.MustDo("PUT", v3("/profile/"+esc(mate.UserID)+"/displayname"), map[string]any{"displayname": "Rosa Mate"})
	public := apitest.NewClient(t, c.Base)
	public.Register("publicperson", "pw")
	hidden := apitest.NewClient(t, c.Base)
	hidden.Register("hiddenmate", "pw")
	shared := createRoom(t, c, map[string]any{"preset": "private_chat", "invite": []string{mate.UserID}})
	mate.MustDo("POST", v3("/rooms/"+esc(shared)+"/join"), nil)
	createRoom(t, public, map[string]any{"visibility": "public", "preset": "public_chat"})
	createRoom(t, hidden, map[string]any{"preset": "private_chat"})

	search := func(term string) []string {
		r := c.MustDo("POST", v3("/user_directory/search"), map[string]any{"search_term": term, "limit": 10})
		var ids []string
		for _, x := range r.Body["results"].([]any) {
			ids = append(ids, x.(map[string]any)["user_id"].(string))
		}
		return ids
	}
	if got := search("rosa"); len(got) != 1 || got[0] != mate.UserID {
		t.Fatalf("by display name: %v", got)
	}
	if got := search("publicperson"); len(got) != 1 {
		t.Fatalf("a user in a public room: %v", got)
	}
	if got := search("hiddenmate"); len(got) != 0 {
		t.Fatalf("a user sharing nothing was found: %v", got)
	}
	// The searcher, in rooms with others and a public one, is not a
	// result of their own search.
	createRoom(t, c, map[string]any{"visibility": "public", "preset": "public_chat"})
	if got := search("searcher"); len(got) != 0 {
		t.Fatalf("the searcher found themselves: %v", got)
	}
	if r := c.Do("POST", v3("/user_directory/search"), map[string]any{}); r.Status != 400 || r.Errcode() != "M_MISSING_PARAM" {
		t.Fatalf("no search term: %d %s", r.Status, r.Raw)
	}
}

// Strand binds no third-party identifiers: the list is empty, not 404.
func TestThreePIDsEmpty(t *testing.T) {
	_, c := newServer(t)
	c.Register("ola", "pw")
	r := c.MustDo("GET", "/_matrix/client/v3/account/3pid", nil)
	if l, ok := r.Body["threepids"].([]any); !ok || len(l) != 0 {
		t.Fatalf("3pids: %s", r.Raw)
	}
	if r := c.As("").Do("GET", "/_matrix/client/v3/account/3pid", nil); r.Status != 401 {
		t.Fatalf("without a token: %d", r.Status)
	}
}
