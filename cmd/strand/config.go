package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"strand/api"
	"strand/api/appservice"
	"strand/eventlog/matrix"
)

// config is every setting a role can use. Each flag falls back to an
// environment variable, so the same binary is configured the same way on
// a command line, in compose files and in CI.
type config struct {
	ServerName        string
	Listen            string
	PublicBaseURL     string
	DatabaseURL       string
	NATSURL           string
	DataDir           string
	NATSSync          string
	SigningKeyFile    string
	Replicas          int
	Registration      string
	RegistrationToken string
	SharedSecret      string
	BcryptCost        int
	MaxUploadMB       int
	MediaQuotaMB      int
	ThumbnailSizes    string
	ThumbnailMaxMB    int
	ThumbnailJobs     int
	PendingMediaMax   int
	PendingMediaTTL   time.Duration
	OutboundAllow     string
	PushSenders       int
	PushMatchers      int
	PreviewCacheTTL   time.Duration
	PasswordMinLength int
	TokenLifetime     time.Duration
	NoticesUser       string
	ApplyTimeout      time.Duration
	OpsListen         string
	MetricsOnListen   bool
	PprofListen       string
	LogLevel          string
	LogFormat         string
	DefaultRoomVer    string
	// Appservices are the registration files (--appservice, repeatable).
	Appservices appserviceFiles

	// Rate limits (api role): on or off, and each limit as RATE/BURST.
	RateLimits      string
	Limits          map[string]*string
	LoginFailures   int
	LoginLockoutMax time.Duration
	TrustedProxies  string
}

// limitFlags are the per-limit flags: name, environment variable, what it
// bounds, and how to set it in api.RateLimits.
var limitFlags = []struct {
	name, env, help string
	field           func(*api.RateLimits) *api.Limit
}{
	{"limit-login-address", "STRAND_LIMIT_LOGIN_ADDRESS", "login attempts per client address", func(l *api.RateLimits) *api.Limit { return &l.LoginAddress }},
	{"limit-login-account", "STRAND_LIMIT_LOGIN_ACCOUNT", "login attempts per account", func(l *api.RateLimits) *api.Limit { return &l.LoginAccount }},
	{"limit-register", "STRAND_LIMIT_REGISTER", "registrations per client address", func(l *api.RateLimits) *api.Limit { return &l.Register }},
	{"limit-message", "STRAND_LIMIT_MESSAGE", "room events (messages, state, redactions) per user", func(l *api.RateLimits) *api.Limit { return &l.Message }},
	{"limit-create-room", "STRAND_LIMIT_CREATE_ROOM", "rooms created per user", func(l *api.RateLimits) *api.Limit { return &l.CreateRoom }},
	{"limit-join", "STRAND_LIMIT_JOIN", "room joins per user", func(l *api.RateLimits) *api.Limit { return &l.Join }},
	{"limit-upload", "STRAND_LIMIT_UPLOAD", "media uploads per user", func(l *api.RateLimits) *api.Limit { return &l.Upload }},
	{"limit-preview", "STRAND_LIMIT_PREVIEW", "URL previews per user that are not cached (each fetches a page)", func(l *api.RateLimits) *api.Limit { return &l.Preview }},
	{"limit-request", "STRAND_LIMIT_REQUEST", "authenticated requests per access token (not /sync)", func(l *api.RateLimits) *api.Limit { return &l.Request }},
}

// envFlags registers flags whose defaults come from the environment. An
// environment value that does not parse is an error of parseFlags (unless
// the command line sets the flag), never a silent fallback to the default.
type envFlags struct {
	fs *flag.FlagSet
}

func (e envFlags) str(p *string, name, env, def, help string) {
	e.fs.StringVar(p, name, def, fmt.Sprintf("%s (env %s)", help, env))
	e.fromEnv(name, env)
}

func (e envFlags) int(p *int, name, env string, def int, help string) {
	e.fs.IntVar(p, name, def, fmt.Sprintf("%s (env %s)", help, env))
	e.fromEnv(name, env)
}

