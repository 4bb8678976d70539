package store

import (
	"context"
	"fmt"

	"strand/eventlog/matrix"
)

// GET /notifications: the events that notified the user, newest first,
// found by evaluating the user's rules backwards over the events of the
// rooms they are joined to (since their join), like the counts. Nothing
// is stored per notification, so the list follows the user's current
// rules and rooms: a room they left no longer lists its notifications.

// MaxNotificationsExamined bounds how many events one request evaluates;
// a page may then hold fewer than its limit, with a token to go on.
const MaxNotificationsExamined = 200

// notificationPositionsSQL selects the positions to examine: the newest
// $5 events of rooms $1 (each after its join position in $2) below
// position $3 not sent by $4 nor redacted, newest first.
//
// One probe per room finds its newest such event ("latest"). Only the $5
// rooms with the newest latest can hold any of the answer: a room ranked
// below them has $5 rooms each with an event newer than all of its own.
// The room ranked k holds at most $5-k+1 of it (the k-1 rooms above each
// have one newer than all of its events), and when $5 rooms have one,
// the answer is no older than the oldest of their latest ("floor"). So
// the rows read are one probe per room plus at most $5($5+1)/2, where
// the newest $5 per room, then the newest of those overall, read up to
// $5 per room: 2,000,000 rows for 10,000 rooms.
const notificationPositionsSQL = `WITH latest AS (
		SELECT r.room_id, r.lo, l.pos FROM unnest($1::text[], $2::bigint[]) AS r(room_id, lo)
		CROSS JOIN LATERAL (SELECT e.pos FROM events e WHERE e.room_id = r.room_id AND e.pos > r.lo AND e.pos < $3
			AND e.sender <> $4 AND e.redacted_because IS NULL ORDER BY e.pos DESC LIMIT 1) l
	), top AS (
		SELECT room_id, lo, row_number() OVER (ORDER BY pos DESC) AS rank, count(*) OVER () AS n, min(pos) OVER () AS least
		FROM (SELECT * FROM latest ORDER BY pos DESC LIMIT $5) t
	)
	SELECT p.pos FROM top
	CROSS JOIN LATERAL (SELECT e.pos FROM events e WHERE e.room_id = top.room_id
		AND e.pos > top.lo AND e.pos >= CASE WHEN top.n = $5 THEN top.least ELSE 0 END AND e.pos < $3
		AND e.sender <> $4 AND e.redacted_because IS NULL ORDER BY e.pos DESC LIMIT $5 - top.rank + 1) p
	ORDER BY p.pos DESC LIMIT $5`

// Notification is one entry of GET /notifications.
type Notification struct {
	Event    StoredEvent
	Decision matrix.PushDecision
	Read     bool
}

// Notifications returns up to limit notifications of the user older than
// position before (0: the newest), only highlights if onlyHighlight, and
// the position to continue from (0 when there is nothing older).
func (s *Store) Notifications(ctx context.Context, userID string, rules *matrix.PushRuleset, before int64, limit int, onlyHighlight bool) ([]Notification, int64, error) {
	var out []Notification
	var next int64
	err := s.SyncSnapshot(ctx, func(t *SyncTx) error {
		hi := int64(t.Pos.Rooms+1) * 1024
		if before > 0 && before < hi {
			hi = before
		}
		ids, err := joinedRooms(ctx, t.tx, userID)
		if err != nil {
			return err
		}
		rooms, err := pushRooms(ctx, t.tx, t.pushEvents, userID, ids)
		if err != nil || len(rooms) == 0 {
			return err
		}
		ids, joins := ids[:0], make([]int64, 0, len(rooms))
		for id, u := range rooms {
			ids, joins = append(ids, id), append(joins, u.JoinPos)
		}
		rows, err := t.tx.Query(ctx, `SELECT `+storedEventCols+`, `+threadOfSQL+`
			FROM (`+notificationPositionsSQL+`) c0
			JOIN events e ON e.pos = c0.pos
			CROSS JOIN LATERAL (SELECT e.event_id, e.room_id) c
			`+threadJoinsSQL+`
			ORDER BY e.pos DESC`, ids, joins, hi, userID, MaxNotificationsExamined)
		if err != nil {
			return fmt.Errorf("notifications of %s: %w", userID, err)
		}
		defer rows.Close()
		examined := 0
		for rows.Next() {
			var e StoredEvent
			var thread string
			if err := rows.Scan(&e.Pos, &e.EventID, &e.RoomID, &e.Type, &e.StateKey, &e.Sender, &e.OriginServerTS, &e.Client,
				&e.RedactedBecause, &e.TxnDevice, &e.TxnID, &e.PrevPos, &e.PrevClient, &thread); err != nil {
				return fmt.Errorf("notifications of %s: %w", userID, err)
			}
			examined++
			next = e.Pos
			u := rooms[e.RoomID]
			ev, err := matrix.NewPushEvent(e.Client)
			if u == nil || err != nil {
				continue
			}
			d := rules.Evaluate(ev, u.Room.Context(userID, u.DisplayName, e.Sender))
			if !d.Notify || (onlyHighlight && !d.Highlight) {
				continue
			}
			out = append(out, Notification{Event: e, Decision: d, Read: e.Pos <= u.ReadThrough(thread)})
			if len(out) == limit {
				return rows.Err()
			}
		}
		if examined < MaxNotificationsExamined {
			next = 0 // everything older was examined
		}
		return rows.Err()
	})
	return out, next, err
}
