package api_test

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

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

// createRoom's topic is written with its rich form (m.topic), and wins
// over an m.room.topic in initial_state, which is then not sent at all.
func TestCreateRoomRichTopic(t *testing.T) {
	_, c := newServer(t)
	c.Register("topic_owner", "pw")
	roomID := createRoom(t, c, map[string]any{"topic": "Test Room", "preset": "public_chat",
		"initial_state": []any{map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "Shenanigans"}}}})
	r := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/state/m.room.topic/"), nil)
	if r.Str("topic") != "Test Room" {
		t.Fatalf("topic: %s", r.Raw)
	}
	texts, _ := r.Body["m.topic"].(map[string]any)["m.text"].([]any)
	if len(texts) != 1 || texts[0].(map[string]any)["body"] != "Test Room" || texts[0].(map[string]any)["mimetype"] != "text/plain" {
		t.Fatalf("m.topic: %s", r.Raw)
	}
	state := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/messages?dir=b&limit=50"), nil)
	topics := 0
	for _, e := range state.Body["chunk"].([]any) {
		if e.(map[string]any)["type"] == "m.room.topic" {
			topics++
		}
	}
	if topics != 1 {
		t.Fatalf("want one topic event, got %d: %s", topics, state.Raw)
	}

	// A topic from initial_state alone is kept as given.
	plain := createRoom(t, c, map[string]any{"initial_state": []any{map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "Only"}}}})
	r = c.MustDo("GET", v3("/rooms/"+esc(plain)+"/state/m.room.topic/"), nil)
	if r.Str("topic") != "Only" || r.Body["m.topic"] != nil {
		t.Fatalf("initial_state topic: %s", r.Raw)
	}
}

// Keys of a /join body other than its parameters are kept in the
// membership content; membership itself is the server's.
func TestJoinKeepsCustomContent(t *testing.T) {
	_, c := newServer(t)
	c.Register("jc_owner", "pw")
	bob := apitest.NewClient(t, c.Base)
	bob.Register("jc_bob", "pw")
	roomID := createRoom(t, c, map[string]any{"preset": "public_chat", "room_alias_name": "jc"})
	bob.MustDo("POST", v3("/join/"+esc("#jc:localhost")), map[string]any{"foo": "bar", "membership": "leave", "reason": "hi"})
	m := c.MustDo("GET", v3("/rooms/"+esc(roomID)+"/state/m.room.member/"+esc(bob.UserID)), nil)
	if m.Str("foo") != "bar" || m.Str("membership") != "join" || m.Str("reason") != "hi" {
		t.Fatalf("member content: %s", m.Raw)
	}
	if r := bob.Do("POST", v3("/rooms/"+esc(roomID)+"/join"), map[string]any{"reason": 5}); r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
		t.Fatalf("non-string reason: %d %s", r.Status, r.Raw)
	}
}

// An inline /sync filter naming something that is not a user ID as a
// sender is refused, as a stored one is at upload.
func TestSyncInlineFilterIDs(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	c.Register("sf_user", "pw")
	bad := url.QueryEscape(`{"room":{"timeline":{"not_senders":["bob"]}}}`)
	if r := c.Do("GET", v3("/sync?filter="+bad), nil); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Fatalf("inline filter with a bad sender: %d %s", r.Status, r.Raw)
	}
	good := url.QueryEscape(`{"room":{"timeline":{"not_senders":["@bob:localhost"]},"rooms":["!a:localhost"]}}`)
	c.MustDo("GET", v3("/sync?filter="+good), nil)
}

