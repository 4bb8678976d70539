// Package api serves the Matrix client-server API, except /sync (package
// syncstream). Every write is appended to the log first and answered only
// once the projection shows it; every read comes from the projection.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"strand/api/appservice"
	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
	"strand/sessions"
)

// Registration policies.
const (
	RegistrationOpen   = "open"
	RegistrationClosed = "closed"
	RegistrationToken  = "token"
)

// Config is what an api process needs to know about its deployment.
type Config struct {
	ServerName matrix.ServerName
	// PublicBaseURL is the client-facing base URL announced in
	// /.well-known/matrix/client and login responses.
	PublicBaseURL string
	// Registration is one of the Registration* policies; with
	// RegistrationToken, RegistrationSharedToken must be presented.
	Registration            string
	RegistrationSharedToken string
	// SharedSecret enables /_synapse/admin/v1/register when non-empty.
	SharedSecret string
	// BcryptCost is the password hashing cost.
	BcryptCost        int
	PasswordMinLength int
	// MaxBodyBytes bounds request bodies (413 M_TOO_LARGE beyond).
	MaxBodyBytes int64
	// MaxUploadBytes bounds media uploads instead.
	MaxUploadBytes int64
	// MediaQuotaBytes bounds the bytes one user may upload in all (403
	// M_FORBIDDEN beyond); 0 means no quota.
	MediaQuotaBytes int64
	// MediaPendingExpiry is how long an ID created with
	// /media/v1/create waits for its upload (DefaultMediaPendingExpiry
	// when 0); MaxPendingMedia bounds a user's created IDs that wait
	// (DefaultMaxPendingMedia when 0, none when negative).
	MediaPendingExpiry time.Duration
	MaxPendingMedia    int
	// MediaClaimLease is how long an upload's claim on a created ID holds
	// unless renewed (DefaultMediaClaimLease when 0; tests shorten it).
	MediaClaimLease time.Duration
	// OutboundAllow lists addresses that outbound requests (URL
	// previews) may reach although they are loopback, private or
	// otherwise special; nothing such is reachable when empty.
	OutboundAllow []netip.Prefix
	// PreviewCacheTTL is how long a URL preview is kept and served again
	// (DefaultPreviewCacheTTL when 0).
	PreviewCacheTTL time.Duration
	// PreviewTimeout bounds one preview's fetches, redirects and image
	// included (DefaultPreviewTimeout when 0).
	PreviewTimeout time.Duration
	// ThumbnailSizes is the fixed set of thumbnail sizes made and kept;
	// every request is answered with the nearest (DefaultThumbnailSizes
	// when empty).
	ThumbnailSizes []ThumbnailSize
	// ThumbnailMaxDecodedBytes refuses thumbnails of images whose decoded
	// form would be larger (413 M_TOO_LARGE).
	ThumbnailMaxDecodedBytes int64
	// ThumbnailJobs bounds the thumbnails one process makes at once.
	ThumbnailJobs int
	// ApplyTimeout bounds how long a write waits for its projection
	// before answering 503 (the write itself is on the log by then).
	ApplyTimeout time.Duration
	// AccessTokenLifetime is how long an access token issued with a
	// refresh token is valid (DefaultAccessTokenLifetime when zero).
	// Tokens issued without one never expire.
	AccessTokenLifetime time.Duration
	// ServerNoticesLocalpart is the localpart of the system user that
	// sends server notices ("_server" when empty).
	ServerNoticesLocalpart string
	// SigningKey signs every event this server creates.
	SigningKey *matrix.KeyPair
	// OrphanAliasGrace is how long an alias may point at a room that is
	// not on the log before it counts as orphaned and can be claimed
	// again: createRoom claims the alias, then appends the room, and a
	// process that died in between leaves the alias pointing nowhere.
	OrphanAliasGrace time.Duration
	// RateLimits are the limits on what one client may ask; nil turns
	// them off (tests, benchmarks).
	RateLimits *RateLimits
	// DefaultRoomVersion is the version of rooms created without
	// room_version, announced in the m.room_versions capability;
	// matrix.DefaultRoomVersion if empty.
	DefaultRoomVersion matrix.RoomVersion
	// Appservices are the application services registered with this
	// server (none when nil).
	Appservices *appservice.Set
	// AppserviceTimeout bounds a query to a service (30 s when 0).
	AppserviceTimeout time.Duration

	// Sessions resolves access tokens: the process's session cache, which
	// the caller keeps following the log (sessions.Cache.Follow) and shares
	// with the process's sync worker. When nil, the api makes one that
	// follows nothing, so every lookup reads the database.
	Sessions *sessions.Cache
	// Readers, when set, makes writes also wait until every sync worker
	// reporting to it has read them (see eventlog.Readers).
	Readers *eventlog.Readers
}

