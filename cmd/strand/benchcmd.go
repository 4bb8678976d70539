package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"strand/cmd/strand/bench"
)

// benchCommand is "strand bench": the load generator of issue 6, speaking
// only the public client-server API, so it can be pointed at any
// homeserver.
type benchCommand struct{}

func (c *benchCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	e := envFlags{fs}
	var hs, scenario, scale, pids string
	var jsonOut bool
	e.str(&hs, "hs", "STRAND_URL", "http://127.0.0.1:8008", "homeserver base URL")
	fs.StringVar(&scenario, "scenario", "all", "scenario to run: "+strings.Join(bench.Names(), ", ")+", or all (comma-separated for several)")
	fs.StringVar(&scale, "scale", "small", "tiny, small or medium (issue 6's numbers)")
	fs.StringVar(&pids, "pids", "", "comma-separated PIDs of the server processes: report their CPU seconds and RSS")
	fs.BoolVar(&jsonOut, "json", false, "print the report as JSON instead of tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	opts := bench.Options{HS: hs, Scale: scale, Progress: os.Stderr}
	for _, s := range strings.Split(scenario, ",") {
		if s = strings.TrimSpace(s); s != "" {
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
	rep, err := bench.Run(ctx, opts)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
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
