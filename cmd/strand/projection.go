package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"strand/projector/store"
)

// projectionCommand is `strand projection set-aside`: the operator's view
// of the records the projection could not apply (invariant 11).
type projectionCommand struct {
	cfg config
	out io.Writer // standard output unless a test sets it
}

const projectionUsage = `usage: strand projection set-aside [--json] [--database-url URL]

Lists the records of the log that the projection set aside because they can
never be applied (a record that cannot be decoded, a value PostgreSQL
refuses, a broken reference): stream, sequence, subject, record type, the
record's time on the log and the error. Replay sets aside the same records.
`

func (c *projectionCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "set-aside" {
		fmt.Fprint(os.Stderr, projectionUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("projection set-aside", flag.ContinueOnError)
	c.cfg.registerCommon(fs)
	asJSON := fs.Bool("json", false, "print one JSON object per record")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	s, err := store.Open(ctx, c.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer s.Close()
	recs, err := s.SetAsideRecords(ctx)
	if err != nil {
		return err
	}
	out := c.out
	if out == nil {
		out = os.Stdout
	}
	return printSetAside(out, recs, *asJSON)
}

func printSetAside(out io.Writer, recs []store.SetAsideRecord, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(out)
		for _, r := range recs {
			if err := enc.Encode(map[string]any{
				"stream": r.Stream, "seq": r.Seq, "subject": r.Subject, "record_type": r.RecordType,
				"room_id": r.RoomID, "logged_ts": r.LoggedTS, "error": r.Error,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	if len(recs) == 0 {
		_, err := fmt.Fprintln(out, "no records set aside")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSEQ\tTYPE\tSUBJECT\tLOGGED\tERROR")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", r.Stream, r.Seq, r.RecordType, r.Subject,
			time.UnixMilli(r.LoggedTS).UTC().Format(time.RFC3339), r.Error)
	}
	return tw.Flush()
}
