// Command strand is the Strand homeserver: one binary, several roles.
//
//	strand [serve]      api + projector + sync + pusher in one process (the default)
//	strand api          the client API (needs --nats-url)
//	strand projector    folds the log into Postgres (needs --nats-url)
//	strand sync         a /sync worker (needs --nats-url)
//	strand pusher       delivers push notifications to push gateways (needs --nats-url)
//	strand replay       rebuilds the projections from the log (--swap: under traffic)
//	strand migrate      applies database migrations and exits
//	strand projection   inspects the projection (set-aside records)
//	strand user         user administration: create, reset-password, deactivate
//	strand bench        the load generator (BENCHMARKS.md)
//
// The usage text below lists the same commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand, litestream-style: parse its flags, run.
type command interface {
	Run(ctx context.Context, args []string) error
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "strand:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	name := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	var cmd command
	switch name {
	case "serve":
		cmd = &roleCommand{roles: roleSet{api: true, projector: true, sync: true, pusher: true, appservice: true}, name: "serve"}
	case "api":
		cmd = &roleCommand{roles: roleSet{api: true}, name: "api"}
	case "projector":
		cmd = &roleCommand{roles: roleSet{projector: true}, name: "projector"}
	case "sync":
		cmd = &roleCommand{roles: roleSet{sync: true}, name: "sync"}
	case "appservice":
		cmd = &roleCommand{roles: roleSet{appservice: true}, name: "appservice"}
	case "pusher":
		cmd = &roleCommand{roles: roleSet{pusher: true}, name: "pusher"}
	case "replay":
		cmd = &replayCommand{}
	case "migrate":
		cmd = &migrateCommand{}
	case "projection":
		cmd = &projectionCommand{}
	case "user":
		cmd = &userCommand{}
	case "bench":
		cmd = &benchCommand{}
	case "help", "-h", "--help":
		fmt.Fprint(os.Stderr, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", name, usage)
	}
	return cmd.Run(ctx, args)
}

const usage = `usage: strand <command> [flags]

commands:
  serve       api + projector + sync + pusher in one process (default)
  api         the client-server API role
  projector   the projector role
  sync        a sync worker role
  appservice  delivers events to the application services (--appservice)
  pusher      the push notification role (delivery to push gateways)
  replay      rebuild the projections from the log into a database
  migrate     apply database migrations and exit
  projection  inspect the projection (set-aside: records it could not apply)
  user        user administration (create, reset-password, deactivate)
  bench       load generator over the client-server API (BENCHMARKS.md)

Run "strand <command> -h" for the flags of a command. Every flag can also be
set from the environment variable shown in its help.
`