// One-time keys are claimed in the order they were uploaded (MSC4225),
// not by key ID: a later upload's keys wait for the earlier ones'.
func TestKeyClaimUploadOrder(t *testing.T) {
	_, c := newServer(t)
	c.Register("kc_alice", "pw")
	claimer := apitest.NewClient(t, c.Base)
	claimer.Register("kc_bob", "pw")
	dev := c.Device
	upload := func(ids ...string) {
		otks := map[string]any{}
		for i, id := range ids {
			otks["signed_curve25519:"+id] = signedKey(i+len(id)*10, c.UserID, dev)
		}
		c.MustDo("POST", v3("/keys/upload"), map[string]any{"one_time_keys": otks})
	}
	upload("M1", "M2")
	upload("A1") // a lower ID, uploaded later
	upload("Z1")
	var got []string
	for range 4 {
		r := claimer.MustDo("POST", v3("/keys/claim"), map[string]any{"one_time_keys": map[string]any{c.UserID: map[string]string{dev: "signed_curve25519"}}})
		keys, _ := r.Body["one_time_keys"].(map[string]any)[c.UserID].(map[string]any)[dev].(map[string]any)
		for id := range keys {
			got = append(got, id)
		}
	}
	want := []string{"signed_curve25519:M1", "signed_curve25519:M2", "signed_curve25519:A1", "signed_curve25519:Z1"}
	if len(got) != len(want) {
		t.Fatalf("claimed %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("claimed %v, want %v", got, want)
		}
	}
}

// /search's count is the total of visible matches, the same on every page,
// both newest first and by rank.
func TestSearchCountIsTotal(t *testing.T) {
	_, c := newServer(t)
	c.Register("sc_user", "pw")
	roomID := createRoom(t, c, map[string]any{})
	for i := range 15 {
		c.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/send/m.room.message/sc"+string(rune('a'+i))), map[string]any{"msgtype": "m.text", "body": "needle number"})
	}
	for _, order := range []string{"recent", "rank"} {
		body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": "needle", "order_by": order, "filter": map[string]any{"limit": 10}}}}
		next := ""
		for page := 0; page < 2; page++ {
			path := v3("/search")
			if next != "" {
				path += "?next_batch=" + url.QueryEscape(next)
			}
			r := c.MustDo("POST", path, body)
			re := r.Body["search_categories"].(map[string]any)["room_events"].(map[string]any)
			results := re["results"].([]any)
			if re["count"] != float64(15) || len(results) != []int{10, 5}[page] {
				t.Fatalf("%s page %d: count %v, %d results: %s", order, page, re["count"], len(results), r.Raw)
			}
			next, _ = re["next_batch"].(string)
			if page == 0 && next == "" {
				t.Fatalf("%s: no next_batch: %s", order, r.Raw)
			}
		}
	}
}

// Deleting an alias takes it out of the room's m.room.canonical_alias,
// as alias or among alt_aliases, with a new state event.
func TestDeleteAliasUpdatesCanonicalAlias(t *testing.T) {
	_, c := newServer(t)
	c.Register("ca_owner", "pw")
	roomID := createRoom(t, c, map[string]any{})
	for _, a := range []string{"#ca_main:localhost", "#ca_alt:localhost"} {
		c.MustDo("PUT", v3("/directory/room/"+esc(a)), map[string]any{"room_id": roomID})
	}
	state := v3("/rooms/" + esc(roomID) + "/state/m.room.canonical_alias/")
	c.MustDo("PUT", state, map[string]any{"alias": "#ca_main:localhost", "alt_aliases": []string{"#ca_alt:localhost"}})

	c.MustDo("DELETE", v3("/directory/room/"+esc("#ca_main:localhost")), nil)
	r := c.MustDo("GET", state, nil)
	if _, ok := r.Body["alias"]; ok || len(r.Body["alt_aliases"].([]any)) != 1 {
		t.Fatalf("after deleting the main alias: %s", r.Raw)
	}
	c.MustDo("DELETE", v3("/directory/room/"+esc("#ca_alt:localhost")), nil)
	if r := c.MustDo("GET", state, nil); len(r.Body) != 0 {
		t.Fatalf("after deleting both: %s", r.Raw)
	}
}

