package api

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"strand/eventlog/matrix"
)

// Rate limits answer a client that asks too much with 429 M_LIMIT_EXCEEDED
// and how long to wait (retry_after_ms, and the Retry-After header). The
// buckets live in each api process: with several api processes behind a
// proxy that spreads requests, a client may get up to that many times the
// rate (docs/ARCHITECTURE.md). Server admins are exempt.

// Limit is a token bucket: Rate requests a second on average, Burst at
// once.
type Limit struct {
	Rate  float64
	Burst int
}

func (l Limit) String() string {
	return strconv.FormatFloat(l.Rate, 'f', -1, 64) + "/" + strconv.Itoa(l.Burst)
}

// ParseLimit reads "RATE/BURST", RATE being requests per second (a
// fraction for fewer than one a second).
func ParseLimit(s string) (Limit, error) {
	r, b, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Limit{}, fmt.Errorf("limit %q: want RATE/BURST, e.g. 0.5/10", s)
	}
	rt, err := strconv.ParseFloat(r, 64)
	if err != nil || rt <= 0 || math.IsInf(rt, 0) || math.IsNaN(rt) {
		return Limit{}, fmt.Errorf("limit %q: the rate must be a positive number of requests a second", s)
	}
	burst, err := strconv.Atoi(b)
	if err != nil || burst < 1 {
		return Limit{}, fmt.Errorf("limit %q: the burst must be a positive integer", s)
	}
	return Limit{Rate: rt, Burst: burst}, nil
}

// RateLimits are the limits an api process applies. A nil *RateLimits in
// Config turns them all off.
type RateLimits struct {
	// LoginAddress and LoginAccount bound login attempts per client
	// address and per account name, checked before the password hash
	// is computed (it costs a core a quarter of a second).
	LoginAddress, LoginAccount Limit
	// LoginFailures consecutive failed logins for an account (ten times
	// as many for an address, which many users may share) start a
	// lock-out of one second that doubles with each further failure, up
	// to LoginLockoutMax. A successful login ends it.
	LoginFailures   int
	LoginLockoutMax time.Duration
	// Register bounds account registrations per client address.
	Register Limit
	// Message bounds room events (messages, state, redactions) per user.
	Message Limit
	// CreateRoom and Join bound room creation and joins per user.
	CreateRoom, Join Limit
	// Upload bounds media uploads per user.
	Upload Limit
	// Preview bounds the URL previews per user that are not in the cache
	// (each is an outbound fetch of a page and its image).
	Preview Limit
	// Request bounds every authenticated request per access token.
	Request Limit
	// TrustedProxies are the peers whose X-Forwarded-For names the
	// client address (the nginx of deploy/ sets it).
	TrustedProxies []netip.Prefix
}

// DefaultRateLimits are limits a person using a client never meets, at
// the scale of Synapse's defaults but looser where those would stop a
// busy human (Synapse lets a user send one message every 5 s after a
// burst of 10).
func DefaultRateLimits() RateLimits {
	return RateLimits{
		LoginAddress:    Limit{Rate: 0.5, Burst: 20},
		LoginAccount:    Limit{Rate: 0.2, Burst: 10},
		LoginFailures:   5,
		LoginLockoutMax: 15 * time.Minute,
		Register:        Limit{Rate: 0.2, Burst: 10},
		Message:         Limit{Rate: 2, Burst: 50},
		CreateRoom:      Limit{Rate: 0.1, Burst: 20},
		Join:            Limit{Rate: 0.5, Burst: 20},
		Upload:          Limit{Rate: 2, Burst: 30},
		Preview:         Limit{Rate: 1, Burst: 30},
		Request:         Limit{Rate: 50, Burst: 300},
		TrustedProxies:  []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
	}
}

// limitKind names one of the limits.
type limitKind int

const (
	limitLoginAddress limitKind = iota
	limitLoginAccount
	limitRegister
	limitMessage
	limitCreateRoom
	limitJoin
	limitUpload
	limitPreview
	limitRequest
	numLimits
)

// limitWhat says in an error what the client did too often.
var limitWhat = [numLimits]string{
	"login attempts from this address", "login attempts for this account", "registrations from this address",
	"room events", "rooms created", "joins", "uploads", "URL previews", "requests",
}

func (c RateLimits) limit(k limitKind) Limit {
	return [numLimits]Limit{c.LoginAddress, c.LoginAccount, c.Register, c.Message, c.CreateRoom, c.Join, c.Upload, c.Preview, c.Request}[k]
}

// limiters holds the buckets of every limit of a process.
type limiters struct {
	cfg      RateLimits
	buckets  [numLimits]*buckets
	failures *lockouts
}

func newLimiters(cfg RateLimits) *limiters {
	l := &limiters{cfg: cfg, failures: newLockouts(cfg.LoginFailures, cfg.LoginLockoutMax)}
	for k := range numLimits {
		l.buckets[k] = newBuckets(cfg.limit(k))
	}
	return l
}

// limitError is the spec's answer to a client over a limit.
func limitError(wait time.Duration, what string) error {
	ms := wait.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return matrix.LimitExceeded(ms, "too many %s; retry in %d ms", what, ms)
}

