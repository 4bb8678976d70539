package main

import (
	"testing"
	"time"
)

// --outbound-allow (or STRAND_OUTBOUND_ALLOW) takes CIDRs, empty by
// default; the media flags are bounded, and a bad value is an error.
func TestMediaAndOutboundFlags(t *testing.T) {
	c, err := parseServerFlags(t)
	if err != nil {
		t.Fatal(err)
	}
	if allow, err := c.outboundAllow(); err != nil || len(allow) != 0 {
		t.Fatalf("default allow-list %v %v", allow, err)
	}
	if c.PendingMediaMax != 10 || c.PendingMediaTTL != 24*time.Hour || c.PreviewCacheTTL != time.Hour {
		t.Fatalf("defaults: %d %s %s", c.PendingMediaMax, c.PendingMediaTTL, c.PreviewCacheTTL)
	}

	c, err = parseServerFlags(t, "--outbound-allow", "127.0.0.0/8, ::1/128", "--media-pending-max", "3", "--media-pending-expiry", "1h")
	if err != nil {
		t.Fatal(err)
	}
	allow, err := c.outboundAllow()
	if err != nil || len(allow) != 2 || allow[0].String() != "127.0.0.0/8" || allow[1].String() != "::1/128" {
		t.Fatalf("allow-list %v %v", allow, err)
	}
	t.Setenv("STRAND_OUTBOUND_ALLOW", "10.0.0.0/8")
	if c, err = parseServerFlags(t); err != nil {
		t.Fatal(err)
	}
	if allow, _ := c.outboundAllow(); len(allow) != 1 || allow[0].String() != "10.0.0.0/8" {
		t.Fatalf("allow-list from the environment: %v", allow)
	}
	for _, bad := range [][]string{
		{"--outbound-allow", "localhost"}, {"--outbound-allow", "10.0.0.1"}, {"--media-pending-max", "0"},
		{"--media-pending-expiry", "1s"}, {"--preview-cache-ttl", "48h"},
	} {
		if _, err := parseServerFlags(t, bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