func (e envFlags) bool(p *bool, name, env string, def bool, help string) {
	e.fs.BoolVar(p, name, def, fmt.Sprintf("%s (env %s)", help, env))
	e.fromEnv(name, env)
}

func (e envFlags) dur(p *time.Duration, name, env string, def time.Duration, help string) {
	e.fs.DurationVar(p, name, def, fmt.Sprintf("%s (env %s)", help, env))
	e.fromEnv(name, env)
}

// fromEnv makes the environment variable's value, if set, the flag's
// default. One that does not parse stays with the flag (envError) until
// parseFlags reports it.
func (e envFlags) fromEnv(name, env string) {
	v, ok := os.LookupEnv(env)
	if !ok {
		return
	}
	f := e.fs.Lookup(name)
	if err := f.Value.Set(v); err != nil {
		f.Value = &envError{Value: f.Value, err: fmt.Errorf("environment variable %s=%q (for --%s): %v", env, v, name, err)}
		return
	}
	f.DefValue = f.Value.String()
}

// envError is a flag whose environment variable did not parse. Setting
// the flag on the command line clears the error.
type envError struct {
	flag.Value
	err error
}

func (e *envError) Set(s string) error {
	e.err = nil
	return e.Value.Set(s)
}

// IsBoolFlag keeps "--flag" without a value working for boolean flags.
func (e *envError) IsBoolFlag() bool {
	b, ok := e.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// parseFlags parses args and then reports every environment variable that
// did not parse, for a flag the command line did not set.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if e, ok := f.Value.(*envError); ok && e.err != nil {
			errs = append(errs, e.err)
		}
	})
	return errors.Join(errs...)
}