func (c *Config) setDefaults() {
	if c.Registration == "" {
		c.Registration = RegistrationOpen
	}
	if c.BcryptCost == 0 {
		c.BcryptCost = 10
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = 50 << 20
	}
	if c.MediaQuotaBytes < 0 {
		c.MediaQuotaBytes = 0
	}
	if c.MediaPendingExpiry <= 0 {
		c.MediaPendingExpiry = DefaultMediaPendingExpiry
	}
	if c.MediaClaimLease <= 0 {
		c.MediaClaimLease = DefaultMediaClaimLease
	}
	if c.MaxPendingMedia == 0 {
		c.MaxPendingMedia = DefaultMaxPendingMedia
	}
	if c.PreviewTimeout <= 0 {
		c.PreviewTimeout = DefaultPreviewTimeout
	}
	if c.PreviewCacheTTL <= 0 {
		c.PreviewCacheTTL = DefaultPreviewCacheTTL
	}
	if len(c.ThumbnailSizes) == 0 {
		c.ThumbnailSizes = DefaultThumbnailSizes
	}
	if c.ThumbnailMaxDecodedBytes == 0 {
		c.ThumbnailMaxDecodedBytes = DefaultThumbnailMaxDecodedBytes
	}
	if c.ThumbnailJobs <= 0 {
		c.ThumbnailJobs = DefaultThumbnailJobs
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = 10 * time.Second
	}
	if c.AccessTokenLifetime <= 0 {
		c.AccessTokenLifetime = DefaultAccessTokenLifetime
	}
	if c.ServerNoticesLocalpart == "" {
		c.ServerNoticesLocalpart = "_server"
	}
	if c.OrphanAliasGrace == 0 {
		c.OrphanAliasGrace = time.Minute
	}
	if c.PublicBaseURL == "" {
		c.PublicBaseURL = "http://" + string(c.ServerName)
	}
	if c.AppserviceTimeout <= 0 {
		c.AppserviceTimeout = 30 * time.Second
	}
	if !c.DefaultRoomVersion.Supported() {
		c.DefaultRoomVersion = matrix.DefaultRoomVersion
	}
}

// Server is the api role's HTTP handler.
type Server struct {
	cfg       Config
	hot       hotRoutes // matched before router (hotroutes.go)
	log       *eventlog.Log
	store     *store.Store
	watermark *eventlog.Watermark
	sessions  *sessions.Cache
	readers   *eventlog.Readers
	logger    *slog.Logger
	respond   *matrix.Responder
	router    *mux.Router
	shell     http.Handler // respond.Shell around dispatch
	events    matrix.EventCache
	rooms     roomCache
	thumbs    *thumbnailer
	previews  *previewer
	asClient  *appservice.Client

	dummyOnce sync.Once
	dummyHash []byte

	noticesReady atomic.Bool // the server notices user is registered

	limits *limiters // nil: no rate limits

	latency *prometheus.HistogramVec
	retries prometheus.Counter
}

