package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Dump returns a canonical text dump of every projected table: tables in
// name order, rows as JSON in a total order. Two databases built from the
// same log must dump identically (invariant 2); schema_migrations is left
// out because it records when, not what, and projector_lane_complete
// because it records when idle lanes checked the stream.
func (s *Store) Dump(ctx context.Context) (string, error) {
	rows, err := s.pool.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
			AND table_name NOT IN ('schema_migrations', 'projector_lane_complete')
		ORDER BY table_name`)
	if err != nil {
		return "", fmt.Errorf("dump: list tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("dump: list tables: %w", err)
	}
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "== %s\n", t)
		q := fmt.Sprintf("SELECT row_to_json(t)::text FROM %s t ORDER BY row_to_json(t)::text", pgx.Identifier{t}.Sanitize())
		rows, err := s.pool.Query(ctx, q)
		if err != nil {
			return "", fmt.Errorf("dump %s: %w", t, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return "", fmt.Errorf("dump %s: %w", t, err)
		}
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String(), nil
}
