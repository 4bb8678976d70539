package main

import (
	"flag"
	"io"
	"os"
	"testing"

	"strand/api"
)

func parseServerFlags(t *testing.T, args ...string) (*config, error) {
	t.Helper()
	var c config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.registerCommon(fs)
	c.registerServer(fs)
	c.registerOutbound(fs)
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	return &c, c.validateServer()
}

// Rate limits are on by default, each limit set by its flag or its
// environment variable, off with --rate-limits off, and a malformed value
// is an error rather than a silent default.
func TestRateLimitFlags(t *testing.T) {
	// TestMain turns limits off for the package's servers; this test is
	// about the default.
	prev, had := os.LookupEnv("STRAND_RATE_LIMITS")
	os.Unsetenv("STRAND_RATE_LIMITS")
	t.Cleanup(func() {
		if had {
			os.Setenv("STRAND_RATE_LIMITS", prev)
		}
	})
	t.Setenv("STRAND_LIMIT_JOIN", "1.5/7")

	c, err := parseServerFlags(t, "--limit-message", "5/10", "--trusted-proxies", "10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.rateLimits()
	if err != nil || l == nil {
		t.Fatalf("limits: %v %v", l, err)
	}
	def := api.DefaultRateLimits()
	if l.Message != (api.Limit{Rate: 5, Burst: 10}) || l.Join != (api.Limit{Rate: 1.5, Burst: 7}) || l.Upload != def.Upload {
		t.Fatalf("limits %+v", l)
	}
	if len(l.TrustedProxies) != 1 || l.TrustedProxies[0].String() != "10.0.0.0/8" {
		t.Fatalf("trusted proxies %v", l.TrustedProxies)
	}

	c, err = parseServerFlags(t, "--rate-limits", "off")
	if err != nil {
		t.Fatal(err)
	}
	if l, err := c.rateLimits(); l != nil || err != nil {
		t.Fatalf("--rate-limits off: %v %v", l, err)
	}
	for _, bad := range [][]string{
		{"--rate-limits", "maybe"}, {"--limit-message", "5"}, {"--limit-message", "-1/10"}, {"--limit-message", "1/0"},
		{"--limit-register", "x/y"}, {"--trusted-proxies", "not-a-cidr"}, {"--login-failures", "0"},
	} {
		if _, err := parseServerFlags(t, bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// --default-room-version (or STRAND_DEFAULT_ROOM_VERSION) picks the version
// of rooms created without one; 10 by default, and only versions Strand
// implements.
func TestDefaultRoomVersionFlag(t *testing.T) {
	c, err := parseServerFlags(t)
	if err != nil || c.DefaultRoomVer != "10" {
		t.Fatalf("default: %q %v", c.DefaultRoomVer, err)
	}
	if c, err = parseServerFlags(t, "--default-room-version", "12"); err != nil || c.DefaultRoomVer != "12" {
		t.Fatalf("flag: %v %v", c, err)
	}
	t.Setenv("STRAND_DEFAULT_ROOM_VERSION", "1")
	if c, err = parseServerFlags(t); err != nil || c.DefaultRoomVer != "1" {
		t.Fatalf("env: %v %v", c, err)
	}
	for _, bad := range []string{"13", "", "v10"} {
		if _, err := parseServerFlags(t, "--default-room-version", bad); err == nil {
			t.Errorf("--default-room-version %q accepted", bad)
		}
	}
}
