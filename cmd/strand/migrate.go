package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"strand/projector/store"
)

// migrateCommand applies pending migrations and exits.
type migrateCommand struct{ cfg config }

func (c *migrateCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	c.cfg.registerCommon(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s, err := store.Open(ctx, c.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	s.Close()
	fmt.Fprintln(os.Stderr, "database is migrated:", redactURL(c.cfg.DatabaseURL))
	return nil
}
