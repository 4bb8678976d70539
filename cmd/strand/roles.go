package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"strand/api"
	"strand/api/appservice"
	"strand/api/outbound"
	"strand/api/pushgateway"
	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector"
	"strand/projector/store"
	"strand/sessions"
	"strand/syncstream"
)

type roleSet struct{ api, projector, sync, pusher, appservice bool }

// roleCommand runs one or more roles in this process.
type roleCommand struct {
	name        string
	roles       roleSet
	cfg         config
	appservices *appservice.Set
}

// deps are the connections a process opens once and shares between its
// roles.
type deps struct {
	logger   *slog.Logger
	nc       *nats.Conn
	log      *eventlog.Log
	store    *store.Store
	embedded *embeddedNATS
	natsDesc string
}

func (d *deps) close() {
	if d.store != nil {
		d.store.Close()
	}
	if d.nc != nil {
		d.nc.Close()
	}
	if d.embedded != nil {
		d.embedded.shutdown()
	}
}

// openDeps connects to NATS (or starts the embedded server when allowed),
// declares the streams, and opens and migrates the database.
func openDeps(ctx context.Context, cfg *config, logger *slog.Logger, allowEmbedded bool) (*deps, error) {
	d := &deps{logger: logger}
	var err error
	if cfg.NATSURL == "" {
		if !allowEmbedded {
			return nil, errors.New("this role needs --nats-url (NATS_URL): only serve and replay can embed JetStream")
		}
		if d.embedded, err = startEmbeddedNATS(cfg.DataDir, cfg.NATSSync); err != nil {
			return nil, err
		}
		if d.nc, err = d.embedded.connect(); err != nil {
			d.close()
			return nil, fmt.Errorf("connect to embedded JetStream: %w", err)
		}
		d.natsDesc = "embedded JetStream in " + d.embedded.dir
	} else {
		if d.nc, err = connectNATS(cfg.NATSURL, logger); err != nil {
			return nil, err
		}
		d.natsDesc = d.nc.ConnectedUrlRedacted()
	}
	if d.log, err = eventlog.New(d.nc); err != nil {
		d.close()
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := eventlog.EnsureStreams(sctx, d.log.JetStream(), eventlog.StreamOptions{Replicas: cfg.Replicas}); err != nil {
		d.close()
		return nil, err
	}
	if d.store, err = store.Open(sctx, cfg.DatabaseURL); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// projectorConns is the pool of a projector running beside request
// handlers: one connection per lane (ACCOUNTS, ROOMS, RECEIPTS) and one
// spare. Its leases hold connections of their own.
const projectorConns = 4

// pusherConns is the pool of a pusher running beside request handlers.
const pusherConns = 8

func (c *roleCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.cfg.registerCommon(fs)
	if c.roles.api || c.roles.sync {
		c.cfg.registerServer(fs)
	} else if c.roles.appservice {
		c.cfg.registerAppserviceRole(fs)
	}
	if c.roles.api || c.roles.pusher {
		c.cfg.registerOutbound(fs)
	}
	if c.roles.pusher {
		c.cfg.registerPusher(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.roles.api || c.roles.sync {
		if err := c.cfg.validateServer(); err != nil {
			return err
		}
	}
	// Registration files are checked before anything starts: a bad one
	// is a clear error and exit, not a half-working bridge.
	appservices, err := c.cfg.appservices()
	if err != nil {
		return err
	}
	if c.name == "appservice" && len(appservices.All()) == 0 {
		return errors.New("the appservice role needs at least one --appservice FILE (STRAND_APPSERVICES)")
	}
	allow, err := c.cfg.outboundAllow()
	if err != nil {
		return err
	}
	if c.roles.pusher && (c.cfg.PushSenders < 1 || c.cfg.PushMatchers < 1) {
		return errors.New("--push-senders and --push-matchers must be at least 1")
	}
	logger, err := c.cfg.logger()
	if err != nil {
		return err
	}
	logger = logger.With(eventlog.LogRole, c.name)
	c.appservices = appservices
	d, err := openDeps(ctx, &c.cfg, logger, c.name == "serve")
	if err != nil {
		return err
	}
	defer d.close()

	reg := newRegistry()
	if err := d.log.RegisterMetrics(reg); err != nil {
		return err
	}
	ops := opsHandler(reg, d)

	g, ctx := errgroup.WithContext(ctx)
	if c.roles.projector {
		ps := d.store
		if c.roles.api || c.roles.sync {
			// Its own connections: requests queueing for the shared
			// pool must not delay the projection that writes wait for.
			if ps, err = store.OpenSized(ctx, c.cfg.DatabaseURL, projectorConns); err != nil {
				return err
			}
			defer ps.Close()
		}
		p := &projector.Projector{Log: d.log, Store: ps, Logger: logger}
		if err := p.RegisterMetrics(reg); err != nil {
			return err
		}
		g.Go(func() error { return p.Run(ctx) })
	}
	if c.roles.appservice && len(c.appservices.All()) > 0 {
		if err := c.runDeliverer(ctx, g, d, reg, logger); err != nil {
			return err
		}
	}
	if c.roles.pusher {
		ps := d.store
		if c.roles.api || c.roles.sync {
			// Its own connections: a burst of notifications for a large
			// room (a count read per member) must not hold the request
			// handlers' pool.
			if ps, err = store.OpenSized(ctx, c.cfg.DatabaseURL, pusherConns); err != nil {
				return err
			}
			defer ps.Close()
		}
		wm, err := eventlog.NewWatermark(d.nc, ps.Position)
		if err != nil {
			return err
		}
		defer wm.Close()
		p := &pushgateway.Pusher{Log: d.log, Store: ps, Watermark: wm, Client: outbound.NewClient(allow),
			Logger: logger.With("part", "pusher"), Senders: c.cfg.PushSenders, Matchers: c.cfg.PushMatchers}
		if err := p.RegisterMetrics(reg); err != nil {
			return err
		}
		g.Go(func() error { return p.Run(ctx) })
	}
	if c.cfg.PprofListen != "" {
		addr, err := serveHTTP(ctx, g, c.cfg.PprofListen, pprofHandler(), nil)
		if err != nil {
			return fmt.Errorf("--pprof-listen: %w", err)
		}
		logger.Info("pprof listening", "addr", addr)
	}
	if c.cfg.OpsListen != "" {
		addr, err := serveHTTP(ctx, g, c.cfg.OpsListen, ops, nil)
		if err != nil {
			return fmt.Errorf("--ops-listen: %w", err)
		}
		logger.Info("metrics and health listening", "addr", addr)
	}
	if c.roles.api || c.roles.sync {
		handler, worker, err := c.httpHandler(ctx, g, d, reg, logger)
		if err != nil {
			return err
		}
		// /metrics tells anyone who can read it how busy the server is
		// and which routes it serves: on the client port only if asked.
		handler = withOps(ops, handler, c.cfg.OpsListen == "", c.cfg.MetricsOnListen)
		var beforeShutdown func()
		if worker != nil {
			beforeShutdown = worker.Stop // answer waiting long-polls first
		}
		addr, err := serveHTTP(ctx, g, c.cfg.Listen, handler, beforeShutdown)
		if err != nil {
			return err
		}
		logger.Info("strand listening", "url", "http://"+addr, "server_name", c.cfg.ServerName,
			"nats", d.natsDesc, "database", redactURL(c.cfg.DatabaseURL))
	} else {
		logger.Info("strand running", "nats", d.natsDesc, "database", redactURL(c.cfg.DatabaseURL))
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// httpHandler builds what this process serves: the api, a sync worker, or
// both with /sync routed to the worker. Background work the handlers need
// (the sync worker's log consumer) joins g.
func (c *roleCommand) httpHandler(ctx context.Context, g *errgroup.Group, d *deps, reg prometheus.Registerer, logger *slog.Logger) (http.Handler, *syncstream.Worker, error) {
	wm, err := eventlog.NewWatermark(d.nc, d.store.Position)
	if err != nil {
		return nil, nil, err
	}
	// The process's log readers report their positions to every process.
	readers, err := eventlog.NewReaders(d.nc)
	if err != nil {
		return nil, nil, err
	}
	// One session cache for the process's api and sync worker.
	cache := sessions.New(sessions.Config{Store: d.store, Log: d.log, Watermark: wm, Readers: readers, Logger: logger,
		Wait: c.cfg.ApplyTimeout})
	g.Go(func() error { cache.Follow(ctx); return nil })
	var worker *syncstream.Worker
	if c.roles.sync {
		worker, err = syncstream.NewWorker(syncstream.WorkerConfig{Store: d.store, Log: d.log, Watermark: wm, Readers: readers,
			Sessions: cache, Logger: logger, ApplyTimeout: c.cfg.ApplyTimeout, Metrics: reg})
		if err != nil {
			return nil, nil, err
		}
		g.Go(func() error { return worker.Run(ctx) })
		if !c.roles.api {
			return worker.Routes(), worker, nil
		}
	}
	sn, err := matrix.ParseServerName(c.cfg.ServerName)
	if err != nil {
		return nil, nil, fmt.Errorf("--server-name: %w", err)
	}
	keyFile := c.cfg.SigningKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(c.cfg.DataDir, "signing.key")
	}
	key, err := loadSigningKey(keyFile)
	if err != nil {
		return nil, nil, err
	}
	base := c.cfg.PublicBaseURL
	if base == "" {
		base = "http://" + c.cfg.Listen
	}
	limits, err := c.cfg.rateLimits()
	if err != nil {
		return nil, nil, err
	}
	thumbSizes, err := api.ParseThumbnailSizes(c.cfg.ThumbnailSizes)
	if err != nil {
		return nil, nil, fmt.Errorf("--thumbnail-sizes: %w", err)
	}
	allow, err := c.cfg.outboundAllow()
	if err != nil {
		return nil, nil, err
	}
	srv := api.New(api.Config{
		RateLimits:               limits,
		ServerName:               sn,
		PublicBaseURL:            base,
		Registration:             c.cfg.Registration,
		RegistrationSharedToken:  c.cfg.RegistrationToken,
		SharedSecret:             c.cfg.SharedSecret,
		BcryptCost:               c.cfg.BcryptCost,
		PasswordMinLength:        c.cfg.PasswordMinLength,
		ApplyTimeout:             c.cfg.ApplyTimeout,
		AccessTokenLifetime:      c.cfg.TokenLifetime,
		ServerNoticesLocalpart:   c.cfg.NoticesUser,
		MaxUploadBytes:           int64(c.cfg.MaxUploadMB) << 20,
		MediaQuotaBytes:          int64(c.cfg.MediaQuotaMB) << 20,
		ThumbnailSizes:           thumbSizes,
		ThumbnailMaxDecodedBytes: int64(c.cfg.ThumbnailMaxMB) << 20,
		ThumbnailJobs:            c.cfg.ThumbnailJobs,
		MaxPendingMedia:          c.cfg.PendingMediaMax,
		MediaPendingExpiry:       c.cfg.PendingMediaTTL,
		OutboundAllow:            allow,
		PreviewCacheTTL:          c.cfg.PreviewCacheTTL,
		SigningKey:               key,
		DefaultRoomVersion:       matrix.RoomVersion(c.cfg.DefaultRoomVer),
		Sessions:                 cache,
		Readers:                  readers,
		Appservices:              c.appservices,
	}, d.log, d.store, wm, logger)
	if len(c.appservices.All()) > 0 {
		g.Go(func() error { ensureAppserviceSenders(ctx, srv, logger); return nil })
	}
	if err := srv.RegisterMetrics(reg); err != nil {
		return nil, nil, err
	}
	if worker != nil {
		srv.Mount("/sync", worker)
	}
	return srv, worker, nil
}

// serveHTTP listens on addr and serves h until ctx ends, then shuts the
// server down gracefully (after beforeShutdown, if any). It returns the
// address actually bound.
func serveHTTP(ctx context.Context, g *errgroup.Group, addr string, h http.Handler, beforeShutdown func()) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		if beforeShutdown != nil {
			beforeShutdown()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return ln.Addr().String(), nil
}

// appserviceTxnTimeout bounds one transaction pushed to a service; a
// service that takes longer gets the same transaction again.
const appserviceTxnTimeout = 60 * time.Second

// ensureAppserviceSenders registers the services' sender users, trying
// again until it works (the projector that the registration waits for
// may still be starting) or the process stops.
func ensureAppserviceSenders(ctx context.Context, srv *api.Server, logger *slog.Logger) {
	wait := time.Second
	for {
		err := srv.EnsureAppserviceSenders(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		logger.Warn("could not register the application service senders yet", eventlog.LogErr, err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// runDeliverer starts the appservice role: delivery to the services.
func (c *roleCommand) runDeliverer(ctx context.Context, g *errgroup.Group, d *deps, reg prometheus.Registerer, logger *slog.Logger) error {
	wm, err := eventlog.NewWatermark(d.nc, d.store.Position)
	if err != nil {
		return err
	}
	dl := &appservice.Deliverer{Log: d.log, Store: d.store, Watermark: wm, Services: c.appservices,
		Client: appservice.NewClient(appserviceTxnTimeout), Server: matrix.ServerName(c.cfg.ServerName), Logger: logger}
	if err := dl.RegisterMetrics(reg); err != nil {
		return err
	}
	g.Go(func() error { return dl.Run(ctx) })
	return nil
}
