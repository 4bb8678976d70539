package store

import (
	"context"
	"fmt"
	"strings"

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
	// Visible is, per room of Rooms, where the caller may see events
	// (Visibility.Ranges): results and the count hold only those.
	Visible map[string]PosRanges
}

// Search finds events by their text that the caller may see, and counts
// all such matches.
func (s *Store) Search(ctx context.Context, q SearchQuery) (hits []SearchHit, total int, err error) {
	order := "s.pos DESC"
	if q.ByRank {
		order = "rank DESC, s.pos DESC"
	}
	// Visibility goes into the query, not after it, so that the count and
	// the pages are of visible events only (a count of hidden matches
	// tells how much was said where the caller may not look). event_search
	// holds no member events, so CanSee's exception for the user's own
	// member events has nothing to add here.
	var vRooms []string
	var vFrom, vTo []int64
	for _, room := range q.Rooms {
		r := q.Visible[room]
		for i := range r.From {
			vRooms, vFrom, vTo = append(vRooms, room), append(vFrom, r.From[i]), append(vTo, r.To[i])
		}
	}
	// count is of every match, not of those past the page's point: it is
	// the total the spec asks for, the same on every page. A page past
	// the last match still yields the count row (with no hit).
	order = strings.ReplaceAll(order, "s.pos", "m.pos")
	rows, err := s.pool.Query(ctx, `WITH m AS (
		SELECT s.event_id, s.pos, ts_rank(s.vec, q)::float8 AS rank
		FROM event_search s, plainto_tsquery('simple', $1) q
		WHERE s.vec @@ q AND s.room_id = ANY($2) AND s.key = ANY($3)
		  AND ($4::text[] IS NULL OR s.sender = ANY($4)) AND NOT (s.sender = ANY(COALESCE($5::text[], '{}')))
		  AND EXISTS (SELECT 1 FROM unnest($9::text[], $10::bigint[], $11::bigint[]) AS vr(room_id, f, t)
			WHERE vr.room_id = s.room_id AND s.pos >= vr.f AND (vr.t = 0 OR s.pos < vr.t)))
		SELECT p.event_id, p.pos, p.rank, c.total
		FROM (SELECT count(*)::bigint AS total FROM m) c
		LEFT JOIN LATERAL (SELECT m.event_id, m.pos, m.rank FROM m WHERE $6::bigint = 0 OR m.pos < $6
			ORDER BY `+order+` OFFSET $7 LIMIT $8) p ON true`,
		q.Term, q.Rooms, q.Keys, q.Senders, q.NotSenders, q.Before, q.Offset, q.Limit, vRooms, vFrom, vTo)
	if err != nil {
		return nil, 0, fmt.Errorf("search: %w", err)
	}
	var (
		id   *string
		pos  *int64
		rank *float64
		n    int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &pos, &rank, &n}, func() error {
		total = int(n)
		if id != nil {
			hits = append(hits, SearchHit{EventID: *id, Pos: *pos, Rank: *rank})
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("search: %w", err)
	}
	return hits, total, nil
}

// searchRow is an event's searchable text, waiting for the batch's one
// insert (flushSearch).
type searchRow struct {
	eventID, roomID, sender, key, text string
	pos                                int64
}

// AddSearchText indexes an event's searchable text.
func (t *Tx) AddSearchText(eventID, roomID, sender, key, text string, pos int64) {
	t.search = append(t.search, searchRow{eventID: eventID, roomID: roomID, sender: sender, key: key, text: text, pos: pos})
}

// DeleteSearchText forgets a redacted event's text.
func (t *Tx) DeleteSearchText(eventID string) {
	t.flushSearch() // the event may be one of this batch's
	t.queue("DELETE FROM event_search WHERE event_id = $1", eventID)
}

// flushSearch queues the texts added so far as one insert.
func (t *Tx) flushSearch() {
	n := len(t.search)
	if n == 0 {
		return
	}
	ids, rooms, senders, keys, texts := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	pos := make([]int64, n)
	for i, r := range t.search {
		ids[i], rooms[i], senders[i], keys[i], texts[i], pos[i] = r.eventID, r.roomID, r.sender, r.key, r.text, r.pos
	}
	t.queue(`INSERT INTO event_search (event_id, room_id, pos, sender, key, vec)
		SELECT id, r, p, s, k, to_tsvector('simple', tx)
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS x(id, r, p, s, k, tx)
		ON CONFLICT DO NOTHING`, ids, rooms, pos, senders, keys, texts)
	t.search = t.search[:0]
}
