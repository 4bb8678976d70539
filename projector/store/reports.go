package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// Content reports: their projection and reads.

// ContentReport is one report as the projection keeps it.
type ContentReport struct {
	Seq          int64
	Reporter     string
	RoomID       string
	EventID      string
	TargetUserID string
	Reason       string
	Score        *int
	TS           int64
}

// AddReport stores a content report under its record's sequence.
func (t *Tx) AddReport(seq uint64, ts int64, r *eventlog.ContentReported) {
	t.queue(`INSERT INTO content_reports (seq, reporter, room_id, event_id, target_user_id, reason, score, ts)
		VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), NULLIF($5, ''), $6, $7, $8) ON CONFLICT (seq) DO NOTHING`,
		int64(seq), r.UserID, r.RoomID, r.EventID, r.TargetUserID, r.Reason, r.Score, ts)
}

// ContentReports returns the reports a user made, oldest first.
func (s *Store) ContentReports(ctx context.Context, reporter string) ([]ContentReport, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, reporter, COALESCE(room_id, ''), COALESCE(event_id, ''),
		COALESCE(target_user_id, ''), reason, score, ts FROM content_reports WHERE reporter = $1 ORDER BY seq`, reporter)
	if err != nil {
		return nil, fmt.Errorf("reports of %s: %w", reporter, err)
	}
	reports, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ContentReport])
	if err != nil {
		return nil, fmt.Errorf("reports of %s: %w", reporter, err)
	}
	return reports, nil
}
