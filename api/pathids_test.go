package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"strand/api/apitest"
)

// awkward are the characters a path handles worst: a slash (splits a
// segment), dot segments (cleaned away), a percent sign (decoded twice),
// "?" and "#" (end the path), and non-ASCII (escaped as UTF-8 bytes).
var awkward = []string{"a/b", "..", ".", "a/../b", "50%", "%2F", "what?", "#hash", "é中"}

// reached fails unless a request got to its handler: a route that did
// not match the ID answers 404 M_UNRECOGNIZED, 405 or a 301 to a cleaned
// path.
func reached(t *testing.T, what string, r apitest.Response) {
	t.Helper()
	if r.Errcode() == "M_UNRECOGNIZED" || r.Status == http.StatusMethodNotAllowed || r.Status == http.StatusMovedPermanently || r.Status >= 500 {
		t.Errorf("%s: did not reach its handler: %d %s", what, r.Status, r.Raw)
	}
}

func mustOK(t *testing.T, what string, r apitest.Response) apitest.Response {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Errorf("%s: %d %s", what, r.Status, r.Raw)
	}
	return r
}

// Every kind of ID or key a path carries works in every endpoint that
// takes it, whatever characters the spec allows in it: routes match the
// encoded path and each variable is decoded once.
func TestIDsWithPathCharacters(t *testing.T) {
	_, c := newServer(t)
	c.Register("pathowner", "pw")
	roomID := createRoom(t, c, map[string]any{"preset": "public_chat"})
	rp := func(p string) string { return v3("/rooms/" + esc(roomID) + p) }

	t.Run("user IDs", func(t *testing.T) {
		// Registrable localparts may hold "/" and dots (and "+", "=").
		for _, lp := range []string{"slash/name", "..", "dots/../up", "./x", "a+b=c"} {
			u := apitest.NewClient(t, c.Base)
			u.Register(lp, "pw")
			if u.UserID != "@"+lp+":localhost" {
				t.Fatalf("registered %q as %s", lp, u.UserID)
			}
			me := esc(u.UserID)
			if r := mustOK(t, "login "+lp, u.As("").Do("POST", v3("/login"), map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": "pw"})); r.Str("user_id") != u.UserID {
				t.Errorf("login as %s: %s", lp, r.Raw)
			}
			mustOK(t, "displayname "+lp, u.Do("PUT", v3("/profile/"+me+"/displayname"), map[string]any{"displayname": "D " + lp}))
			if r := mustOK(t, "profile "+lp, u.As("").Do("GET", v3("/profile/"+me), nil)); r.Str("displayname") != "D "+lp {
				t.Errorf("profile of %s: %s", lp, r.Raw)
			}
			mustOK(t, "displayname "+lp, u.Do("GET", v3("/profile/"+me+"/displayname"), nil))
			mustOK(t, "avatar "+lp, u.Do("PUT", v3("/profile/"+me+"/avatar_url"), map[string]any{"avatar_url": "mxc://localhost/x"}))
			fid := mustOK(t, "filter "+lp, u.Do("POST", v3("/user/"+me+"/filter"), map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 3}}})).Str("filter_id")
			mustOK(t, "get filter "+lp, u.Do("GET", v3("/user/"+me+"/filter/"+esc(fid)), nil))
			mustOK(t, "account data "+lp, u.Do("PUT", v3("/user/"+me+"/account_data/org.example.x"), map[string]any{"k": 1}))
			mustOK(t, "get account data "+lp, u.Do("GET", v3("/user/"+me+"/account_data/org.example.x"), nil))
			mustOK(t, "presence "+lp, u.Do("PUT", v3("/presence/"+me+"/status"), map[string]any{"presence": "online"}))
			mustOK(t, "get presence "+lp, u.Do("GET", v3("/presence/"+me+"/status"), nil))
			mustOK(t, "join "+lp, u.Do("POST", rp("/join"), map[string]any{}))
			mustOK(t, "typing "+lp, u.Do("PUT", rp("/typing/"+me), map[string]any{"typing": true, "timeout": 1000}))
			mustOK(t, "tag "+lp, u.Do("PUT", v3("/user/"+me+"/rooms/"+esc(roomID)+"/tags/u.x"), map[string]any{}))
			mustOK(t, "tags "+lp, u.Do("GET", v3("/user/"+me+"/rooms/"+esc(roomID)+"/tags"), nil))
			mustOK(t, "room account data "+lp, u.Do("PUT", v3("/user/"+me+"/rooms/"+esc(roomID)+"/account_data/org.example.x"), map[string]any{"k": 1}))
			mustOK(t, "get room account data "+lp, u.Do("GET", v3("/user/"+me+"/rooms/"+esc(roomID)+"/account_data/org.example.x"), nil))
			if r := mustOK(t, "member state "+lp, c.Do("GET", rp("/state/m.room.member/"+me), nil)); r.Str("membership") != "join" {
				t.Errorf("member state of %s: %s", lp, r.Raw)
			}
			mustOK(t, "kick "+lp, c.Do("POST", rp("/kick"), map[string]any{"user_id": u.UserID}))
		}
		// IDs that cannot be registered still reach the handlers (and are
		// refused there, or not found).
		for _, v := range awkward {
			reached(t, "profile "+v, c.Do("GET", v3("/profile/"+esc("@"+v+":localhost")), nil))
			reached(t, "filter of "+v, c.Do("GET", v3("/user/"+esc("@"+v+":localhost")+"/filter/1"), nil))
		}
	})

	t.Run("room aliases", func(t *testing.T) {
		for _, v := range append(awkward[:len(awkward):len(awkward)], "a/ü") {
			alias := "#" + v + ":localhost"
			r := c.Do("POST", v3("/createRoom"), map[string]any{"room_alias_name": v})
			if r.Str("room_alias") != alias {
				t.Errorf("createRoom with alias %q: %d %s", v, r.Status, r.Raw)
				continue
			}
			id := r.Str("room_id")
			if g := mustOK(t, "resolve "+v, c.As("").Do("GET", v3("/directory/room/"+esc(alias)), nil)); g.Str("room_id") != id {
				t.Errorf("alias %s resolves to %s", alias, g.Raw)
			}
			if j := mustOK(t, "join by "+v, c.Do("POST", v3("/join/"+esc(alias)), map[string]any{})); j.Str("room_id") != id {
				t.Errorf("join by %s: %s", alias, j.Raw)
			}
			second := "#" + v + "-2:localhost"
			mustOK(t, "put alias "+v, c.Do("PUT", v3("/directory/room/"+esc(second)), map[string]any{"room_id": id}))
			if as := mustOK(t, "aliases "+v, c.Do("GET", v3("/rooms/"+esc(id)+"/aliases"), nil)); !slices.Contains(asList(as.Body["aliases"]), any(second)) {
				t.Errorf("aliases of %s: %s", id, as.Raw)
			}
			mustOK(t, "delete alias "+v, c.Do("DELETE", v3("/directory/room/"+esc(second)), nil))
			if g := c.Do("GET", v3("/directory/room/"+esc(second)), nil); g.Status != 404 || g.Errcode() != "M_NOT_FOUND" {
				t.Errorf("deleted alias %s: %d %s", second, g.Status, g.Raw)
			}
		}
	})

	t.Run("room and event IDs", func(t *testing.T) {
		// Strand makes both itself, so only unknown ones can hold these
		// characters: they must reach the handler and be refused there.
		for _, v := range awkward {
			room, ev := esc("!"+v+":localhost"), esc("$"+v)
			for _, p := range []string{"/state", "/members", "/messages", "/aliases", "/event/" + ev, "/context/" + ev} {
				reached(t, "GET rooms/"+v+p, c.Do("GET", v3("/rooms/"+room+p), nil))
			}
			reached(t, "join "+v, c.Do("POST", v3("/join/"+room), map[string]any{}))
			reached(t, "directory list "+v, c.Do("GET", v3("/directory/list/room/"+room), nil))
			reached(t, "event "+v, c.Do("GET", rp("/event/"+ev), nil))
			reached(t, "context "+v, c.Do("GET", rp("/context/"+ev), nil))
			reached(t, "redact "+v, c.Do("PUT", rp("/redact/"+ev+"/t"), map[string]any{}))
			reached(t, "receipt "+v, c.Do("POST", rp("/receipt/m.read/"+ev), map[string]any{}))
			reached(t, "relations "+v, c.Do("GET", "/_matrix/client/v1/rooms/"+esc(roomID)+"/relations/"+ev, nil))
		}
	})

	t.Run("event types, state keys and transaction IDs", func(t *testing.T) {
		for _, v := range awkward {
			typ := "org.example." + v
			put := mustOK(t, "state "+v, c.Do("PUT", rp("/state/"+esc(typ)+"/"+esc(v)), map[string]any{"v": v}))
			if g := mustOK(t, "get state "+v, c.Do("GET", rp("/state/"+esc(typ)+"/"+esc(v)), nil)); g.Str("v") != v {
				t.Errorf("state %s/%s reads back %s", typ, v, g.Raw)
			}
			if g := mustOK(t, "get state event "+v, c.Do("GET", rp("/state/"+esc(typ)+"/"+esc(v))+"?format=event", nil)); g.Str("event_id") != put.Str("event_id") || g.Str("state_key") != v || g.Str("type") != typ {
				t.Errorf("state event %s/%s: %s", typ, v, g.Raw)
			}
			sent := mustOK(t, "send "+v, c.Do("PUT", rp("/send/"+esc(typ)+"/"+esc(v)), map[string]any{"body": v})).Str("event_id")
			if again := mustOK(t, "resend "+v, c.Do("PUT", rp("/send/"+esc(typ)+"/"+esc(v)), map[string]any{"body": v})).Str("event_id"); again != sent {
				t.Errorf("txn %q: retry gave %s, first %s", v, again, sent)
			}
			if g := mustOK(t, "event "+v, c.Do("GET", rp("/event/"+esc(sent)), nil)); g.Str("type") != typ {
				t.Errorf("event of type %s: %s", typ, g.Raw)
			}
			mustOK(t, "post send "+v, c.Do("POST", rp("/send/"+esc(typ)), map[string]any{"body": v}))
			mustOK(t, "redact with txn "+v, c.Do("PUT", rp("/redact/"+esc(sent)+"/"+esc(v)), map[string]any{}))
			mustOK(t, "to-device "+v, c.Do("PUT", v3("/sendToDevice/"+esc(typ)+"/"+esc(v)), map[string]any{"messages": map[string]any{}}))
			mustOK(t, "account data type "+v, c.Do("PUT", v3("/user/"+esc(c.UserID)+"/account_data/"+esc(typ)), map[string]any{"v": v}))
			if g := mustOK(t, "get account data type "+v, c.Do("GET", v3("/user/"+esc(c.UserID)+"/account_data/"+esc(typ)), nil)); g.Str("v") != v {
				t.Errorf("account data %s: %s", typ, g.Raw)
			}
		}
	})

	t.Run("push rule IDs and key backup sessions", func(t *testing.T) {
		version := mustOK(t, "backup version", c.Do("POST", v3("/room_keys/version"), map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
			"auth_data": map[string]any{"public_key": "pk"}})).Str("version")
		for _, v := range awkward {
			rule := v3("/pushrules/global/override/" + esc("r"+v))
			if strings.ContainsAny(v, `/\`) {
				// The spec forbids slashes and backslashes in rule IDs:
				// the ID reaches the handler whole, and is refused.
				if r := c.Do("PUT", rule, map[string]any{"actions": []any{"notify"}, "conditions": []any{}}); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
					t.Errorf("push rule %q: %d %s", v, r.Status, r.Raw)
				}
			} else {
				mustOK(t, "push rule "+v, c.Do("PUT", rule, map[string]any{"actions": []any{"notify"}, "conditions": []any{}}))
				mustOK(t, "get push rule "+v, c.Do("GET", rule, nil))
				mustOK(t, "push rule enabled "+v, c.Do("PUT", rule+"/enabled", map[string]any{"enabled": false}))
				mustOK(t, "delete push rule "+v, c.Do("DELETE", rule, nil))
			}
			reached(t, "push rule "+v, c.Do("GET", v3("/pushrules/global/override/"+esc(v)), nil))

			keys := v3("/room_keys/keys/" + esc("!"+v+":localhost") + "/" + esc(v) + "?version=" + version)
			mustOK(t, "backup key "+v, c.Do("PUT", keys, backupKey(0, 0, false, v)))
			if g := mustOK(t, "get backup key "+v, c.Do("GET", keys, nil)); g.Body["session_data"].(map[string]any)["ciphertext"] != v {
				t.Errorf("backup key %q: %s", v, g.Raw)
			}
			mustOK(t, "delete backup key "+v, c.Do("DELETE", keys, nil))
		}
	})

	t.Run("device IDs", func(t *testing.T) {
		for _, v := range awkward {
			login := mustOK(t, "login with device "+v, c.As("").Do("POST", v3("/login"), map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.user", "user": c.UserID}, "password": "pw", "device_id": v}))
			if login.Str("device_id") != v {
				t.Errorf("device %q: %s", v, login.Raw)
				continue
			}
			d := esc(v)
			mustOK(t, "rename device "+v, c.Do("PUT", v3("/devices/"+d), map[string]any{"display_name": "dev " + v}))
			if g := mustOK(t, "get device "+v, c.Do("GET", v3("/devices/"+d), nil)); g.Str("device_id") != v || g.Str("display_name") != "dev "+v {
				t.Errorf("device %q: %s", v, g.Raw)
			}
			mustOK(t, "delete device "+v, c.Do("DELETE", v3("/devices/"+d), map[string]any{"auth": map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.user", "user": c.UserID}, "password": "pw"}}))
			if g := c.Do("GET", v3("/devices/"+d), nil); g.Status != 404 {
				t.Errorf("deleted device %q: %d %s", v, g.Status, g.Raw)
			}
		}
	})

	t.Run("tags, filter IDs and media IDs", func(t *testing.T) {
		me, room := esc(c.UserID), esc(roomID)
		for _, v := range awkward {
			tag := "u." + v
			mustOK(t, "tag "+v, c.Do("PUT", v3("/user/"+me+"/rooms/"+room+"/tags/"+esc(tag)), map[string]any{"order": 0.1}))
			tags := mustOK(t, "tags "+v, c.Do("GET", v3("/user/"+me+"/rooms/"+room+"/tags"), nil)).Body["tags"].(map[string]any)
			if tags[tag] == nil {
				t.Errorf("tag %q missing: %v", tag, tags)
			}
			mustOK(t, "delete tag "+v, c.Do("DELETE", v3("/user/"+me+"/rooms/"+room+"/tags/"+esc(tag)), nil))
			if tags := mustOK(t, "tags "+v, c.Do("GET", v3("/user/"+me+"/rooms/"+room+"/tags"), nil)).Body["tags"].(map[string]any); tags[tag] != nil {
				t.Errorf("deleted tag %q still there", tag)
			}
			reached(t, "filter "+v, c.Do("GET", v3("/user/"+me+"/filter/"+esc(v)), nil))
			for _, p := range []string{"/_matrix/media/v3/download/localhost/", "/_matrix/media/v3/thumbnail/localhost/", "/_matrix/client/v1/media/download/localhost/"} {
				reached(t, p+v, c.Do("GET", p+esc(v)+"?width=8&height=8", nil))
			}
		}
		res, body := rawRequest(t, "POST", c.Base+"/_matrix/media/v3/upload", c.Token, "text/plain", []byte("hello"))
		if res.StatusCode != 200 {
			t.Fatalf("upload: %d %s", res.StatusCode, body)
		}
		mxc := string(body)
		mediaID := mxc[strings.LastIndex(mxc, "/")+1 : strings.LastIndex(mxc, `"`)]
		for _, v := range awkward {
			res, got := rawRequest(t, "GET", c.Base+"/_matrix/media/v3/download/localhost/"+esc(mediaID)+"/"+esc(v), "", "", nil)
			if res.StatusCode != 200 || string(got) != "hello" {
				t.Errorf("download as file name %q: %d %s", v, res.StatusCode, got)
			}
		}
	})
}
