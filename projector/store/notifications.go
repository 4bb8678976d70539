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
		// Positions first (per room the newest MaxNotificationsExamined,
		// then the newest of those overall), then the events: so no room
		// has more than that many rows read, however many rooms.
		rows, err := t.tx.Query(ctx, `SELECT `+storedEventCols+`, `+threadOfSQL+`
			FROM (SELECT p.pos FROM unnest($1::text[], $2::bigint[]) AS r(room_id, lo)
				CROSS JOIN LATERAL (SELECT e.pos FROM events e WHERE e.room_id = r.room_id AND e.pos > r.lo AND e.pos < $3
					AND e.sender <> $4 AND e.redacted_because IS NULL ORDER BY e.pos DESC LIMIT $5) p
				ORDER BY p.pos DESC LIMIT $5) c0
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
