package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SearchHit is one event /search found.
type SearchHit struct {
	EventID string
	Pos     int64
	Rank    float64
}

// SearchQuery selects what Search looks through.
type SearchQuery struct {
	Term                string   // words, all of which must appear
	Rooms               []string // the rooms to search
	Keys                []string // content.body, content.name, content.topic
	Senders, NotSenders []string // nil: no restriction
	ByRank              bool     // best match first; else newest first
	Offset              int      // ByRank: results to skip
	Before              int64    // newest first: only events before this position (0: any)
	Limit               int
}

// Search finds events by their text, and counts all matches.
func (s *Store) Search(ctx context.Context, q SearchQuery) (hits []SearchHit, total int, err error) {
	order := "s.pos DESC"
	if q.ByRank {
		order = "rank DESC, s.pos DESC"
	}
	rows, err := s.pool.Query(ctx, `SELECT s.event_id, s.pos, ts_rank(s.vec, q)::float8 AS rank, count(*) OVER ()
		FROM event_search s, plainto_tsquery('simple', $1) q
		WHERE s.vec @@ q AND s.room_id = ANY($2) AND s.key = ANY($3)
		  AND ($4::text[] IS NULL OR s.sender = ANY($4)) AND NOT (s.sender = ANY(COALESCE($5::text[], '{}')))
		  AND ($6::bigint = 0 OR s.pos < $6)
		ORDER BY `+order+` OFFSET $7 LIMIT $8`,
		q.Term, q.Rooms, q.Keys, q.Senders, q.NotSenders, q.Before, q.Offset, q.Limit)
	if err != nil {
		return nil, 0, fmt.Errorf("search: %w", err)
	}
	var h SearchHit
	_, err = pgx.ForEachRow(rows, []any{&h.EventID, &h.Pos, &h.Rank, &total}, func() error {
		hits = append(hits, h)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("search: %w", err)
	}
	return hits, total, nil
}
