package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"strand/cmd/strand/bench"
	"strand/projector"
	"strand/projector/store"
)

// replayBench is the bench's replay scenario: rebuild the projection of a log
// into an empty database and report records per second. Unlike the other
// scenarios it does not speak the client-server API (a rebuild has no
// client side), so it lives here, next to "strand replay", and runs only
// when named: it needs the log (--nats-url, or the embedded store in
// --data-dir while no server uses it) and a database to write into.
type replayBench struct {
	natsURL, dataDir string
	replicas         int
	into, compare    string
}

// run replays and checks: the target must be empty, and with compare set
// (the live database of a server that is stopped, or idle, so that its
// projection is at the log's head) the result must equal it.
func (b *replayBench) run(ctx context.Context) *bench.Result {
	res := &bench.Result{Scenario: "replay", Params: fmt.Sprintf("rebuild the projection of the whole log into an empty database, %d ROOMS workers", projector.FreshWorkers)}
	fail := func(format string, args ...any) *bench.Result {
		res.Failures = append(res.Failures, fmt.Sprintf(format, args...))
		res.FailureCount++
		return res
	}
	if b.into == "" {
		return fail("--replay-database-url is required: the empty database to rebuild into")
	}
	t0 := time.Now()
	cfg := config{NATSURL: b.natsURL, DataDir: b.dataDir, DatabaseURL: b.into, NATSSync: "always", Replicas: b.replicas}
	d, err := openDeps(ctx, &cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), true)
	if err != nil {
		return fail("open the log and the database: %v", err)
	}
	defer d.close()
	var records uint64
	for _, s := range projector.Streams {
		pos, err := d.store.Position(ctx, s)
		if err != nil {
			return fail("read %s position: %v", s, err)
		}
		if pos > 0 {
			return fail("the database at --replay-database-url already holds %s up to %d; replay needs an empty one", s, pos)
		}
		head, err := d.log.Head(ctx, s)
		if err != nil {
			return fail("read %s head: %v", s, err)
		}
		records += head
	}
	cpu0, _ := bench.CPUSeconds(os.Getpid())
	start := time.Now()
	rep := newProgressReporter(os.Stderr)
	p := &projector.Projector{Log: d.log, Store: d.store, MaxBatch: 2048}
	if err := p.Replay(ctx, rep.report); err != nil {
		return fail("replay: %v", err)
	}
	rep.finish()
	elapsed := time.Since(start)
	cpu1, _ := bench.CPUSeconds(os.Getpid())
	cpu := cpu1 - cpu0
	res.Metrics = append(res.Metrics,
		bench.Metric{Name: "records", Value: float64(records), Unit: ""},
		bench.Metric{Name: "replay time", Value: elapsed.Seconds(), Unit: "s"},
		bench.Metric{Name: "records/s", Value: float64(records) / max(elapsed.Seconds(), 1e-9), Unit: "rec/s"},
		bench.Metric{Name: "replay process cpu", Value: cpu, Unit: "s"},
	)
	if b.compare != "" {
		if err := compareProjections(ctx, d.store, b.compare); err != nil {
			fail("%v", err)
		}
	}
	res.Seconds = time.Since(t0).Seconds()
	return res
}

// compareProjections checks that the rebuilt projection equals the one at
// liveURL, table by table (invariant 2). The dumps are compared by digest,
// written row by row: a log of a million records dumps to gigabytes.
func compareProjections(ctx context.Context, rebuilt *store.Store, liveURL string) error {
	live, err := store.Open(ctx, liveURL)
	if err != nil {
		return fmt.Errorf("open the live database: %w", err)
	}
	defer live.Close()
	var a, b [sha256.Size]byte
	g, gctx := errgroup.WithContext(ctx)
	for _, x := range []struct {
		st  *store.Store
		sum *[sha256.Size]byte
	}{{live, &a}, {rebuilt, &b}} {
		g.Go(func() error {
			h := sha256.New()
			if err := x.st.DumpTo(gctx, h); err != nil {
				return err
			}
			h.Sum(x.sum[:0])
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if a != b {
		return errors.New("the rebuilt projection differs from the live one (was a server still writing?)")
	}
	return nil
}