// Reading a rule of a push rule kind this server does not have is 404 (no
// such rule), which clients probe for; writing one stays 400.
func TestPushRuleOfUnknownKindIsNotFound(t *testing.T) {
	_, c := newServer(t)
	c.Register("pr_user", "pw")
	for _, p := range []string{"", "/enabled"} {
		if r := c.Do("GET", v3("/pushrules/global/postcontent/.io.element.msc4306.rule.subscribed_thread"+p), nil); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
			t.Fatalf("GET %q: %d %s", p, r.Status, r.Raw)
		}
	}
	// postcontent is a kind Strand knows but keeps empty: enabling a rule
	// it lacks is 404, like any missing rule.
	if r := c.Do("PUT", v3("/pushrules/global/postcontent/x/enabled"), map[string]any{"enabled": false}); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("PUT enabled: %d %s", r.Status, r.Raw)
	}
}

// A /messages page with events carries end even when it reaches the start
// of the room (here through a contains_url filter); following end gives an
// empty page without one.
func TestMessagesEndOnLastPage(t *testing.T) {
	_, c := newServer(t)
	c.Register("me_owner", "pw")
	roomID := createRoom(t, c, map[string]any{})
	rp := func(p string) string { return v3("/rooms/" + esc(roomID) + p) }
	c.MustDo("PUT", rp("/send/m.room.message/t1"), map[string]any{"msgtype": "m.text", "body": "text"})
	c.MustDo("PUT", rp("/send/m.room.message/t2"), map[string]any{"msgtype": "m.file", "body": "f.png", "url": "mxc://localhost/abc"})
	q := url.Values{"dir": {"b"}, "filter": {`{"contains_url":true}`}}
	r := c.MustDo("GET", rp("/messages?"+q.Encode()), nil)
	if n := len(r.Body["chunk"].([]any)); n != 1 || r.Str("end") == "" {
		t.Fatalf("filtered page: %d events, end %q: %s", n, r.Str("end"), r.Raw)
	}
	q.Set("from", r.Str("end"))
	r = c.MustDo("GET", rp("/messages?"+q.Encode()), nil)
	if n := len(r.Body["chunk"].([]any)); n != 0 || r.Body["end"] != nil {
		t.Fatalf("page after the last: %d events, end %v: %s", n, r.Body["end"], r.Raw)
	}
}

