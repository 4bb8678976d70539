package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// RelatedEvents returns the events relating to parent in roomID (only
// of relType and of eventType when those are set), in position order
// from from (exclusive going backwards, inclusive going forwards) up to
// to (0: no bound).
func (s *Store) RelatedEvents(ctx context.Context, roomID, parent, relType, eventType string, from int64, backwards bool, to int64, limit int) ([]StoredEvent, error) {
	cond := `r.room_id = $1 AND r.relates_to = $2 AND ($3 = '' OR r.rel_type = $3) AND ($4 = '' OR e.type = $4)`
	var q string
	if backwards {
		q = `SELECT ` + storedEventCols + ` FROM event_relations r JOIN events e ON e.event_id = r.event_id
			WHERE ` + cond + ` AND r.pos < $5 AND ($6::bigint = 0 OR r.pos >= $6) ORDER BY r.pos DESC LIMIT $7`
	} else {
		q = `SELECT ` + storedEventCols + ` FROM event_relations r JOIN events e ON e.event_id = r.event_id
			WHERE ` + cond + ` AND r.pos >= $5 AND ($6::bigint = 0 OR r.pos < $6) ORDER BY r.pos ASC LIMIT $7`
	}
	return s.stateQuery(ctx, q, roomID, parent, relType, eventType, from, to, limit)
}

// ThreadSummary is a thread root with what a client shows of its thread.
type ThreadSummary struct {
	RootID       string
	LatestPos    int64 // position of the newest reply
	Count        int
	Participated bool // the asking user sent the root or a reply
}

// Threads returns roomID's threads by latest reply, newest first, whose
// latest reply is before before (0: any); with onlyParticipated, only
// threads user took part in.
func (s *Store) Threads(ctx context.Context, roomID, user string, onlyParticipated bool, before int64, limit int) ([]ThreadSummary, error) {
	rows, err := s.pool.Query(ctx, `SELECT t.relates_to, t.latest, t.n, t.participated FROM (
			SELECT r.relates_to, max(r.pos) AS latest, count(*) AS n,
				bool_or(e.sender = $2) OR EXISTS (SELECT 1 FROM events root WHERE root.event_id = r.relates_to AND root.sender = $2) AS participated
			FROM event_relations r JOIN events e ON e.event_id = r.event_id
			WHERE r.room_id = $1 AND r.rel_type = 'm.thread'
			GROUP BY r.relates_to) t
		WHERE ($3::bigint = 0 OR t.latest < $3) AND (NOT $4 OR t.participated)
		ORDER BY t.latest DESC LIMIT $5`, roomID, user, before, onlyParticipated, limit)
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ThreadSummary])
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	return out, nil
}

// EventsByID returns the events with the given IDs that exist, by ID.
func (s *Store) EventsByID(ctx context.Context, ids []string) (map[string]StoredEvent, error) {
	evs, err := s.stateQuery(ctx, `SELECT `+storedEventCols+` FROM events e WHERE e.event_id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]StoredEvent, len(evs))
	for _, e := range evs {
		out[e.EventID] = e
	}
	return out, nil
}

// EventsAtPositions returns the events at the given positions, by position.
func (s *Store) EventsAtPositions(ctx context.Context, positions []int64) (map[int64]StoredEvent, error) {
	evs, err := s.stateQuery(ctx, `SELECT `+storedEventCols+` FROM events e WHERE e.pos = ANY($1)`, positions)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]StoredEvent, len(evs))
	for _, e := range evs {
		out[e.Pos] = e
	}
	return out, nil
}