// registerCommon adds the flags every role shares.
func (c *config) registerCommon(fs *flag.FlagSet) {
	e := envFlags{fs}
	e.str(&c.DatabaseURL, "database-url", "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/strand?sslmode=disable", "PostgreSQL URL; the database is created if missing")
	e.str(&c.NATSURL, "nats-url", "NATS_URL", "", "NATS server URL; empty runs an embedded JetStream server (serve and replay only)")
	e.str(&c.DataDir, "data-dir", "STRAND_DATA_DIR", "./data", "directory for the embedded JetStream store and the signing key")
	e.str(&c.NATSSync, "nats-sync", "STRAND_NATS_SYNC", "always", "embedded JetStream disk sync: always (fsync before every ack) or an interval like 2m")
	e.int(&c.Replicas, "replicas", "STRAND_REPLICAS", 1, "stream replicas (3 on a NATS cluster)")
	e.str(&c.OpsListen, "ops-listen", "STRAND_OPS_LISTEN", "", "separate listen address for /metrics, /health and /ready (the projector role serves them only here)")
	e.bool(&c.MetricsOnListen, "metrics-on-listen", "STRAND_METRICS_ON_LISTEN", false, "also serve /metrics on --listen, the client port (without --ops-listen, /health and /ready are there anyway)")
	e.str(&c.PprofListen, "pprof-listen", "STRAND_PPROF_LISTEN", "", "loopback address for net/http/pprof (off when empty)")
	e.str(&c.LogLevel, "log-level", "STRAND_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	e.str(&c.LogFormat, "log-format", "STRAND_LOG_FORMAT", "text", "log format: text or json")
}

// registerOutbound adds the flag of roles that make requests to URLs
// users named (api: URL previews; pusher: push gateways).
func (c *config) registerOutbound(fs *flag.FlagSet) {
	e := envFlags{fs}
	e.str(&c.OutboundAllow, "outbound-allow", "STRAND_OUTBOUND_ALLOW", "", "comma-separated CIDRs that outbound requests (URL previews, push gateways) may reach although they are loopback, private or otherwise internal (none by default)")
}

// registerPusher adds the flags of the pusher role.
func (c *config) registerPusher(fs *flag.FlagSet) {
	e := envFlags{fs}
	e.int(&c.PushSenders, "push-senders", "STRAND_PUSH_SENDERS", 16, "notifications this process sends to push gateways at once")
	e.int(&c.PushMatchers, "push-matchers", "STRAND_PUSH_MATCHERS", 4, "room events this process matches against pushers and push rules at once")
}

// registerServer adds the flags of roles that answer HTTP.
func (c *config) registerServer(fs *flag.FlagSet) {
	e := envFlags{fs}
	e.str(&c.ServerName, "server-name", "STRAND_SERVER_NAME", "localhost", "the homeserver's name, the part after ':' in user IDs")
	e.str(&c.Listen, "listen", "STRAND_LISTEN", "127.0.0.1:8008", "HTTP listen address")
	e.str(&c.PublicBaseURL, "public-base-url", "STRAND_PUBLIC_BASE_URL", "", "client-facing base URL for .well-known (default http://<listen>)")
	e.str(&c.Registration, "registration", "STRAND_REGISTRATION", "open", "registration policy: open, closed or token")
	e.str(&c.RegistrationToken, "registration-token", "STRAND_REGISTRATION_TOKEN", "", "the token required when --registration=token")
	e.str(&c.SharedSecret, "registration-shared-secret", "STRAND_REGISTRATION_SHARED_SECRET", "", "enables shared-secret registration (/_synapse/admin/v1/register)")
	e.str(&c.DefaultRoomVer, "default-room-version", "STRAND_DEFAULT_ROOM_VERSION", string(matrix.DefaultRoomVersion), "room version of rooms created without room_version (1 to 12)")
	e.str(&c.SigningKeyFile, "signing-key", "STRAND_SIGNING_KEY_FILE", "", "the server's ed25519 signing key file (default <data-dir>/signing.key; created if missing)")
	e.int(&c.BcryptCost, "bcrypt-cost", "STRAND_BCRYPT_COST", 10, "bcrypt cost of password hashes")
	e.int(&c.PasswordMinLength, "password-min-length", "STRAND_PASSWORD_MIN_LENGTH", 0, "minimum password length in characters (0: any non-empty)")
	e.dur(&c.TokenLifetime, "access-token-lifetime", "STRAND_ACCESS_TOKEN_LIFETIME", api.DefaultAccessTokenLifetime, "lifetime of access tokens issued with a refresh token (others never expire)")
	e.str(&c.NoticesUser, "server-notices-user", "STRAND_SERVER_NOTICES_USER", "_server", "localpart of the system user that sends server notices")
	e.int(&c.MaxUploadMB, "max-upload-mb", "STRAND_MAX_UPLOAD_MB", 50, "largest media upload, in MiB (keep a proxy's body limit at least this)")
	e.int(&c.MediaQuotaMB, "media-quota-mb", "STRAND_MEDIA_QUOTA_MB", 10240, "bytes one user may upload in all, in MiB (0: no quota)")
	e.str(&c.ThumbnailSizes, "thumbnail-sizes", "STRAND_THUMBNAIL_SIZES", "32x32:crop,96x96:crop,320x240:scale,640x480:scale,800x600:scale", "the fixed set of thumbnail sizes made and kept; requests get the nearest")
	e.int(&c.ThumbnailMaxMB, "thumbnail-max-decoded-mb", "STRAND_THUMBNAIL_MAX_DECODED_MB", 64, "refuse thumbnails of images whose decoded pixels take more MiB")
	e.int(&c.ThumbnailJobs, "thumbnail-jobs", "STRAND_THUMBNAIL_JOBS", 2, "thumbnails one process makes at once")
	e.int(&c.PendingMediaMax, "media-pending-max", "STRAND_MEDIA_PENDING_MAX", api.DefaultMaxPendingMedia, "media IDs one user may have created (POST /media/v1/create) and not uploaded yet")
	e.dur(&c.PendingMediaTTL, "media-pending-expiry", "STRAND_MEDIA_PENDING_EXPIRY", api.DefaultMediaPendingExpiry, "how long a created media ID waits for its upload")
	e.dur(&c.PreviewCacheTTL, "preview-cache-ttl", "STRAND_PREVIEW_CACHE_TTL", api.DefaultPreviewCacheTTL, "how long a URL preview is served from the cache (at most 24h)")
	c.registerAppservices(fs)
	e.dur(&c.ApplyTimeout, "apply-timeout", "STRAND_APPLY_TIMEOUT", 10*time.Second, "how long a write waits to become readable before answering 503")
	def := api.DefaultRateLimits()
	e.str(&c.RateLimits, "rate-limits", "STRAND_RATE_LIMITS", "on", "rate limits: on, or off (benchmarks, tests)")
	c.Limits = map[string]*string{}
	for _, f := range limitFlags {
		v := new(string)
		c.Limits[f.name] = v
		e.str(v, f.name, f.env, f.field(&def).String(), f.help+", as RATE/BURST (requests a second / at once)")
	}
	e.int(&c.LoginFailures, "login-failures", "STRAND_LOGIN_FAILURES", def.LoginFailures, "failed logins of an account (10× for an address) before a doubling lock-out starts")
	e.dur(&c.LoginLockoutMax, "login-lockout-max", "STRAND_LOGIN_LOCKOUT_MAX", def.LoginLockoutMax, "longest lock-out after failed logins")
	e.str(&c.TrustedProxies, "trusted-proxies", "STRAND_TRUSTED_PROXIES", "127.0.0.0/8,::1/128", "comma-separated CIDRs of proxies whose X-Forwarded-For names the client address")
}

// rateLimits builds the api's limits from the flags; nil when they are off.
func (c *config) rateLimits() (*api.RateLimits, error) {
	switch c.RateLimits {
	case "off":
		return nil, nil
	case "on":
	default:
		return nil, fmt.Errorf("--rate-limits must be on or off, not %q", c.RateLimits)
	}
	l := api.DefaultRateLimits()
	for _, f := range limitFlags {
		v, err := api.ParseLimit(*c.Limits[f.name])
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", f.name, err)
		}
		*f.field(&l) = v
	}
	if c.LoginFailures < 1 {
		return nil, fmt.Errorf("--login-failures must be at least 1")
	}
	if c.LoginLockoutMax < time.Second {
		return nil, fmt.Errorf("--login-lockout-max must be at least 1s")
	}
	l.LoginFailures, l.LoginLockoutMax = c.LoginFailures, c.LoginLockoutMax
	l.TrustedProxies = nil
	for _, s := range strings.Split(c.TrustedProxies, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxies: %w", err)
		}
		l.TrustedProxies = append(l.TrustedProxies, p)
	}
	return &l, nil
}

