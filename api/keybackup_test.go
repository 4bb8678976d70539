package api_test

import (
	"net/url"
	"testing"

	"strand/api/apitest"
)

func backupKey(index, forwarded int, verified bool, data string) map[string]any {
	return map[string]any{"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
		"session_data": map[string]any{"ciphertext": data}}
}

// Key backup: versions are numbered and never reused, only the current
// version takes keys, a stored key is replaced only by a better one, and
// everything replays.
func TestKeyBackup(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	c.Register("vera", "pw")
	const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
	if r := c.Do("GET", "/_matrix/client/v3/room_keys/version", nil); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("no backup yet: %d %s", r.Status, r.Raw)
	}
	v1 := c.MustDo("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk1"}}).Str("version")
	v2 := c.MustDo("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk2"}}).Str("version")
	if v1 != "1" || v2 != "2" {
		t.Fatalf("versions %q %q", v1, v2)
	}
	cur := c.MustDo("GET", "/_matrix/client/v3/room_keys/version", nil)
	if cur.Str("version") != "2" || cur.Body["count"] != float64(0) || cur.Body["auth_data"].(map[string]any)["public_key"] != "pk2" {
		t.Fatalf("current version: %s", cur.Raw)
	}

	room := "!room:localhost"
	keysPath := func(rest, version string) string {
		return "/_matrix/client/v3/room_keys/keys" + rest + "?version=" + version
	}
	// Writing to an old version is refused with the current one named.
	if r := c.Do("PUT", keysPath("/"+url.PathEscape(room)+"/s1", "1"), backupKey(0, 0, false, "x")); r.Status != 403 ||
		r.Errcode() != "M_WRONG_ROOM_KEYS_VERSION" || r.Body["current_version"] != "2" {
		t.Fatalf("write to an old version: %d %s", r.Status, r.Raw)
	}
	put := c.MustDo("PUT", keysPath("", "2"), map[string]any{"rooms": map[string]any{room: map[string]any{"sessions": map[string]any{
		"s1": backupKey(5, 1, false, "first"), "s2": backupKey(0, 0, true, "verified")}}}})
	if put.Body["count"] != float64(2) {
		t.Fatalf("put: %s", put.Raw)
	}
	etag := put.Str("etag")
	// A worse key does not replace s1; a better one does; nothing beats
	// the verified s2 unless verified too.
	c.MustDo("PUT", keysPath("/"+url.PathEscape(room)+"/s1", "2"), backupKey(7, 0, false, "worse"))
	c.MustDo("PUT", keysPath("/"+url.PathEscape(room), "2"), map[string]any{"sessions": map[string]any{
		"s1": backupKey(2, 3, false, "better"), "s2": backupKey(0, 0, false, "unverified")}})
	s1 := c.MustDo("GET", keysPath("/"+url.PathEscape(room)+"/s1", "2"), nil)
	if s1.Body["session_data"].(map[string]any)["ciphertext"] != "better" || s1.Body["first_message_index"] != float64(2) {
		t.Fatalf("s1: %s", s1.Raw)
	}
	all := c.MustDo("GET", keysPath("", "2"), nil)
	s2 := all.Body["rooms"].(map[string]any)[room].(map[string]any)["sessions"].(map[string]any)["s2"].(map[string]any)
	if s2["session_data"].(map[string]any)["ciphertext"] != "verified" {
		t.Fatalf("s2 replaced by an unverified key: %s", all.Raw)
	}
	if cur := c.MustDo("GET", "/_matrix/client/v3/room_keys/version/2", nil); cur.Str("etag") == etag || cur.Body["count"] != float64(2) {
		t.Fatalf("etag did not change with the keys: %s (was %s)", cur.Raw, etag)
	}

	// Deleting: a session, then the version (its number is not reused).
	if d := c.MustDo("DELETE", keysPath("/"+url.PathEscape(room)+"/s1", "2"), nil); d.Body["count"] != float64(1) {
		t.Fatalf("delete session: %s", d.Raw)
	}
	if r := c.Do("GET", keysPath("/"+url.PathEscape(room)+"/s1", "2"), nil); r.Status != 404 {
		t.Fatalf("deleted session: %d", r.Status)
	}
	c.MustDo("PUT", "/_matrix/client/v3/room_keys/version/2", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk2", "signatures": map[string]any{}}})
	if r := c.Do("PUT", "/_matrix/client/v3/room_keys/version/2", map[string]any{"algorithm": "other", "auth_data": map[string]any{}}); r.Status != 400 {
		t.Fatalf("algorithm change: %d %s", r.Status, r.Raw)
	}
	c.MustDo("DELETE", "/_matrix/client/v3/room_keys/version/2", nil)
	if cur := c.MustDo("GET", "/_matrix/client/v3/room_keys/version", nil); cur.Str("version") != "1" {
		t.Fatalf("current after deleting 2: %s", cur.Raw)
	}
	if v := c.MustDo("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{}}).Str("version"); v != "3" {
		t.Fatalf("new version after a deletion: %s", v)
	}

	for _, tc := range []struct {
		method, path string
		body         any
		status       int
	}{
		{"GET", "/_matrix/client/v3/room_keys/version/99", nil, 404},
		{"GET", "/_matrix/client/v3/room_keys/version/abc", nil, 404},
		{"POST", "/_matrix/client/v3/room_keys/version", map[string]any{"auth_data": map[string]any{}}, 400},
		{"POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": "no"}, 400},
		{"PUT", "/_matrix/client/v3/room_keys/keys/" + url.PathEscape(room) + "/s9", backupKey(0, 0, false, "x"), 400}, // no version
		{"PUT", keysPath("/"+url.PathEscape(room)+"/s9", "3"), map[string]any{"first_message_index": 0}, 400},
		{"PUT", keysPath("/not-a-room/s9", "3"), backupKey(0, 0, false, "x"), 400},
		{"GET", keysPath("", "99"), nil, 404},
	} {
		if r := c.Do(tc.method, tc.path, tc.body); r.Status != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, r.Status, r.Raw, tc.status)
		}
	}

	projectionReplays(t, env, 2)
}
