package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Event relations and threads: the relations index, and the reads of
// /relations and /threads.

// RelatedEvents returns the events relating to parent in roomID (only
// of relType and of eventType when those are set), in position order
// from from (exclusive going backwards, inclusive going forwards) up to
// to (0: no bound).
func (s *Store) RelatedEvents(ctx context.Context, roomID, parent, relType, eventType string, from int64, backwards bool, to int64, limit int) ([]StoredEvent, error) {
	// The room is checked on the relating event as well as on its row, so
	// no row can bring in an event of another room.
	cond := `r.room_id = $1 AND e.room_id = $1 AND r.relates_to = $2 AND ($3 = '' OR r.rel_type = $3) AND ($4 = '' OR e.type = $4)`
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

// visibleIn is the SQL condition that the event aliased e is one the user
// ($user) may see by the ranges $from, $to (Visibility.Ranges), or their
// own member event, as Visibility.CanSee decides one event at a time.
func visibleIn(e, user, from, to string) string {
	return `(EXISTS (SELECT 1 FROM unnest(` + from + `::bigint[], ` + to + `::bigint[]) AS vr(f, t)
			WHERE ` + e + `.pos >= vr.f AND (vr.t = 0 OR ` + e + `.pos < vr.t))
		OR (` + e + `.type = 'm.room.member' AND ` + e + `.state_key = ` + user + `))`
}

// Threads returns the threads of v's room that v's user may see, by
// latest reply, newest first, whose latest reply is before before (0:
// any); with onlyParticipated, only threads the user took part in. A
// thread's root and replies are events of the room (a relation naming an
// event of another room is no thread here), and its count and latest reply
// are of the replies the user may see.
func (s *Store) Threads(ctx context.Context, v *Visibility, onlyParticipated bool, before int64, limit int) ([]ThreadSummary, error) {
	vr := v.Ranges()
	rows, err := s.pool.Query(ctx, `SELECT t.relates_to, t.latest, t.n, t.participated FROM (
			SELECT r.relates_to, max(r.pos) AS latest, count(*) AS n,
				bool_or(e.sender = $2) OR bool_or(root.sender = $2) AS participated
			FROM event_relations r
			JOIN events e ON e.event_id = r.event_id AND e.room_id = r.room_id
			JOIN events root ON root.event_id = r.relates_to AND root.room_id = r.room_id
			WHERE r.room_id = $1 AND r.rel_type = 'm.thread'
				AND `+visibleIn("e", "$2", "$6", "$7")+` AND `+visibleIn("root", "$2", "$6", "$7")+`
			GROUP BY r.relates_to) t
		WHERE ($3::bigint = 0 OR t.latest < $3) AND (NOT $4 OR t.participated)
		ORDER BY t.latest DESC LIMIT $5`, v.RoomID, v.UserID, before, onlyParticipated, limit, vr.From, vr.To)
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ThreadSummary])
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	return out, nil
}

// AddRelation records that eventID relates to parent with relType, if
// parent is an event of the same room: a relation never links two rooms
// (invariant 12), whatever a client wrote into m.relates_to. The parent is
// always earlier on the log than the event relating to it (its ID is a
// hash of it), so whether it is there when the relation is applied is the
// same live and in replay.
func (t *Tx) AddRelation(eventID, roomID, parent, relType string, pos int64) {
	// Events of this batch not yet written are in t.events: a parent there
	// is checked here, one already written by the statement.
	for i := len(t.events) - 1; i >= 0; i-- {
		if e := t.events[i]; e.EventID == parent {
			if e.RoomID == roomID {
				t.queue(`INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, pos) VALUES ($1, $2, $3, $4, $5)
					ON CONFLICT DO NOTHING`, eventID, roomID, parent, relType, pos)
			}
			return
		}
	}
	t.queue(`INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, pos)
		SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM events WHERE event_id = $3 AND room_id = $2)
		ON CONFLICT DO NOTHING`, eventID, roomID, parent, relType, pos)
}

// DeleteRelation forgets a redacted event's relation.
func (t *Tx) DeleteRelation(eventID string) {
	t.queue("DELETE FROM event_relations WHERE event_id = $1", eventID)
}