// outboundAllow parses --outbound-allow.
func (c *config) outboundAllow() ([]netip.Prefix, error) {
	var allow []netip.Prefix
	for _, s := range strings.Split(c.OutboundAllow, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--outbound-allow: %w", err)
		}
		allow = append(allow, p.Masked())
	}
	return allow, nil
}

// validateServer checks the settings registerServer added.
func (c *config) validateServer() error {
	if _, err := matrix.ParseRoomVersion(c.DefaultRoomVer); err != nil {
		return fmt.Errorf("--default-room-version: %q is not a supported room version (1 to 12)", c.DefaultRoomVer)
	}
	switch c.Registration {
	case "open", "closed":
	case "token":
		if c.RegistrationToken == "" {
			return fmt.Errorf("--registration=token needs --registration-token")
		}
	default:
		return fmt.Errorf("--registration must be open, closed or token, not %q", c.Registration)
	}
	if c.BcryptCost < 4 || c.BcryptCost > 31 {
		return fmt.Errorf("--bcrypt-cost must be between 4 and 31")
	}
	if c.TokenLifetime < time.Second {
		return fmt.Errorf("--access-token-lifetime must be at least 1s")
	}
	// The historical grammar: the default, like Synapse's, starts with
	// "_", which registration reserves for such system users.
	if _, err := matrix.ParseUserID("@" + c.NoticesUser + ":" + c.ServerName); err != nil || c.NoticesUser == "" || strings.Contains(c.NoticesUser, ":") {
		return fmt.Errorf("--server-notices-user must be a valid localpart: %q", c.NoticesUser)
	}
	if c.MaxUploadMB < 1 || c.MaxUploadMB > 4096 {
		return fmt.Errorf("--max-upload-mb must be between 1 and 4096")
	}
	if _, err := c.rateLimits(); err != nil {
		return err
	}
	if c.MediaQuotaMB < 0 {
		return fmt.Errorf("--media-quota-mb must be 0 (no quota) or more")
	}
	if _, err := api.ParseThumbnailSizes(c.ThumbnailSizes); err != nil {
		return fmt.Errorf("--thumbnail-sizes: %w", err)
	}
	if c.ThumbnailMaxMB < 1 || c.ThumbnailMaxMB > 4096 {
		return fmt.Errorf("--thumbnail-max-decoded-mb must be between 1 and 4096")
	}
	if c.ThumbnailJobs < 1 || c.ThumbnailJobs > 64 {
		return fmt.Errorf("--thumbnail-jobs must be between 1 and 64")
	}
	if c.PendingMediaMax < 1 || c.PendingMediaMax > 10000 {
		return fmt.Errorf("--media-pending-max must be between 1 and 10000")
	}
	if c.PendingMediaTTL < time.Minute || c.PendingMediaTTL > 48*time.Hour {
		return fmt.Errorf("--media-pending-expiry must be between 1m and 48h")
	}
	if _, err := c.outboundAllow(); err != nil {
		return err
	}
	if c.PreviewCacheTTL < time.Second || c.PreviewCacheTTL > api.MaxPreviewCacheTTL {
		return fmt.Errorf("--preview-cache-ttl must be between 1s and %s", api.MaxPreviewCacheTTL)
	}
	return nil
}

