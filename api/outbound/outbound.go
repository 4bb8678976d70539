// Package outbound is the HTTP client for requests Strand makes to URLs
// that users or their clients named: URL previews, push gateways,
// application services. It refuses internal addresses unless allowed.
package outbound

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Outbound requests: the URLs Strand fetches because a user named them
// (URL previews, push gateways). Without care these let any user make the server reach
// what only the server can: its own loopback services, the cloud
// metadata endpoint at 169.254.169.254, the private network behind it.
// So every connection is checked where it is made, on the address
// actually dialled (net.Dialer.Control runs after name resolution, for
// each address tried), not on the name in the URL: a name that resolves
// to a forbidden address, or re-resolves to one between a check and the
// connection (DNS rebinding), or a redirect to one, is refused all the
// same. Proxies from the environment are not used, since a proxy would
// dial on Strand's behalf where no check runs.

// ErrForbiddenAddress is the dialler's refusal.
var ErrForbiddenAddress = errors.New("destination address is not allowed")

// specialPrefixes are address ranges that are not the public internet
// and that netip's predicates (loopback, private, link-local, multicast,
// unspecified) do not already cover: shared address space (carrier-grade
// NAT), IETF protocol assignments, documentation and benchmarking ranges,
// reserved and broadcast addresses; for IPv6, the ranges that embed or
// translate to IPv4 addresses (NAT64, 6to4, Teredo), whose IPv4 part could
// be anything, discard-only, documentation and deprecated site-local
// addresses, and the rest of ::/8 (IPv4-compatible addresses). IPv4-mapped
// IPv6 addresses are unmapped and checked as IPv4.
var specialPrefixes = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24",
		"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
		"::/8", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
		"2002::/16", "3fff::/20", "fec0::/10",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// Allowed reports whether a connection to addr may be made: any
// address in allow may, otherwise only public unicast ones.
func Allowed(addr netip.Addr, allow []netip.Prefix) bool {
	addr = addr.Unmap()
	for _, p := range allow {
		if p.Contains(addr) {
			return true
		}
	}
	if !addr.IsGlobalUnicast() || addr.IsPrivate() || addr.IsLoopback() || addr.IsLinkLocalUnicast() ||
		addr.IsMulticast() || addr.IsUnspecified() {
		return false
	}
	for _, p := range specialPrefixes {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

const (
	// outboundMaxRedirects bounds the redirects one fetch follows; each
	// hop is dialled, and so checked, like the first.
	outboundMaxRedirects = 5
	outboundDialTimeout  = 5 * time.Second
	// outboundHeaderTimeout bounds the wait for a response's headers;
	// the whole fetch is bounded by its context.
	outboundHeaderTimeout = 10 * time.Second
)

// NewClient returns the HTTP client for outbound requests,
// refusing every address Allowed refuses.
func NewClient(allow []netip.Prefix) *http.Client {
	d := &net.Dialer{Timeout: outboundDialTimeout, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
		}
		if !Allowed(ap.Addr(), allow) {
			return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr())
		}
		return nil
	}}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    outboundDialTimeout,
		ResponseHeaderTimeout:  outboundHeaderTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) > outboundMaxRedirects {
			return fmt.Errorf("more than %d redirects", outboundMaxRedirects)
		}
		if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to a %q URL", req.URL.Scheme)
		}
		return nil
	}}
}

// IsForbidden reports whether a fetch failed because it would have
// reached an address that is not allowed.
func IsForbidden(err error) bool { return errors.Is(err, ErrForbiddenAddress) }
