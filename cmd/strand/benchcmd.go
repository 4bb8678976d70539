package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"strand/cmd/strand/bench"
	"strand/projector"
)

// benchCommand is "strand bench": the load generator of BENCHMARKS.md, speaking
// only the public client-server API, so it can be pointed at any
// homeserver.
type benchCommand struct{}

func (c *benchCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	e := envFlags{fs}
	var hs, scenario, scale, pids string
	var jsonOut bool
	e.str(&hs, "hs", "STRAND_URL", "http://127.0.0.1:8008", "homeserver base URL")
	fs.StringVar(&scenario, "scenario", "all", "scenario to run: "+strings.Join(bench.Names(), ", ")+", or all (comma-separated for several); replay and push run only when named")
	fs.StringVar(&scale, "scale", "small", "tiny, small or medium (the scale of BENCHMARKS.md's targets)")
	fs.StringVar(&pids, "pids", "", "comma-separated PIDs of the server processes: report their CPU seconds and RSS")
	fs.BoolVar(&jsonOut, "json", false, "print the report as JSON instead of tables")
	var pushListen string
	fs.StringVar(&pushListen, "push-listen", "127.0.0.1:0", "push scenario: address of the bench's push gateway (the server's pusher role must reach it: --outbound-allow)")
	var rb replayBench
	e.str(&rb.natsURL, "nats-url", "NATS_URL", "", "replay scenario: the log's NATS URL (empty: the embedded store in --data-dir, while no server uses it)")
	e.str(&rb.dataDir, "data-dir", "STRAND_DATA_DIR", "./data", "replay scenario: the data directory holding the embedded JetStream store")
	e.int(&rb.replicas, "replicas", "STRAND_REPLICAS", 1, "replay scenario: the streams' replicas (3 on a NATS cluster)")
	fs.StringVar(&rb.into, "replay-database-url", "", "replay scenario: an empty database to rebuild the projection into")
	fs.StringVar(&rb.compare, "compare-database-url", "", "replay scenario: the live database to compare the rebuild with (its servers stopped or idle)")
	fs.IntVar(&projector.FreshWorkers, "replay-workers", projector.FreshWorkers, "replay scenario: transactions applying ROOMS at once")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	if projector.FreshWorkers < 1 || projector.FreshWorkers > 64 {
		return errors.New("bench: --replay-workers must be between 1 and 64")
	}
	opts := bench.Options{HS: hs, Scale: scale, Progress: os.Stderr, PushListen: pushListen}
	withReplay := false
	for _, s := range strings.Split(scenario, ",") {
		switch s = strings.TrimSpace(s); s {
		case "":
		case "replay":
			withReplay = true
		default:
			opts.Scenarios = append(opts.Scenarios, s)
		}
	}
	for _, s := range strings.Split(pids, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		pid, err := strconv.Atoi(s)
		if err != nil || pid <= 0 {
			return fmt.Errorf("bench: --pids: %q is not a PID", s)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid)); err != nil {
			return fmt.Errorf("bench: --pids: no process %d: %v", pid, err)
		}
		opts.PIDs = append(opts.PIDs, pid)
	}
	rep := &bench.Report{HS: hs, Scale: scale, Date: time.Now().UTC(), PIDs: opts.PIDs}
	if len(opts.Scenarios) > 0 || !withReplay {
		var err error
		if rep, err = bench.Run(ctx, opts); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	if withReplay {
		rep.Scenarios = append(rep.Scenarios, rb.run(ctx))
		rep.AllOK = rep.OK()
	}
	var err error
	if jsonOut {
		err = rep.WriteJSON(os.Stdout)
	} else {
		err = rep.WriteText(os.Stdout)
	}
	if err != nil {
		return err
	}
	if !rep.OK() {
		return errors.New("bench: correctness failures in " + strings.Join(rep.Failed(), ", "))
	}
	return nil
}
