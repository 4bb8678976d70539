package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"strand/projector"
)

// replayCommand rebuilds the projections from the log into a database.
type replayCommand struct{ cfg config }

func (c *replayCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	c.cfg.registerCommon(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger, err := c.cfg.logger()
	if err != nil {
		return err
	}
	d, err := openDeps(ctx, &c.cfg, logger, true)
	if err != nil {
		return err
	}
	defer d.close()
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