func (c *config) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(c.LogFormat) {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json")
}

// appserviceFiles is the repeatable --appservice flag. Its default comes
// from STRAND_APPSERVICES, a comma-separated list; giving the flag
// replaces that list.
type appserviceFiles struct {
	paths   []string
	fromEnv bool
	err     error // a malformed STRAND_APPSERVICES, reported by appservices()
}

func (a *appserviceFiles) String() string { return strings.Join(a.paths, ",") }

func (a *appserviceFiles) Set(v string) error {
	if a.fromEnv {
		a.paths, a.fromEnv = nil, false
	}
	if strings.TrimSpace(v) == "" {
		return errors.New("empty registration file path")
	}
	a.paths = append(a.paths, v)
	return nil
}

// registerAppservices adds --appservice.
func (c *config) registerAppservices(fs *flag.FlagSet) {
	c.Appservices = appserviceFiles{}
	if v, ok := os.LookupEnv("STRAND_APPSERVICES"); ok && strings.TrimSpace(v) != "" {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				c.Appservices.err = fmt.Errorf("STRAND_APPSERVICES: empty entry in %q", v)
				break
			}
			c.Appservices.paths = append(c.Appservices.paths, p)
		}
		c.Appservices.fromEnv = true
	}
	fs.Var(&c.Appservices, "appservice", "application service registration file (YAML); repeat for several (env STRAND_APPSERVICES, comma-separated)")
}

// registerAppserviceRole adds the flags of the appservice role alone.
func (c *config) registerAppserviceRole(fs *flag.FlagSet) {
	envFlags{fs}.str(&c.ServerName, "server-name", "STRAND_SERVER_NAME", "localhost", "the homeserver's name, the part after ':' in user IDs")
	c.registerAppservices(fs)
}

// appservices loads and checks the registration files.
func (c *config) appservices() (*appservice.Set, error) {
	if c.Appservices.err != nil {
		return nil, c.Appservices.err
	}
	if len(c.Appservices.paths) == 0 {
		return nil, nil
	}
	sn, err := matrix.ParseServerName(c.ServerName)
	if err != nil {
		return nil, fmt.Errorf("--server-name: %w", err)
	}
	set, err := appservice.Load(c.Appservices.paths, sn)
	if err != nil {
		return nil, fmt.Errorf("--appservice: %w", err)
	}
	return set, nil
}
