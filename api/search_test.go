package api_test

import (
	"net/url"
	"testing"

	"strand/api/apitest"
)

// /search finds messages, names and topics by their words in the rooms
// the caller is in, never in others' rooms or in redacted events, ranked
// or newest first, paginated, with context.
func TestSearch(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("wes", "pw")
	b := apitest.NewClient(t, a.Base)
	b.Register("xia", "pw")
	room := a.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Lighthouse keepers", "topic": "lamps and fog"}).Str("room_id")
	b.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), nil)
	private := b.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}).Str("room_id")
	send := func(c *apitest.Client, roomID, body string) string {
		return c.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message", map[string]any{"msgtype": "m.text", "body": body}).Str("event_id")
	}
	first := send(a, room, "the fog horn sounds at dusk")
	send(b, room, "nothing to see here")
	second := send(b, room, "fog again, thick fog tonight")
	send(b, private, "fog in my private room")
	gone := send(a, room, "fog secret to be redacted")
	a.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/redact/"+url.PathEscape(gone)+"/r1", map[string]any{})

	search := func(c *apitest.Client, body map[string]any, q string) map[string]any {
		t.Helper()
		r := c.MustDo("POST", "/_matrix/client/v3/search"+q, map[string]any{"search_categories": map[string]any{"room_events": body}})
		return r.Body["search_categories"].(map[string]any)["room_events"].(map[string]any)
	}
	ids := func(re map[string]any) []string {
		var out []string
		for _, x := range re["results"].([]any) {
			out = append(out, x.(map[string]any)["result"].(map[string]any)["event_id"].(string))
		}
		return out
	}
	got := search(a, map[string]any{"search_term": "fog", "keys": []string{"content.body"}}, "")
	if r := ids(got); len(r) != 2 || r[0] != second || r[1] != first || got["count"] != float64(2) {
		t.Fatalf("ranked search for fog (the thicker fog first): %v %v", r, got)
	}
	if r := ids(search(a, map[string]any{"search_term": "fog", "keys": []string{"content.body"}, "order_by": "recent", "filter": map[string]any{"limit": 1}}, "")); len(r) != 1 || r[0] != second {
		t.Fatalf("newest first, one per page: %v", r)
	}
	page1 := search(a, map[string]any{"search_term": "fog", "keys": []string{"content.body"}, "order_by": "recent", "filter": map[string]any{"limit": 1}}, "")
	page2 := search(a, map[string]any{"search_term": "fog", "keys": []string{"content.body"}, "order_by": "recent", "filter": map[string]any{"limit": 1}},
		"?next_batch="+url.QueryEscape(page1["next_batch"].(string)))
	if r := ids(page2); len(r) != 1 || r[0] != first {
		t.Fatalf("second page: %v", r)
	}
	// The room's name and topic are found too; bob's private room is his.
	if r := search(a, map[string]any{"search_term": "lighthouse"}, ""); len(ids(r)) != 1 {
		t.Fatalf("room name: %v", r)
	}
	if r := ids(search(b, map[string]any{"search_term": "private"}, "")); len(r) != 1 {
		t.Fatalf("bob's own room: %v", r)
	}
	if r := ids(search(a, map[string]any{"search_term": "private"}, "")); len(r) != 0 {
		t.Fatalf("wes found a message of a room he is not in: %v", r)
	}
	if r := ids(search(a, map[string]any{"search_term": "secret"}, "")); len(r) != 0 {
		t.Fatalf("a redacted message was found: %v", r)
	}
	withContext := search(a, map[string]any{"search_term": "horn", "event_context": map[string]any{"before_limit": 1, "after_limit": 1}}, "")
	ctx := withContext["results"].([]any)[0].(map[string]any)["context"].(map[string]any)
	if len(ctx["events_after"].([]any)) != 1 || len(ctx["events_before"].([]any)) != 1 {
		t.Fatalf("context: %v", ctx)
	}
	for _, body := range []string{
		`{"search_categories":{"room_events":{"search_term":""}}}`,
		`{"search_categories":{"room_events":{"search_term":"x","order_by":"size"}}}`,
		`{"search_categories":{"room_events":{"search_term":"x","keys":["content.url"]}}}`,
		`{"search_categories":{"room_events":{"search_term":5}}}`,
	} {
		if r := a.Do("POST", "/_matrix/client/v3/search", body); r.Status != 400 {
			t.Errorf("%s: %d %s", body, r.Status, r.Raw)
		}
	}
	if r := a.Do("POST", "/_matrix/client/v3/search?next_batch=zz", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "fog"}}}); r.Status != 400 {
		t.Errorf("bad next_batch: %d", r.Status)
	}

	projectionReplays(t, env, 2)
}
