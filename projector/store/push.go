package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// What push delivery (api/pushgateway) reads from the projection: the
// events of a room record, the pushers of the users an event may notify,
// the room's names, and unread counts.

// RecordEvent is one event of a room record, as push delivery needs it.
type RecordEvent struct {
	Pos      int64
	EventID  string
	RoomID   string
	Type     string
	StateKey *string
	Sender   string
	// Client is the event as clients see it.
	Client json.RawMessage
}

// RecordEvents returns the events the room record at seq holds, in order
// (none when the projection set the record aside or it held no events).
func (s *Store) RecordEvents(ctx context.Context, seq uint64) ([]RecordEvent, error) {
	lo := eventlog.EventPos(seq, 0)
	rows, err := s.pool.Query(ctx, `SELECT pos, event_id, room_id, type, state_key, sender, client FROM events
		WHERE pos >= $1 AND pos < $2 ORDER BY pos`, lo, lo+eventlog.MaxEventsPerRecord)
	if err != nil {
		return nil, fmt.Errorf("push events of record %d: %w", seq, err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RecordEvent, error) {
		var e RecordEvent
		var client []byte
		err := row.Scan(&e.Pos, &e.EventID, &e.RoomID, &e.Type, &e.StateKey, &e.Sender, &client)
		e.Client = client
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("push events of record %d: %w", seq, err)
	}
	return evs, nil
}

// AnyHTTPPushers reports whether any user has an http pusher: without
// one, no event can be pushed, and push delivery skips its per-event
// reads. The answer is as of the query (a pusher set after it is not seen).
func (s *Store) AnyHTTPPushers(ctx context.Context) (bool, error) {
	var any bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pushers WHERE kind = 'http')`).Scan(&any); err != nil {
		return false, fmt.Errorf("any http pushers: %w", err)
	}
	return any, nil
}

// PushTarget is one http pusher of a user an event may notify.
type PushTarget struct {
	UserID   string
	AppID    string
	Pushkey  string
	DeviceID string
	Data     json.RawMessage
	// TS is when the pusher was last set, in milliseconds.
	TS int64
	// DisplayName is the user's display name in the room now.
	DisplayName string
	// Rules is the user's m.push_rules account data (nil when they have
	// none) and RulesSeq the stream sequence that set it: a parsed
	// ruleset can be cached until RulesSeq changes.
	Rules    json.RawMessage
	RulesSeq int64
}

// PushTargets returns, in one query, the http pushers (with what push
// rule evaluation needs of their users) of the users who
// are joined to roomID as of the event at pos (its own effect included),
// and of the users in also (an invitee, whom the invite itself may
// notify), leaving out except (the event's sender). Users without a
// pusher are not listed.
func (s *Store) PushTargets(ctx context.Context, roomID string, pos int64, except string, also []string) ([]PushTarget, error) {
	if also == nil {
		also = []string{}
	}
	rows, err := s.pool.Query(ctx, `SELECT p.user_id, p.app_id, p.pushkey, p.device_id, p.data, p.ts,
			(SELECT `+memberDisplayNameSQL+` FROM room_state st
				JOIN events e ON e.event_id = st.event_id
				WHERE st.room_id = $1 AND st.type = 'm.room.member' AND st.state_key = p.user_id AND st.to_pos IS NULL),
			a.content, COALESCE(a.stream_seq, 0)
		FROM pushers p
		LEFT JOIN account_data a ON a.user_id = p.user_id AND a.room_id = '' AND a.type = 'm.push_rules'
		WHERE p.kind = 'http' AND p.user_id <> $3 AND (p.user_id = ANY($4) OR EXISTS (
			SELECT 1 FROM room_state s WHERE s.room_id = $1 AND s.type = 'm.room.member' AND s.state_key = p.user_id
				AND s.membership = 'join' AND s.from_pos <= $2 AND (s.to_pos IS NULL OR s.to_pos > $2)))
		ORDER BY p.user_id, p.app_id, p.pushkey`, roomID, pos, except, also)
	if err != nil {
		return nil, fmt.Errorf("push targets in %s: %w", roomID, err)
	}
	ts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (PushTarget, error) {
		var t PushTarget
		var data, rules []byte
		var display *string
		err := row.Scan(&t.UserID, &t.AppID, &t.Pushkey, &t.DeviceID, &data, &t.TS, &display, &rules, &t.RulesSeq)
		t.Data, t.Rules = data, rules
		if display != nil {
			t.DisplayName = *display
		}
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("push targets in %s: %w", roomID, err)
	}
	return ts, nil
}

// NotifyRoom is what a notification says about its room and sender.
type NotifyRoom struct {
	Name              string
	CanonicalAlias    string
	SenderDisplayName string
}

// NotifyRoomInfo returns the room's current name and canonical alias,
// and the sender's current display name in it.
func (s *Store) NotifyRoomInfo(ctx context.Context, roomID, sender string) (NotifyRoom, error) {
	var r NotifyRoom
	var name, alias, display *string
	err := s.pool.QueryRow(ctx, `SELECT r.name, r.canonical_alias,
			(SELECT `+memberDisplayNameSQL+` FROM room_state st
				JOIN events e ON e.event_id = st.event_id
				WHERE st.room_id = r.room_id AND st.type = 'm.room.member' AND st.state_key = $2 AND st.to_pos IS NULL)
		FROM rooms r WHERE r.room_id = $1`, roomID, sender).Scan(&name, &alias, &display)
	if isNoRows(err) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("push room info of %s: %w", roomID, err)
	}
	if name != nil {
		r.Name = *name
	}
	if alias != nil {
		r.CanonicalAlias = *alias
	}
	if display != nil {
		r.SenderDisplayName = *display
	}
	return r, nil
}
