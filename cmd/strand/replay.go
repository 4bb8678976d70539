package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"strand/projector"
	"strand/projector/store"
)

// replayCommand rebuilds the projections from the log into a database.
type replayCommand struct {
	cfg      config
	swap     bool
	keepOld  bool
	maxPause time.Duration
}

// rebuildSchema is the schema "replay --swap" builds in before the swap.
const rebuildSchema = "strand_rebuild"

const replayUsage = `usage: strand replay [flags]

Rebuilds the projections from the log (--nats-url, or the embedded store in
--data-dir while no server uses it), showing progress.

Without --swap it replays into --database-url, meant to be an empty
database; a database that already holds positions is continued from them.

With --swap it rebuilds the projection of a database that servers are
using, without stopping them: it replays into a fresh schema
` + rebuildSchema + ` of --database-url (dropped first if an earlier run left it),
follows the live projection until it is close, then pauses the live
projectors (at most --max-pause), applies the last records so that both
are at the same positions, and swaps the schemas in one transaction. The
servers go on with the rebuilt tables at once. The replaced schema is
renamed strand_old_<UTC time> and dropped, unless --keep-old. Run it as the
database role the servers use, and with the same Strand version.

flags:
`

func (c *replayCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	c.cfg.registerCommon(fs)
	fs.BoolVar(&c.swap, "swap", false, "rebuild into a fresh schema and swap it for the live one while servers keep serving")
	fs.BoolVar(&c.keepOld, "keep-old", false, "with --swap: keep the replaced schema as strand_old_<UTC time> instead of dropping it")
	fs.DurationVar(&c.maxPause, "max-pause", 2*time.Second, "with --swap: the longest the swap may hold back the live projectors (writes wait meanwhile)")
	fs.IntVar(&projector.FreshWorkers, "workers", projector.FreshWorkers, "transactions applying ROOMS at once when the projection is built fresh (an empty database, or --swap)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), replayUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.keepOld && !c.swap {
		return errors.New("--keep-old needs --swap")
	}
	if c.maxPause <= 0 {
		return errors.New("--max-pause must be positive")
	}
	if projector.FreshWorkers < 1 || projector.FreshWorkers > 64 {
		return errors.New("--workers must be between 1 and 64")
	}
	logger, err := c.cfg.logger()
	if err != nil {
		return err
	}
	if c.cfg.PprofListen != "" {
		// Replay is the batch job most worth profiling.
		ln, err := net.Listen("tcp", c.cfg.PprofListen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", c.cfg.PprofListen, err)
		}
		defer ln.Close()
		go func() { _ = http.Serve(ln, pprofHandler()) }()
	}
	d, err := openDeps(ctx, &c.cfg, logger, true)
	if err != nil {
		return err
	}
	defer d.close()
	if c.swap {
		return c.rebuildAndSwap(ctx, d, logger)
	}
	for _, s := range projector.Streams {
		if pos, err := d.store.Position(ctx, s); err != nil {
			return err
		} else if pos > 0 {
			fmt.Fprintf(os.Stderr, "%s is already applied up to %d in this database; continuing from there\n", s, pos)
		}
	}
	start := time.Now()
	rep := newProgressReporter(os.Stderr)
	p := &projector.Projector{Log: d.log, Store: d.store, Logger: nil, MaxBatch: 2048}
	if err := p.Replay(ctx, rep.report); err != nil {
		return err
	}
	rep.finish()
	fmt.Fprintf(os.Stderr, "replay done in %s from %s into %s\n", time.Since(start).Round(time.Millisecond), d.natsDesc, redactURL(c.cfg.DatabaseURL))
	return nil
}

// rebuildAndSwap is "replay --swap".
func (c *replayCommand) rebuildAndSwap(ctx context.Context, d *deps, logger *slog.Logger) error {
	// Two rebuilds at once would drop each other's schema.
	lease, ok, err := d.store.TryLease(ctx, "replay-swap")
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("another replay --swap is running on this database")
	}
	defer lease.Release(ctx)
	start := time.Now()
	fresh, err := store.OpenFresh(ctx, c.cfg.DatabaseURL, rebuildSchema)
	if err != nil {
		return err
	}
	old := "strand_old_" + time.Now().UTC().Format("20060102_150405")
	rep := newProgressReporter(os.Stderr)
	r := &projector.Rebuild{Log: d.log, Live: d.store, Fresh: fresh, Progress: rep.report, Logger: logger,
		MaxPause: c.maxPause, OldSchema: old}
	pos, err := r.Run(ctx)
	rep.finish()
	fresh.Close()
	if err != nil {
		// Nothing was swapped (or, if the commit's answer was lost, the
		// rebuild schema is live under its new name and this is a no-op).
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := d.store.DropSchema(dctx, rebuildSchema); derr != nil {
			logger.Warn("drop the unfinished rebuild", "schema", rebuildSchema, "err", derr)
		}
		return err
	}
	if c.keepOld {
		fmt.Fprintf(os.Stderr, "the replaced projection is kept in schema %s\n", old)
	} else if err := d.store.DropSchema(ctx, old); err != nil {
		return fmt.Errorf("the rebuilt projection is live; dropping the replaced one failed: %w", err)
	}
	fmt.Fprintf(os.Stderr, "rebuilt and swapped in %s at %v from %s into %s\n", time.Since(start).Round(time.Millisecond),
		pos, d.natsDesc, redactURL(c.cfg.DatabaseURL))
	return nil
}

// progressReporter shows replay progress: a bar with rate and ETA on a
// terminal, plain periodic lines otherwise (logs, CI).
type progressReporter struct {
	w        io.Writer
	tty      bool
	bar      *progressbar.ProgressBar
	stream   string
	lastLine time.Time
}

func newProgressReporter(f *os.File) *progressReporter {
	return &progressReporter{w: f, tty: term.IsTerminal(int(f.Fd()))}
}

func (r *progressReporter) report(stream string, applied, head uint64, elapsed time.Duration) {
	if r.tty {
		if stream != r.stream {
			r.finish()
			r.bar = progressbar.NewOptions64(int64(head),
				progressbar.OptionSetWriter(r.w),
				progressbar.OptionSetDescription("replay "+stream),
				progressbar.OptionShowCount(),
				progressbar.OptionShowIts(),
				progressbar.OptionSetItsString("events"),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetPredictTime(true),
			)
			r.stream = stream
		}
		_ = r.bar.Set64(int64(applied))
		return
	}
	r.stream = stream
	if time.Since(r.lastLine) < 2*time.Second && applied < head {
		return
	}
	r.lastLine = time.Now()
	rate := float64(applied) / max(elapsed.Seconds(), 1e-9)
	eta := time.Duration(float64(head-min(applied, head)) / max(rate, 1e-9) * float64(time.Second))
	fmt.Fprintf(r.w, "replay %s: %d/%d (%.1f%%) %.0f events/s ETA %s\n",
		stream, applied, head, 100*float64(applied)/float64(max(head, 1)), rate, eta.Round(time.Second))
}

func (r *progressReporter) finish() {
	if r.bar != nil {
		_ = r.bar.Finish()
		fmt.Fprintln(r.w)
		r.bar = nil
	}
}
