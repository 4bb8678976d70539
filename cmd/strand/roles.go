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
	"golang.org/x/sync/errgroup"

	"strand/api"
	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector"
	"strand/projector/store"
	"strand/syncstream"
)

type roleSet struct{ api, projector, sync bool }

// roleCommand runs one or more roles in this process.
type roleCommand struct {
	name  string
	roles roleSet
	cfg   config
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

func (c *roleCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.cfg.registerCommon(fs)
	if c.roles.api || c.roles.sync {
		c.cfg.registerServer(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.roles.api || c.roles.sync {
		if err := c.cfg.validateServer(); err != nil {
			return err
		}
	}
	logger, err := c.cfg.logger()
	if err != nil {
		return err
	}
	logger = logger.With("role", c.name)
	d, err := openDeps(ctx, &c.cfg, logger, c.name == "serve")
	if err != nil {
		return err
	}
	defer d.close()

	g, ctx := errgroup.WithContext(ctx)
	if c.roles.projector {
		p := &projector.Projector{Log: d.log, Store: d.store, Logger: logger}
		g.Go(func() error { return p.Run(ctx) })
	}
	if c.roles.api || c.roles.sync {
		handler, err := c.httpHandler(ctx, g, d, logger)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", c.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", c.cfg.Listen, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
		logger.Info("strand listening", "url", "http://"+ln.Addr().String(), "server_name", c.cfg.ServerName,
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
func (c *roleCommand) httpHandler(ctx context.Context, g *errgroup.Group, d *deps, logger *slog.Logger) (http.Handler, error) {
	wm, err := eventlog.NewWatermark(d.nc, d.store.Position)
	if err != nil {
		return nil, err
	}
	var syncHandler *syncstream.Handler
	if c.roles.sync {
		n := syncstream.NewNotifier(syncstream.DefaultRecent)
		eph := syncstream.NewEphemeral()
		syncHandler = &syncstream.Handler{Store: d.store, Log: d.log, Watermark: wm, Notifier: n, Ephemeral: eph, Logger: logger}
		g.Go(func() error { return syncstream.Consume(ctx, d.log, d.store, n, eph) })
		if !c.roles.api {
			return syncHandler.Routes(), nil
		}
	}
	sn, err := matrix.ParseServerName(c.cfg.ServerName)
	if err != nil {
		return nil, fmt.Errorf("--server-name: %w", err)
	}
	keyFile := c.cfg.SigningKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(c.cfg.DataDir, "signing.key")
	}
	key, err := loadSigningKey(keyFile)
	if err != nil {
		return nil, err
	}
	base := c.cfg.PublicBaseURL
	if base == "" {
		base = "http://" + c.cfg.Listen
	}
	srv := api.New(api.Config{
		ServerName:              sn,
		PublicBaseURL:           base,
		Registration:            c.cfg.Registration,
		RegistrationSharedToken: c.cfg.RegistrationToken,
		SharedSecret:            c.cfg.SharedSecret,
		BcryptCost:              c.cfg.BcryptCost,
		PasswordMinLength:       c.cfg.PasswordMinLength,
		ApplyTimeout:            c.cfg.ApplyTimeout,
		SigningKey:              key,
	}, d.log, d.store, wm, logger)
	if syncHandler != nil {
		srv.Mount("/sync", syncHandler)
	}
	return srv, nil
}
