package outbound

import (
	"net/netip"
	"testing"
)

// The addresses outbound requests may reach: public unicast ones, and
// whatever the allow-list names; never loopback, private, link-local
// (the cloud metadata address), shared, reserved, multicast or
// unspecified ones, nor IPv6 forms that embed or map to IPv4 ones.
func TestPreviewOutboundAddresses(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "1.1.1.1": true, "2606:4700:4700::1111": true, "10.1.2.3": true,
		"127.0.0.1": false, "127.255.0.9": false, "::1": false, "::ffff:127.0.0.1": false,
		"10.2.0.1": false, "172.16.0.1": false, "192.168.1.1": false, "fc00::1": false, "fd12::1": false,
		"169.254.169.254": false, "fe80::1": false, "fd00:ec2::254": false,
		"100.64.0.1": false, "0.0.0.0": false, "0.1.2.3": false, "::": false, "255.255.255.255": false,
		"224.0.0.1": false, "ff02::1": false, "240.0.0.1": false, "192.0.2.1": false, "198.18.0.1": false,
		"64:ff9b::7f00:1": false, "2002:7f00:1::": false, "2001:0:4136:e378::": false, "::127.0.0.1": false,
		"2001:db8::1": false, "fec0::1": false,
	} {
		if got := Allowed(netip.MustParseAddr(addr), allow); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", addr, got, want)
		}
	}
	if Allowed(netip.MustParseAddr("127.0.0.1"), nil) {
		t.Error("loopback allowed without an allow-list")
	}
	if !Allowed(netip.MustParseAddr("::ffff:127.0.0.1"), []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}) {
		t.Error("an IPv4-mapped address is not checked as IPv4 against the allow-list")
	}
}