// /members?at= takes the tokens /sync hands out and answers the state at
// that point: a prev_batch gives the members at the start of its timeline
// (the state the sync's state section describes), a next_batch (what
// matrix-js-sdk sends) the members as of that sync. A timeline that reaches
// the room's create event starts before the room existed; its prev_batch
// answers the membership the room was created with (the state after
// createRoom's record: the creator and the initial invites), as Complement's
// TestGetRoomMembersAtPoint expects, while /messages back from it still has
// nothing earlier, so clients paginating back get no event twice.
func TestMembersAtSyncTokens(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	c.Register("ma_owner", "pw")
	bob := apitest.NewClient(t, c.Base)
	bob.Register("ma_bob", "pw")
	roomID := createRoom(t, c, map[string]any{"preset": "public_chat", "invite": []string{bob.UserID}})
	rp := func(p string) string { return v3("/rooms/" + esc(roomID) + p) }
	c.MustDo("PUT", rp("/send/m.room.message/m1"), map[string]any{"msgtype": "m.text", "body": "one"})
	c.MustDo("PUT", rp("/send/m.room.message/m2"), map[string]any{"msgtype": "m.text", "body": "two"})

	syncRoom := func(limit int) (prevBatch, nextBatch string, timeline []any, limited bool) {
		t.Helper()
		f := url.QueryEscape(`{"room":{"timeline":{"limit":` + strconv.Itoa(limit) + `}}}`)
		r := c.MustDo("GET", v3("/sync?filter="+f), nil)
		room := r.Body["rooms"].(map[string]any)["join"].(map[string]any)[roomID].(map[string]any)
		tl := room["timeline"].(map[string]any)
		pb, _ := tl["prev_batch"].(string)
		lim, _ := tl["limited"].(bool)
		return pb, r.Str("next_batch"), tl["events"].([]any), lim
	}
	short, next, _, limited := syncRoom(1) // only "two"
	full, _, whole, fullLimited := syncRoom(100)
	if !limited || fullLimited || whole[0].(map[string]any)["type"] != "m.room.create" {
		t.Fatalf("limited %v, full limited %v, full timeline starts with %v", limited, fullLimited, whole[0])
	}

	bob.MustDo("POST", rp("/join"), map[string]any{})
	c.MustDo("PUT", rp("/send/m.room.message/m3"), map[string]any{"msgtype": "m.text", "body": "three"})

	membersAt := func(tok string) map[string]string {
		t.Helper()
		return memberships(t, c.MustDo("GET", rp("/members?at="+url.QueryEscape(tok)), nil))
	}
	for name, tok := range map[string]string{
		"prev_batch of a limited timeline":               short,
		"next_batch":                                     next,
		"prev_batch of a timeline from the create event": full,
	} {
		if got := membersAt(tok); len(got) != 2 || got[c.UserID] != "join" || got[bob.UserID] != "invite" {
			t.Errorf("members at %s: %v, want the creator joined and bob invited", name, got)
		}
	}
	if got := memberships(t, c.MustDo("GET", rp("/members"), nil)); len(got) != 2 || got[bob.UserID] != "join" {
		t.Errorf("members now: %v", got)
	}
	// A token beyond the log's head was never issued: refused, as by
	// /messages, rather than answered with the current members.
	if r := c.Do("GET", rp("/members?at="+url.QueryEscape("t999999999_0")), nil); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Errorf("members at a token beyond the log: %d %s", r.Status, r.Raw)
	}

	// Back from that prev_batch: nothing, so nothing twice; forward from
	// it: the synced timeline, then what came after.
	if r := c.MustDo("GET", rp("/messages?dir=b&from="+url.QueryEscape(full)), nil); len(r.Body["chunk"].([]any)) != 0 {
		t.Fatalf("messages before a timeline from the create event: %s", r.Raw)
	}
	fwd := c.MustDo("GET", rp("/messages?dir=f&limit=100&from="+url.QueryEscape(full)), nil).Body["chunk"].([]any)
	if len(fwd) != len(whole)+2 {
		t.Fatalf("forward from prev_batch: %d events, want %d synced + bob's join + three", len(fwd), len(whole))
	}
	for i, e := range whole {
		if id := e.(map[string]any)["event_id"]; fwd[i].(map[string]any)["event_id"] != id {
			t.Fatalf("forward event %d: %v, synced %v", i, fwd[i].(map[string]any)["event_id"], id)
		}
	}
}

// Request latency is labelled with the status each request was answered
// with: 200 for a success, the error's status for an error.
func TestRequestMetricsStatus(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	reg := prometheus.NewRegistry()
	c := apitest.NewClient(t, env.APIWithMetrics(apitest.DefaultConfig(), reg).URL)
	c.Register("rm_user", "pw")
	c.MustDo("GET", v3("/account/whoami"), nil)
	if r := c.Do("GET", v3("/rooms/!nowhere:localhost/state"), nil); r.Status != 403 && r.Status != 404 {
		t.Fatalf("state of an unknown room: %d", r.Status)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{}
	for _, mf := range mfs {
		if mf.GetName() != "strand_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			codes[l["route"]] = l["code"]
		}
	}
	var whoami, state string
	for route, code := range codes {
		switch {
		case strings.HasSuffix(route, "/account/whoami"):
			whoami = code
		case strings.HasSuffix(route, "/state"):
			state = code
		}
	}
	if whoami != "200" || (state != "403" && state != "404") {
		t.Fatalf("status labels: whoami %q, state %q (all: %v)", whoami, state, codes)
	}
}
