package api_test

import (
	"testing"

	"strand/api/apitest"
)

// Unknown paths under the authenticated media namespace want a token
// first (Complement's TestContentCSAPIMediaV1 pastes a whole mxc:// URI
// into a download path and expects 401); with one they are unknown, and
// another method on a known path is still 405.
func TestMediaV1NamespaceNeedsToken(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	c.Register("uma", "pw")
	anon := apitest.NewClient(t, c.Base)
	for _, path := range []string{
		"/_matrix/client/v1/media/download/localhost/mxc://localhost/abc",
		"/_matrix/client/v1/media/no_such_endpoint",
	} {
		if r := anon.Do("GET", path, nil); r.Status != 401 || r.Errcode() != "M_MISSING_TOKEN" {
			t.Errorf("GET %s without a token: %d %s", path, r.Status, r.Raw)
		}
		if r := c.Do("GET", path, nil); r.Status != 404 || r.Errcode() != "M_UNRECOGNIZED" {
			t.Errorf("GET %s: %d %s", path, r.Status, r.Raw)
		}
	}
	if r := c.Do("POST", "/_matrix/client/v1/media/download/localhost/abc", nil); r.Status != 405 {
		t.Errorf("POST on a download path: %d %s", r.Status, r.Raw)
	}
}