// RegisterMetrics exposes request latency by route and room-append
// retries.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "strand_http_request_duration_seconds",
		Help:    "Client API request latency by route template, method and status.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"route", "method", "code"})
	s.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "strand_room_append_retries_total", Help: "Room writes re-read and re-checked after losing the per-room append race.",
	})
	for _, c := range []prometheus.Collector{s.latency, s.retries, s.thumbs.made, s.thumbs.running} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// routeKey carries the matched route template out of the router.
type routeKey struct{}

type routeHolder struct{ template string }

// New builds the api handler. Other handlers (the sync worker, in the
// all-in-one process) are added with Mount.
func New(cfg Config, log *eventlog.Log, st *store.Store, wm *eventlog.Watermark, logger *slog.Logger) *Server {
	cfg.setDefaults()
	if cfg.Sessions == nil {
		cfg.Sessions = sessions.New(sessions.Config{Store: st, Log: log, Watermark: wm, Logger: logger, Wait: cfg.ApplyTimeout})
	}
	s := &Server{cfg: cfg, log: log, store: st, watermark: wm, logger: logger, events: matrix.EventCache{Max: 50000},
		sessions: cfg.Sessions, readers: cfg.Readers, thumbs: newThumbnailer(cfg.ThumbnailJobs),
		previews: newPreviewer(cfg), respond: &matrix.Responder{Logger: logger, Unavailable: store.Unavailable},
		asClient: appservice.NewClient(cfg.AppserviceTimeout)}
	if cfg.RateLimits != nil {
		s.limits = newLimiters(*cfg.RateLimits)
	}
	// Routes match the path as the client escaped it and as it is, not
	// decoded and cleaned: user localparts may hold "/" and aliases any
	// character but ":", so a decoded "/" would split an ID across
	// segments and cleaning would turn "a/../b" into another path (or a
	// 301). pathVar decodes each variable once. Both settings must come
	// before the first route: mux copies them into each route.
	s.router = mux.NewRouter().UseEncodedPath().SkipClean(true)
	s.router.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		matrix.WriteError(w, matrix.Unrecognized("unrecognized request: %s %s", r.Method, r.URL.Path))
	})
	s.router.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		matrix.WriteError(w, matrix.MethodNotAllowed("method %s not allowed on %s", r.Method, r.URL.Path))
	})
	s.routes()
	s.shell = s.respond.Shell(http.HandlerFunc(s.dispatch))
	s.router.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h, ok := r.Context().Value(routeKey{}).(*routeHolder); ok {
				if t, err := mux.CurrentRoute(r).GetPathTemplate(); err == nil {
					h.template = t
				}
			}
			next.ServeHTTP(w, r)
		})
	})
	return s
}

// syncReadersWait bounds how long a write waits for the sync workers.
const syncReadersWait = 2 * time.Second

// Mount routes every client-API path matching pathSuffix (e.g. "/sync",
// under both r0 and v3) to h. Used to put the sync worker in front of the
// api in the all-in-one process; must be called before serving.
func (s *Server) Mount(pathSuffix string, h http.Handler) {
	for _, p := range clientPrefixes {
		s.router.Handle(p+pathSuffix, h)
		s.hot.add("", p+pathSuffix, h)
	}
}

// ServeHTTP measures and logs each request and runs it through the shell
// shared with the sync workers (matrix.Responder.Shell: panics, CORS,
// request text), then applies the body limit and dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &matrix.ResponseRecorder{ResponseWriter: w}
	route := &routeHolder{template: "unmatched"}
	r = r.WithContext(context.WithValue(r.Context(), routeKey{}, route))
	defer func() {
		if s.latency != nil {
			s.latency.WithLabelValues(route.template, r.Method, strconv.Itoa(status(rec))).Observe(time.Since(start).Seconds())
		}
		s.logger.Debug("request", "method", r.Method, "path", r.URL.Path, "status", status(rec), "duration", time.Since(start))
	}()
	s.shell.ServeHTTP(rec, r)
}

// status is the status a request was answered with (200 for a handler
// that wrote nothing: net/http sends that).
func status(rec *matrix.ResponseRecorder) int {
	if rec.Status() == 0 {
		return http.StatusOK
	}
	return rec.Status()
}