// buckets is a token bucket per key (a user, an address, a token). Idle
// buckets are dropped once they would be full again, so the map holds
// only keys active in the last few refill periods.
type buckets struct {
	limit Limit
	idle  time.Duration // after this long unused a bucket is full again

	mu        sync.Mutex
	m         map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

func newBuckets(l Limit) *buckets {
	idle := time.Duration(float64(l.Burst)/l.Rate*float64(time.Second)) + time.Minute
	return &buckets{limit: l, idle: idle, m: map[string]*bucket{}}
}

// take spends one token of key's bucket, or says how long until one is
// there (spending nothing).
func (b *buckets) take(key string, now time.Time) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(now)
	bk := b.m[key]
	if bk == nil {
		bk = &bucket{lim: rate.NewLimiter(rate.Limit(b.limit.Rate), b.limit.Burst)}
		b.m[key] = bk
	}
	bk.used = now
	res := bk.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (b *buckets) sweep(now time.Time) {
	if now.Sub(b.lastSweep) < time.Minute {
		return
	}
	b.lastSweep = now
	for k, bk := range b.m {
		if now.Sub(bk.used) > b.idle {
			delete(b.m, k)
		}
	}
}

// lockouts counts consecutive failures per key and, past a threshold,
// locks the key out for a time that doubles with each further failure.
type lockouts struct {
	after int
	max   time.Duration

	mu        sync.Mutex
	m         map[string]*lockout
	lastSweep time.Time
}

type lockout struct {
	fails int
	until time.Time
}

func newLockouts(after int, max time.Duration) *lockouts {
	return &lockouts{after: after, max: max, m: map[string]*lockout{}}
}

// locked says how long key is still locked out.
func (l *lockouts) locked(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lo := l.m[key]; lo != nil && now.Before(lo.until) {
		return lo.until.Sub(now)
	}
	return 0
}

// fail records a failure of key, with threshold the number of failures
// allowed before the lock-out starts.
func (l *lockouts) fail(key string, threshold int, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	lo := l.m[key]
	if lo == nil {
		lo = &lockout{}
		l.m[key] = lo
	}
	lo.fails++
	if over := lo.fails - threshold; over > 0 {
		d := l.max
		if over <= 30 {
			d = min(time.Second<<(over-1), l.max)
		}
		lo.until = now.Add(d)
	}
}

// succeed forgets key's failures.
func (l *lockouts) succeed(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, key)
}

func (l *lockouts) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, lo := range l.m {
		// A key is forgotten once its lock-out has run out and it has been
		// quiet as long again as the longest lock-out.
		if now.Sub(lo.until) > l.max {
			delete(l.m, k)
		}
	}
}

// clientAddress is the address a request came from: the peer, or the
// last X-Forwarded-For entry when the peer is a trusted proxy.
func clientAddress(r *http.Request, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	fwd := r.Header.Values("X-Forwarded-For")
	if len(fwd) == 0 {
		return peer.String()
	}
	for _, p := range trusted {
		if p.Contains(peer) {
			parts := strings.Split(fwd[len(fwd)-1], ",")
			if a, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
				return a.Unmap().String()
			}
			break
		}
	}
	return peer.String()
}

// The checks the handlers make. Each is a no-op with limits off.

// limitUser spends one token of limit k for an authenticated user;
// server admins are exempt.
func (s *Server) limitUser(r *http.Request, k limitKind) error {
	if s.limits == nil {
		return nil
	}
	ss := session(r)
	if ss.Admin || appserviceExempt(r, ss) {
		return nil
	}
	key := ss.UserID
	if k == limitRequest {
		key += "|" + ss.DeviceID // per access token: one per device
	}
	if ok, wait := s.limits.buckets[k].take(key, time.Now()); !ok {
		return limitError(wait, limitWhat[k])
	}
	return nil
}

// limitAddress spends one token of limit k for the request's client
// address.
func (s *Server) limitAddress(r *http.Request, k limitKind) error {
	if s.limits == nil {
		return nil
	}
	if ok, wait := s.limits.buckets[k].take(clientAddress(r, s.limits.cfg.TrustedProxies), time.Now()); !ok {
		return limitError(wait, limitWhat[k])
	}
	return nil
}

// limitLogin checks a login attempt for account (a user ID, which need
// not exist) before its password is checked: the address's and the
// account's rates, and a lock-out after repeated failures of either.
func (s *Server) limitLogin(r *http.Request, account string) error {
	if s.limits == nil {
		return nil
	}
	now := time.Now()
	addr := clientAddress(r, s.limits.cfg.TrustedProxies)
	for _, k := range []string{"acct:" + account, "addr:" + addr} {
		if d := s.limits.failures.locked(k, now); d > 0 {
			return limitError(d, "failed login attempts")
		}
	}
	if ok, wait := s.limits.buckets[limitLoginAddress].take(addr, now); !ok {
		return limitError(wait, limitWhat[limitLoginAddress])
	}
	if ok, wait := s.limits.buckets[limitLoginAccount].take(account, now); !ok {
		return limitError(wait, limitWhat[limitLoginAccount])
	}
	return nil
}

// loginResult records the outcome of a password check.
func (s *Server) loginResult(r *http.Request, account string, ok bool) {
	if s.limits == nil {
		return
	}
	addr := "addr:" + clientAddress(r, s.limits.cfg.TrustedProxies)
	if ok {
		s.limits.failures.succeed("acct:" + account)
		s.limits.failures.succeed(addr)
		return
	}
	now := time.Now()
	s.limits.failures.fail("acct:"+account, s.limits.cfg.LoginFailures, now)
	s.limits.failures.fail(addr, 10*s.limits.cfg.LoginFailures, now)
}
