package syncstream

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
	"strand/sessions"
)

// WorkerConfig is what a sync worker needs: its process's connections and
// session cache.
type WorkerConfig struct {
	Store     *store.Store
	Log       *eventlog.Log
	Watermark *eventlog.Watermark
	// Readers carries how far the worker has read each stream to the
	// api processes, whose writes wait for it.
	Readers *eventlog.Readers
	// Sessions is the process's session cache (shared with its api).
	Sessions *sessions.Cache
	Logger   *slog.Logger
	// ApplyTimeout bounds how long a request waits for the projection to
	// reach its token's positions; sessions.DefaultWait when 0.
	ApplyTimeout time.Duration
	// Metrics, when set, gets the worker's metrics.
	Metrics prometheus.Registerer
}

// Worker is a sync worker: the /sync handler (ServeHTTP, for mounting in
// an api; Routes, to serve alone) and the log consumer that tells it whom
// to wake (Run). cmd/strand and the test harness both build workers here.
type Worker struct {
	*Handler
	consumer *Consumer
}

// NewWorker builds a sync worker; it serves once Run is running.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Store == nil || cfg.Log == nil || cfg.Watermark == nil || cfg.Readers == nil || cfg.Sessions == nil {
		return nil, errors.New("syncstream: a worker needs a store, a log, a watermark, readers and a session cache")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = sessions.DefaultWait
	}
	n := NewNotifier(DefaultRecent)
	eph := NewEphemeral()
	h := &Handler{Store: cfg.Store, Log: cfg.Log, Watermark: cfg.Watermark, Notifier: n, Ephemeral: eph, Logger: cfg.Logger,
		Sessions: cfg.Sessions, ApplyTimeout: cfg.ApplyTimeout,
		respond: matrix.Responder{Logger: cfg.Logger, Unavailable: store.Unavailable}}
	c := &Consumer{Log: cfg.Log, Store: cfg.Store, Notifier: n, Ephemeral: eph, Readers: cfg.Readers, Logger: cfg.Logger,
		Watermark: cfg.Watermark}
	if cfg.Metrics != nil {
		if err := h.RegisterMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
		if err := c.RegisterMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	return &Worker{Handler: h, consumer: c}, nil
}

// Run reads the log for the worker until ctx ends or the log or the
// database fails.
func (w *Worker) Run(ctx context.Context) error { return w.consumer.Run(ctx) }

// Waiting is the number of long-polls waiting.
func (w *Worker) Waiting() int { return w.Notifier.Waiting() }
