// Package apitest runs real Strand processes-in-miniature for tests: a real
// JetStream server, a real Postgres database, projectors and api servers,
// each with its own connections, exactly as separate processes would have.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"strand/api"
	"strand/api/appservice"
	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/eventlog/matrix"
	"strand/projector"
	"strand/projector/store"
	"strand/projector/store/storetest"
	"strand/sessions"
	"strand/syncstream"
)

// Env is one deployment: a log and a database.
type Env struct {
	T     testing.TB
	NATS  *logtest.Server
	DBURL string
	// URL, when set, is the NATS URL list to connect to instead of NATS
	// (a cluster), and Replicas the stream replication factor.
	URL      string
	Replicas int
}

// New starts a JetStream server and creates an empty database.
func New(t testing.TB) *Env {
	t.Helper()
	e := &Env{T: t, NATS: logtest.Start(t), DBURL: storetest.NewURL(t)}
	return e
}

// Logger is the logger test processes use: quiet unless STRAND_TEST_LOG.
func Logger() *slog.Logger {
	if os.Getenv("STRAND_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Conn opens this "process's" own log connection, with streams declared.
func (e *Env) Conn() *eventlog.Log {
	e.T.Helper()
	var nc *nats.Conn
	if e.URL != "" {
		var err error
		nc, err = nats.Connect(e.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			e.T.Fatal(err)
		}
		e.T.Cleanup(nc.Close)
	} else {
		nc = e.NATS.Connect(e.T)
	}
	l, err := eventlog.New(nc)
	if err != nil {
		e.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := eventlog.EnsureStreams(ctx, l.JetStream(), eventlog.StreamOptions{Replicas: e.Replicas}); err != nil {
		e.T.Fatal(err)
	}
	return l
}

// Store opens this "process's" own pool on the database.
func (e *Env) Store() *store.Store {
	e.T.Helper()
	return e.StoreAt(e.DBURL)
}

// StoreAt opens a migrated store on url, closed when the test ends.
func (e *Env) StoreAt(url string) *store.Store {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, url)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(s.Close)
	return s
}

// Projector runs a projector "process" until the returned stop is called
// (or the test ends). Its exit error, other than cancellation, fails the
// test.
func (e *Env) Projector() (stop func()) {
	e.T.Helper()
	_, stop = e.ProjectorProcess()
	return stop
}

// ProjectorProcess is Projector that also returns the projector, to look
// at which lanes it holds.
func (e *Env) ProjectorProcess() (p *projector.Projector, stop func()) {
	e.T.Helper()
	p = &projector.Projector{Log: e.Conn(), Store: e.Store(), Logger: Logger()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			e.T.Errorf("projector: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.T.Cleanup(stop)
	return p, stop
}

// DefaultConfig is the api configuration tests start from: fast password
// hashing, registration open.
func DefaultConfig() api.Config {
	return api.Config{ServerName: "localhost", BcryptCost: 4, ApplyTimeout: 10 * time.Second, SigningKey: testKey()}
}

// testKey is one signing key for every api of a test binary, as the api
// processes of one deployment share theirs. (If crypto/rand failed, the
// key is nil and every event build reports it.)
var testKey = sync.OnceValue(func() *matrix.KeyPair {
	k, _ := matrix.GenerateKeyPair("test")
	return k
})

// API starts an api "process" and returns its base URL.
func (e *Env) API(cfg api.Config) *httptest.Server {
	e.T.Helper()
	return e.APIWithMetrics(cfg, nil)
}

// APIWithMetrics is API with the api's metrics registered on reg (none
// when nil), for tests that count what the api did.
func (e *Env) APIWithMetrics(cfg api.Config, reg prometheus.Registerer) *httptest.Server {
	e.T.Helper()
	p := e.process(cfg.ApplyTimeout)
	a := p.api(cfg)
	if reg != nil {
		if err := a.RegisterMetrics(reg); err != nil {
			e.T.Fatal(err)
		}
	}
	srv := httptest.NewServer(a)
	e.T.Cleanup(srv.Close)
	return srv
}

// process is what one "process" opens once and its roles share, built as
// cmd/strand builds it: its own log connection and pool, a watermark,
// readers, and a session cache that follows the log until the test ends.
type process struct {
	e        *Env
	log      *eventlog.Log
	store    *store.Store
	wm       *eventlog.Watermark
	readers  *eventlog.Readers
	sessions *sessions.Cache
}

func (e *Env) process(applyTimeout time.Duration) *process {
	e.T.Helper()
	p := &process{e: e, log: e.Conn(), store: e.Store()}
	var err error
	if p.wm, err = eventlog.NewWatermark(p.log.Conn(), p.store.Position); err != nil {
		e.T.Fatal(err)
	}
	if p.readers, err = eventlog.NewReaders(p.log.Conn()); err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(p.readers.Close)
	p.sessions = sessions.New(sessions.Config{Store: p.store, Log: p.log, Watermark: p.wm, Readers: p.readers,
		Logger: Logger(), Wait: applyTimeout})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.sessions.Follow(ctx)
	}()
	e.T.Cleanup(func() { cancel(); <-done })
	return p
}

// api builds the process's api.
func (p *process) api(cfg api.Config) *api.Server {
	cfg.Sessions, cfg.Readers = p.sessions, p.readers
	a := api.New(cfg, p.log, p.store, p.wm, Logger())
	p.e.ensureSenders(a, cfg)
	return a
}

// syncWorker builds the process's sync worker and runs it until stop.
func (p *process) syncWorker(applyTimeout time.Duration) (w *syncstream.Worker, stop func()) {
	e := p.e
	e.T.Helper()
	w, err := syncstream.NewWorker(syncstream.WorkerConfig{Store: p.store, Log: p.log, Watermark: p.wm, Readers: p.readers,
		Sessions: p.sessions, Logger: Logger(), ApplyTimeout: applyTimeout})
	if err != nil {
		e.T.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			e.T.Errorf("sync worker: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.T.Cleanup(stop)
	return w, stop
}

// Serve starts what "strand serve" runs over HTTP: an api with a sync
// worker mounted on /sync. It needs a projector (Env.Projector).
func (e *Env) Serve(cfg api.Config) *httptest.Server {
	e.T.Helper()
	p := e.process(cfg.ApplyTimeout)
	w, _ := p.syncWorker(cfg.ApplyTimeout)
	a := p.api(cfg)
	a.Mount("/sync", w)
	srv := httptest.NewServer(a)
	e.T.Cleanup(srv.Close)
	return srv
}

// SyncWorker starts a standalone sync worker "process"; stop ends it (its
// HTTP server closes too), as killing the process would.
func (e *Env) SyncWorker() (srv *httptest.Server, stop func()) {
	e.T.Helper()
	srv, _, stop = e.SyncWorkerHandler()
	return srv, stop
}

// SyncWorkerHandler is SyncWorker that also returns the worker, for tests
// that look at how it answered.
func (e *Env) SyncWorkerHandler() (srv *httptest.Server, w *syncstream.Worker, stop func()) {
	e.T.Helper()
	w, stopWorker := e.process(DefaultConfig().ApplyTimeout).syncWorker(DefaultConfig().ApplyTimeout)
	srv = httptest.NewServer(w.Routes())
	e.T.Cleanup(srv.Close)
	return srv, w, func() { srv.CloseClientConnections(); srv.Close(); stopWorker() }
}

// ensureSenders registers the application services' senders, as the
// api role does at start (it needs a running projector).
func (e *Env) ensureSenders(a *api.Server, cfg api.Config) {
	if len(cfg.Appservices.All()) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.EnsureAppserviceSenders(ctx); err != nil {
		e.T.Fatalf("register application service senders: %v", err)
	}
}

// AppserviceWorker runs an appservice role "process" delivering to the
// services of set until the returned stop is called (or the test ends),
// retrying failed transactions quickly.
func (e *Env) AppserviceWorker(set *appservice.Set) (stop func()) {
	e.T.Helper()
	l := e.Conn()
	st := e.Store()
	wm, err := eventlog.NewWatermark(l.Conn(), st.Position)
	if err != nil {
		e.T.Fatal(err)
	}
	d := &appservice.Deliverer{Log: l, Store: st, Watermark: wm, Services: set, Client: appservice.NewClient(10 * time.Second),
		Server: "localhost", Logger: Logger(), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			e.T.Errorf("appservice worker: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; _ = wm.Close() }) }
	e.T.Cleanup(stop)
	// A service new to the log starts at its head: wait until each has
	// its position, so what the test sends next is delivered.
	for _, reg := range set.All() {
		for reg.HasURL() {
			if _, rev, err := l.AppserviceState(ctx, reg.ID); err != nil {
				e.T.Fatal(err)
			} else if rev != 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return stop
}

// Client is a minimal Matrix client for tests.
type Client struct {
	T      testing.TB
	Base   string
	Token  string
	UserID string
	Device string
	HTTP   *http.Client
}

// NewClient returns a client of the server at base.
func NewClient(t testing.TB, base string) *Client {
	return &Client{T: t, Base: strings.TrimRight(base, "/"), HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// Response is a decoded JSON response.
type Response struct {
	Status int
	Body   map[string]any
	Raw    []byte
}

// Errcode returns the body's errcode, if any.
func (r Response) Errcode() string { s, _ := r.Body["errcode"].(string); return s }

// Str returns a top-level string field.
func (r Response) Str(k string) string { s, _ := r.Body[k].(string); return s }

// Do sends a request; body may be nil, a string (sent verbatim) or a value
// to encode as JSON. path is appended to Base.
func (c *Client) Do(method, path string, body any) Response {
	c.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			c.T.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		c.T.Fatal(err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		c.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		c.T.Fatal(err)
	}
	out := Response{Status: res.StatusCode, Raw: raw}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			c.T.Fatalf("%s %s: response is not JSON: %v: %s", method, path, err, raw)
		}
	}
	return out
}

// MustDo is Do that fails the test unless the status is 200.
func (c *Client) MustDo(method, path string, body any) Response {
	c.T.Helper()
	r := c.Do(method, path, body)
	if r.Status != http.StatusOK {
		c.T.Fatalf("%s %s: status %d: %s", method, path, r.Status, r.Raw)
	}
	return r
}

// Register creates an account with the dummy flow and logs the client in
// as it.
func (c *Client) Register(username, password string) {
	c.T.Helper()
	body := map[string]any{"password": password, "auth": map[string]any{"type": "m.login.dummy"}}
	if username != "" {
		body["username"] = username
	}
	r := c.MustDo("POST", "/_matrix/client/v3/register", body)
	c.Token, c.UserID, c.Device = r.Str("access_token"), r.Str("user_id"), r.Str("device_id")
}

// As returns a copy of the client with another token.
func (c *Client) As(token string) *Client {
	cp := *c
	cp.Token = token
	return &cp
}
