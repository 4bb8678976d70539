package api_test

import (
	"net/url"
	"testing"

	"strand/api/apitest"
)

// Relations are listed per parent (by relation and event type, in both
// directions, paginated); threads are listed with their summaries; a
// redacted reply leaves its thread.
func TestRelationsAndThreads(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("rita", "pw")
	b := apitest.NewClient(t, a.Base)
	b.Register("sam", "pw")
	c := apitest.NewClient(t, a.Base)
	c.Register("tom", "pw")
	room := a.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	b.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), nil)
	c.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), nil)
	send := func(cl *apitest.Client, typ string, content map[string]any) string {
		t.Helper()
		return cl.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/"+typ, content).Str("event_id")
	}
	root := send(a, "m.room.message", map[string]any{"msgtype": "m.text", "body": "root"})
	other := send(a, "m.room.message", map[string]any{"msgtype": "m.text", "body": "another root"})
	var replies []string
	for i := range 3 {
		replies = append(replies, send(b, "m.room.message", map[string]any{"msgtype": "m.text", "body": "reply",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}, "n": i}))
	}
	reaction := send(c, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
	edit := send(a, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* root", "m.new_content": map[string]any{"msgtype": "m.text", "body": "root"},
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}})
	send(a, "m.room.message", map[string]any{"msgtype": "m.text", "body": "in other thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": other}})
	send(a, "m.room.message", map[string]any{"msgtype": "m.text", "body": "a reply, not a relation",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": root}}})

	ids := func(r apitest.Response) []string {
		var out []string
		for _, e := range r.Body["chunk"].([]any) {
			out = append(out, e.(map[string]any)["event_id"].(string))
		}
		return out
	}
	base := "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/relations/" + url.PathEscape(root)
	all := ids(b.MustDo("GET", base, nil))
	want := []string{edit, reaction, replies[2], replies[1], replies[0]}
	if len(all) != len(want) {
		t.Fatalf("relations of root: %v, want %v", all, want)
	}
	for i := range want {
		if all[i] != want[i] {
			t.Fatalf("relations of root: %v, want %v (newest first)", all, want)
		}
	}
	if got := ids(b.MustDo("GET", base+"/m.thread?dir=f", nil)); len(got) != 3 || got[0] != replies[0] || got[2] != replies[2] {
		t.Fatalf("thread replies forwards: %v", got)
	}
	if got := ids(b.MustDo("GET", base+"/m.annotation/m.reaction", nil)); len(got) != 1 || got[0] != reaction {
		t.Fatalf("reactions: %v", got)
	}
	// Pages of two cover everything once.
	var paged []string
	tok := ""
	for range 5 {
		q := "?limit=2"
		if tok != "" {
			q += "&from=" + url.QueryEscape(tok)
		}
		r := b.MustDo("GET", base+q, nil)
		paged = append(paged, ids(r)...)
		tok, _ = r.Body["next_batch"].(string)
		if tok == "" {
			break
		}
	}
	if len(paged) != 5 || paged[0] != edit || paged[4] != replies[0] {
		t.Fatalf("paginated relations: %v", paged)
	}

	// Threads: newest activity first, with summaries.
	th := b.MustDo("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/threads", nil)
	chunk := th.Body["chunk"].([]any)
	if len(chunk) != 2 || chunk[0].(map[string]any)["event_id"] != other || chunk[1].(map[string]any)["event_id"] != root {
		t.Fatalf("threads: %s", th.Raw)
	}
	summary := chunk[1].(map[string]any)["unsigned"].(map[string]any)["m.relations"].(map[string]any)["m.thread"].(map[string]any)
	if summary["count"] != float64(3) || summary["current_user_participated"] != true ||
		summary["latest_event"].(map[string]any)["event_id"] != replies[2] {
		t.Fatalf("thread summary for sam: %v", summary)
	}
	if got := c.MustDo("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/threads?include=participated", nil); len(got.Body["chunk"].([]any)) != 0 {
		t.Fatalf("tom took part in no thread: %s", got.Raw)
	}
	if got := b.MustDo("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/threads?limit=1", nil); got.Body["next_batch"] == nil {
		t.Fatalf("first of two threads has no next_batch: %s", got.Raw)
	} else if next := b.MustDo("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/threads?limit=1&from="+url.QueryEscape(got.Body["next_batch"].(string)), nil); len(next.Body["chunk"].([]any)) != 1 ||
		next.Body["chunk"].([]any)[0].(map[string]any)["event_id"] != root {
		t.Fatalf("second page of threads: %s", next.Raw)
	}

	// A redacted reply is no longer part of the thread.
	b.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/redact/"+url.PathEscape(replies[2])+"/r1", map[string]any{})
	if got := ids(b.MustDo("GET", base+"/m.thread", nil)); len(got) != 2 {
		t.Fatalf("thread after a redaction: %v", got)
	}

	// Bad input and strangers.
	d := apitest.NewClient(t, a.Base)
	d.Register("uma", "pw")
	for _, tc := range []struct {
		cl     *apitest.Client
		path   string
		status int
	}{
		{b, "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/relations/%24nosuchevent", 404},
		{b, base + "?dir=x", 400},
		{b, base + "?limit=-1", 400},
		{b, base + "?from=garbage", 400},
		{d, base, 404},
		{d, "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/threads", 403},
		{b, "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/threads?include=some", 400},
	} {
		if r := tc.cl.Do("GET", tc.path, nil); r.Status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.path, r.Status, r.Raw, tc.status)
		}
	}

	projectionReplays(t, env, 3)
}