// dispatch is what runs inside the shell.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil {
		limit := s.cfg.MaxBodyBytes
		if isMediaUpload(r) {
			limit = s.cfg.MaxUploadBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	if rt, vars, ok := s.hot.match(r); ok {
		rt.serve(w, r, vars)
		return
	}
	s.router.ServeHTTP(w, r)
}

// handlerFunc is an endpoint that returns its error instead of writing it,
// so every error reaches the client through matrix.WriteError.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.respond.Error(w, r, err)
		}
	})
}

// appendAccount appends an account record on the user's subject and waits
// until the projection has applied it (read your writes).
func (s *Server) appendAccount(ctx context.Context, userID string, rec eventlog.Record, expect *uint64) error {
	seq, err := s.log.Append(ctx, eventlog.UserSubject(userID), rec, eventlog.AppendOptions{ExpectSeq: expect})
	if err != nil {
		if !errors.Is(err, eventlog.ErrConflict) {
			s.logger.Error("append failed", "user_id", userID, "record", rec.RecordType(), "err", err)
		}
		return logUnavailable(err)
	}
	if err := s.awaitApplied(ctx, eventlog.StreamAccounts, seq); err != nil {
		return err
	}
	if eventlog.Revokes(rec.RecordType()) {
		// Logout holds at once on every process: wait until every
		// session cache has read the revocation.
		if err := s.sessions.AwaitEvicted(ctx, seq); err != nil {
			s.logger.Warn("revocation not yet read by every process", "user_id", userID, "err", err)
		}
	}
	return nil
}

// awaitApplied waits, bounded, until stream's projection reaches seq, the
// record this request appended, and refuses to report success for a
// record the projection set aside. A room write names its room's ROOMS
// lane (eventlog.RoomLaneOf) and waits for that lane only; the sync
// workers it then waits for report ROOMS as read only where every lane
// has applied it, so their responses show the write too.
func (s *Server) awaitApplied(ctx context.Context, stream string, seq uint64) error {
	if err := s.awaitPosition(ctx, stream, seq); err != nil {
		return err
	}
	if s.watermark.SetAside(stream, seq) {
		// The input checks should have refused it: it is on the log but
		// will never be readable, and answering 200 would be a false
		// success (strand projection set-aside lists it).
		s.logger.Error("a write was set aside by the projection", eventlog.LogStream, stream, eventlog.LogSeq, seq)
		return matrix.BadJSON("the request was stored but can never be applied; it was set aside")
	}
	return nil
}

// awaitPosition waits, bounded, until stream's projection reaches seq,
// whatever the record at seq was: catching up with other writers.
func (s *Server) awaitPosition(ctx context.Context, stream string, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.watermark.Wait(ctx, stream, seq); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || store.Unavailable(err) {
			return matrix.Unavailable("the change was stored but is not visible yet; retry shortly")
		}
		return fmt.Errorf("await %s seq %d: %w", stream, seq, err)
	}
	if s.readers != nil {
		// Sync workers answer some requests from what they have read
		// (not from the projection): they must have read it too. They
		// usually have, as they get each record when it is stored.
		if err := s.readers.Await(ctx, eventlog.SyncReadersTopic(eventlog.LaneStream(stream)), seq, syncReadersWait); err != nil && ctx.Err() == nil {
			s.logger.Warn("a sync worker has not read a write yet", eventlog.LogStream, stream, eventlog.LogSeq, seq, eventlog.LogErr, err)
		}
	}
	return nil
}

// logUnavailable turns a failed append into a retryable error for the
// client: the write did not happen, and saying so is never a false success.
func logUnavailable(err error) error {
	if errors.Is(err, eventlog.ErrConflict) {
		return err
	}
	if _, ok := matrix.AsError(err); ok {
		return err
	}
	return &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusServiceUnavailable,
		Msg: "the event log is unavailable; the request was not applied, retry"}
}
