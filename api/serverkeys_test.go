package api_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"strand/api/apitest"
	"strand/eventlog/matrix"
)

// The server's signing key is published, signed by itself, as the
// server-server API's key endpoints define.
func TestServerKeys(t *testing.T) {
	env := apitest.New(t)
	cfg := apitest.DefaultConfig()
	c := apitest.NewClient(t, env.API(cfg).URL)
	r := c.MustDo("GET", "/_matrix/key/v2/server", nil)
	if r.Str("server_name") != "localhost" {
		t.Fatalf("server_name: %s", r.Raw)
	}
	if ts, ok := r.Body["valid_until_ts"].(float64); !ok || ts <= 0 {
		t.Fatalf("valid_until_ts: %s", r.Raw)
	}
	keys, _ := r.Body["verify_keys"].(map[string]any)
	k, _ := keys[string(cfg.SigningKey.ID())].(map[string]any)
	pub, err := base64.RawStdEncoding.DecodeString(k["key"].(string))
	if err != nil || string(pub) != string(cfg.SigningKey.Public()) {
		t.Fatalf("verify_keys: %s", r.Raw)
	}
	if err := matrix.VerifyJSON(r.Raw, "localhost", cfg.SigningKey.ID(), pub); err != nil {
		t.Fatalf("signature: %v", err)
	}
	q := c.MustDo("POST", "/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{"localhost": map[string]any{}, "elsewhere.example": map[string]any{}}})
	if got, _ := q.Body["server_keys"].([]any); len(got) != 1 {
		t.Fatalf("notary query: %s", q.Raw)
	}
	if v := c.MustDo("GET", "/_matrix/federation/v1/version", nil); v.Body["server"].(map[string]any)["name"] != "Strand" {
		t.Fatalf("version: %s", v.Raw)
	}
}

// Unknown paths are 404 M_UNRECOGNIZED and known paths with another
// method 405 M_UNRECOGNIZED, under every prefix.
func TestUnknownEndpointsAndMethods(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	c.Register("prober", "pw")
	for _, p := range []string{"/_matrix/unknown", "/_matrix/client/unknown", "/_matrix/client/v1/unknown", "/_matrix/client/v3/room/unknown",
		"/_matrix/federation/unknown", "/_matrix/federation/v1/unknown", "/_matrix/key/unknown", "/_matrix/key/v2/unknown",
		"/_matrix/media/unknown", "/_matrix/media/v3/unknown"} {
		if r := c.Do("GET", p, nil); r.Status != 404 || r.Errcode() != "M_UNRECOGNIZED" {
			t.Errorf("GET %s: %d %s", p, r.Status, r.Raw)
		}
	}
	for _, m := range [][2]string{{"PUT", "/_matrix/client/v3/login"}, {"PUT", "/_matrix/federation/v1/version"},
		{"PUT", "/_matrix/key/v2/query"}, {"PATCH", "/_matrix/media/v3/upload"}} {
		if r := c.Do(m[0], m[1], nil); r.Status != 405 || r.Errcode() != "M_UNRECOGNIZED" {
			t.Errorf("%s %s: %d %s", m[0], m[1], r.Status, r.Raw)
		}
	}
}

// What clients look for before the API proper: the MSC flags of features
// Strand has, a page at the base URL, and key backup's unstable path.
func TestDiscoveryExtras(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	v := c.MustDo("GET", "/_matrix/client/versions", nil)
	if f, _ := v.Body["unstable_features"].(map[string]any); f["org.matrix.e2e_cross_signing"] != true {
		t.Fatalf("unstable_features: %s", v.Raw)
	}
	if r := c.Do("GET", "/", nil); r.Status != 200 || !strings.Contains(string(r.Raw), "Strand") {
		t.Fatalf("GET /: %d %s", r.Status, r.Raw)
	}
	c.Register("backer", "pw")
	c.MustDo("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}})
	a := c.MustDo("GET", "/_matrix/client/v3/room_keys/version", nil)
	b := c.MustDo("GET", "/_matrix/client/unstable/room_keys/version", nil)
	if a.Str("version") == "" || a.Str("version") != b.Str("version") {
		t.Fatalf("unstable room_keys path: %s vs %s", a.Raw, b.Raw)
	}
}
