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
