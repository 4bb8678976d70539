package main

import (
	"testing"

	"strand/api"
)

// The access token lifetime and the server notices user reach the api's
// configuration, with defaults, and bad values are refused.
func TestAccountFlags(t *testing.T) {
	c, err := parseServerFlags(t)
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenLifetime != api.DefaultAccessTokenLifetime || c.NoticesUser != "_server" {
		t.Fatalf("defaults: %v %q", c.TokenLifetime, c.NoticesUser)
	}
	t.Setenv("STRAND_SERVER_NOTICES_USER", "notices")
	c, err = parseServerFlags(t, "--access-token-lifetime", "90s")
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenLifetime.Seconds() != 90 || c.NoticesUser != "notices" {
		t.Fatalf("set: %v %q", c.TokenLifetime, c.NoticesUser)
	}
	for _, args := range [][]string{{"--access-token-lifetime", "0s"}, {"--server-notices-user", "a:b"}, {"--server-notices-user", ""}} {
		if _, err := parseServerFlags(t, args...); err == nil {
			t.Fatalf("%v accepted", args)
		}
	}
}
