package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"strand/eventlog/matrix"
)

// Notification counts from push rules, evaluated when they are read.
//
// Counts are not projected: a user's push rules are on the ACCOUNTS
// stream and room events on ROOMS, which the projector applies
// independently, so a count fixed at projection time would depend on how
// the two lanes interleaved (and a replay would not reproduce it); and
// rows per (member, event) would cost a 10,000-member room 10,000 writes
// per message. Instead the events after a user's read position are
// evaluated against their current rules and the room's current state
// whenever counts are read, and the sync worker's window advances them
// per new event (syncstream). Everything they depend on is projected, so
// they are the same on every worker and after a replay.
//
// The work is bounded per room: counting examines the first
// MaxUnreadExamined events from others after the user's read position
// (their unthreaded receipt or their join, whichever is later), and
// beyond those only events that mention the user in m.mentions (at most
// MaxUnreadMentions more). So a room with more unread traffic than that
// stops counting plain messages — its counts are a floor — but still
// counts mentions. Thread receipts are applied to the examined events.

// MaxUnreadExamined is how many events after the read position are
// evaluated per room.
const MaxUnreadExamined = 500

// MaxUnreadMentions is how many events mentioning the user past
// MaxUnreadExamined are evaluated per room.
const MaxUnreadMentions = 100

// NotificationCounts are a room's or a thread's notification_count and
// highlight_count.
type NotificationCounts struct {
	Notifications int
	Highlights    int
}

// RoomUnread is one room's counts for one user: the main timeline (thread
// roots included) and each thread with a non-zero count, by root.
type RoomUnread struct {
	Main    NotificationCounts
	Threads map[string]NotificationCounts
}

// Total is the room's counts over the main timeline and every thread:
// what sync reports without MSC3773's unread_thread_notifications.
func (u RoomUnread) Total() NotificationCounts {
	t := u.Main
	for _, c := range u.Threads {
		t.Notifications += c.Notifications
		t.Highlights += c.Highlights
	}
	return t
}

// PushRoom is what push conditions read of a room, for any recipient:
// its joined member count and its create and power levels events.
// Immutable; share it.
type PushRoom struct {
	RoomID      string
	MemberCount int
	state       matrix.State // create and power_levels only
}

// Context is the condition context for one recipient and one event
// sender.
func (p *PushRoom) Context(userID, displayName, sender string) matrix.PushConditionContext {
	return matrix.PushConditionContext{
		UserID: userID, DisplayName: displayName, MemberCount: p.MemberCount,
		SenderPowerLevel:   p.state.UserPowerLevel(matrix.UserID(sender)),
		NotificationLevels: p.state.PowerLevels().Notifications,
	}
}

// UnreadRoom is one user's counting state in one room: where they have
// read to and what has been counted. Add advances it by one event; the
// sync window keeps a copy per room and calls Add for new events, which
// gives the counts a fresh read would (see Add).
type UnreadRoom struct {
	Room        *PushRoom
	UserID      string
	DisplayName string
	JoinPos     int64
	// Read is the newest read position per receipt thread: "" for the
	// unthreaded receipt, "main" for the main timeline, else a thread
	// root; the later of m.read and m.read.private.
	Read map[string]int64
	// Examined counts the events past Floor that counting looked at;
	// Mentions those past the MaxUnreadExamined-th that mention the user.
	Examined, Mentions int
	Counts             RoomUnread
}

// Floor is the position after which events can be unread: the user's
// join or their unthreaded receipt, whichever is later.
func (u *UnreadRoom) Floor() int64 { return max(u.JoinPos, u.Read[""]) }

// ReadThrough is the position through which events of thread ("" for the
// main timeline) are read.
func (u *UnreadRoom) ReadThrough(thread string) int64 {
	t := thread
	if t == "" {
		t = "main"
	}
	return max(u.Floor(), u.Read[t])
}

// Clone returns a copy that Add may change without touching u.
func (u *UnreadRoom) Clone() *UnreadRoom {
	c := *u
	if u.Counts.Threads != nil {
		c.Counts.Threads = make(map[string]NotificationCounts, len(u.Counts.Threads))
		for k, v := range u.Counts.Threads {
			c.Counts.Threads[k] = v
		}
	}
	return &c
}

// Add counts one event at pos, of thread ("" main timeline), which
// mentionsUser (its m.mentions.user_ids holds the user) — events must come
// in position order, and only ones after every event already added. It
// reports the decision when the event was evaluated.
func (u *UnreadRoom) Add(rules *matrix.PushRuleset, ev *matrix.PushEvent, pos int64, thread string, mentionsUser bool) (matrix.PushDecision, bool) {
	if pos <= u.Floor() || ev.Sender == u.UserID {
		return matrix.PushDecision{}, false
	}
	if u.Examined < MaxUnreadExamined {
		u.Examined++
	} else if mentionsUser && u.Mentions < MaxUnreadMentions {
		u.Mentions++
	} else {
		return matrix.PushDecision{}, false
	}
	if pos <= u.ReadThrough(thread) {
		return matrix.PushDecision{}, false
	}
	d := rules.Evaluate(ev, u.Room.Context(u.UserID, u.DisplayName, ev.Sender))
	if !d.Notify {
		return d, true
	}
	c := u.Counts.Main
	if thread != "" {
		c = u.Counts.Threads[thread]
	}
	c.Notifications++
	if d.Highlight {
		c.Highlights++
	}
	if thread == "" {
		u.Counts.Main = c
	} else {
		if u.Counts.Threads == nil {
			u.Counts.Threads = map[string]NotificationCounts{}
		}
		u.Counts.Threads[thread] = c
	}
	return d, true
}

// PushRules returns the user's push rules: their m.push_rules account
// data merged with the server defaults.
func (s *Store) PushRules(ctx context.Context, userID string) (*matrix.PushRuleset, error) {
	raw, err := s.AccountData(ctx, userID, "", "m.push_rules")
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return matrix.ParsePushRules(userID, raw)
}

// PushRulesContent returns the user's stored m.push_rules content as of
// the snapshot, nil if they have none (ParsePushRules reads either).
func (t *SyncTx) PushRulesContent(ctx context.Context, userID string) (json.RawMessage, error) {
	var c []byte
	err := t.tx.QueryRow(ctx, "SELECT content FROM account_data WHERE user_id = $1 AND room_id = '' AND type = 'm.push_rules'", userID).Scan(&c)
	if isNoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("push rules of %s: %w", userID, err)
	}
	return c, nil
}

// UnreadRooms computes the user's counting state in each of roomIDs they
// are joined to, as of the snapshot, with their rules (rooms they are not
// joined to are left out). Two queries whatever the number of rooms.
func (t *SyncTx) UnreadRooms(ctx context.Context, userID string, rules *matrix.PushRuleset, roomIDs []string) (map[string]*UnreadRoom, error) {
	return unreadRooms(ctx, t.tx, t.pushEvents, userID, rules, roomIDs, t.roomsHi())
}

// UnreadNotifications returns the user's counts in every room they are
// joined to, from one consistent snapshot: for a push's counts.unread.
func (s *Store) UnreadNotifications(ctx context.Context, userID string, rules *matrix.PushRuleset) (map[string]RoomUnread, error) {
	out := map[string]RoomUnread{}
	err := s.SyncSnapshot(ctx, func(t *SyncTx) error {
		ids, err := joinedRooms(ctx, t.tx, userID)
		if err != nil {
			return err
		}
		rooms, err := t.UnreadRooms(ctx, userID, rules, ids)
		if err != nil {
			return err
		}
		for id, u := range rooms {
			out[id] = u.Counts
		}
		return nil
	})
	return out, err
}

// UnreadTotals returns, for each user of rules, the unread notifications
// over every room they are joined to (RoomUnread.Total summed), counted by
// their rules, from one snapshot in three queries whatever the number of
// users: a push's counts.unread for every recipient of an event at once.
func (s *Store) UnreadTotals(ctx context.Context, rules map[string]*matrix.PushRuleset) (map[string]int, error) {
	out := make(map[string]int, len(rules))
	if len(rules) == 0 {
		return out, nil
	}
	users := make([]string, 0, len(rules))
	for u := range rules {
		users = append(users, u)
		out[u] = 0
	}
	err := s.SyncSnapshot(ctx, func(t *SyncTx) error {
		rows, err := t.tx.Query(ctx, `SELECT room_id, state_key FROM room_state WHERE type = 'm.room.member' AND state_key = ANY($1)
			AND to_pos IS NULL AND membership = 'join'`, users)
		if err != nil {
			return fmt.Errorf("unread totals: %w", err)
		}
		var roomIDs, members []string
		for rows.Next() {
			var r, u string
			if err := rows.Scan(&r, &u); err != nil {
				rows.Close()
				return fmt.Errorf("unread totals: %w", err)
			}
			roomIDs, members = append(roomIDs, r), append(members, u)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("unread totals: %w", err)
		}
		pairs, err := unreadPairs(ctx, t.tx, t.pushEvents, roomIDs, members, func(u string) *matrix.PushRuleset { return rules[u] }, t.roomsHi())
		if err != nil {
			return err
		}
		for k, u := range pairs {
			out[k.user] += u.Counts.Total().Notifications
		}
		return nil
	})
	return out, err
}

// PushRoom returns what push conditions need of a room as of now.
func (s *Store) PushRoom(ctx context.Context, roomID string) (*PushRoom, error) {
	var p *PushRoom
	err := s.SyncSnapshot(ctx, func(t *SyncTx) error {
		rooms, err := pushRooms(ctx, t.tx, t.pushEvents, "", []string{roomID})
		if err != nil {
			return err
		}
		if r, ok := rooms[roomID]; ok {
			p = r.Room
			return nil
		}
		return ErrNotFound
	})
	return p, err
}

// memberDisplayNameSQL is the display name of the member event e (its
// client form), NULL unless a string: the one reading of it for push
// rules (contains_display_name), whether counted or delivered.
const memberDisplayNameSQL = `CASE WHEN jsonb_typeof(convert_from(e.client, 'UTF8')::jsonb #> '{content,displayname}') = 'string'
	THEN convert_from(e.client, 'UTF8')::jsonb #>> '{content,displayname}' END`

// pushRooms reads, per room, the PushRoom and (for userID) the join,
// display name and read receipts: the first of the two counting queries.
// With userID "" every room is returned with only its PushRoom.
func pushRooms(ctx context.Context, q rowsQueryer, cache *matrix.EventCache, userID string, roomIDs []string) (map[string]*UnreadRoom, error) {
	users := make([]string, len(roomIDs))
	for i := range users {
		users[i] = userID
	}
	pairs, err := pushRoomPairs(ctx, q, cache, roomIDs, users, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*UnreadRoom, len(pairs))
	for k, u := range pairs {
		out[k.room] = u
	}
	return out, nil
}

// roomUser is one user in one room.
type roomUser struct{ room, user string }

// pushRoomPairs is pushRooms for many users at once: roomIDs[i] with
// users[i]. A pair whose user ("" aside) is not joined is left out. The
// state read is the state as of the room positions below hi (a sync
// snapshot's G; math.MaxInt64 for the current state).
func pushRoomPairs(ctx context.Context, q rowsQueryer, cache *matrix.EventCache, roomIDs, users []string, hi int64) (map[roomUser]*UnreadRoom, error) {
	rows, err := q.Query(ctx, `SELECT r.room_id, r.user_id, rm.room_version, rm.joined_members,
			COALESCE(jm.from_pos, -1), COALESCE(jm.displayname, ''),
			cr.event_id, cr.pdu, pl.event_id, pl.pdu, rc.threads, rc.positions
		FROM unnest($1::text[], $2::text[]) AS r(room_id, user_id)
		JOIN rooms rm ON rm.room_id = r.room_id
		LEFT JOIN LATERAL (SELECT s.from_pos,
				`+memberDisplayNameSQL+` AS displayname
			FROM room_state s JOIN events e ON e.event_id = s.event_id
			WHERE s.room_id = r.room_id AND s.type = 'm.room.member' AND s.state_key = r.user_id
				AND s.from_pos < $3 AND (s.to_pos IS NULL OR s.to_pos >= $3) AND s.membership = 'join') jm ON true
		LEFT JOIN LATERAL (SELECT e.event_id, e.pdu FROM room_state s JOIN events e ON e.event_id = s.event_id
			WHERE s.room_id = r.room_id AND s.type = 'm.room.create' AND s.state_key = ''
				AND s.from_pos < $3 AND (s.to_pos IS NULL OR s.to_pos >= $3)) cr ON true
		LEFT JOIN LATERAL (SELECT e.event_id, e.pdu FROM room_state s JOIN events e ON e.event_id = s.event_id
			WHERE s.room_id = r.room_id AND s.type = 'm.room.power_levels' AND s.state_key = ''
				AND s.from_pos < $3 AND (s.to_pos IS NULL OR s.to_pos >= $3)) pl ON true
		LEFT JOIN LATERAL (SELECT array_agg(x.thread_id) AS threads, array_agg(x.event_pos) AS positions FROM receipts x
			WHERE x.room_id = r.room_id AND x.user_id = r.user_id AND x.type IN ('m.read', 'm.read.private')) rc ON true`,
		roomIDs, users, hi)
	if err != nil {
		return nil, fmt.Errorf("push rooms: %w", err)
	}
	defer rows.Close()
	out := make(map[roomUser]*UnreadRoom, len(roomIDs))
	for rows.Next() {
		var roomID, userID, version, displayName string
		var members int
		var joinPos int64
		var createID, plID *string
		var createPDU, plPDU []byte
		var threads []string
		var positions []int64
		if err := rows.Scan(&roomID, &userID, &version, &members, &joinPos, &displayName, &createID, &createPDU, &plID, &plPDU, &threads, &positions); err != nil {
			return nil, fmt.Errorf("push rooms: %w", err)
		}
		if userID != "" && joinPos < 0 {
			continue // not joined: nothing is unread
		}
		p := &PushRoom{RoomID: roomID, MemberCount: members}
		v := matrix.RoomVersion(version)
		for _, x := range []struct {
			id  *string
			pdu []byte
		}{{createID, createPDU}, {plID, plPDU}} {
			if x.id == nil {
				continue
			}
			// A state event the projection holds was authorised when it
			// was appended; one that does not parse here is left out
			// (the defaults apply) rather than failing the user's sync.
			if ev, err := cache.Parse(v, *x.id, x.pdu); err == nil {
				p.state = matrix.Apply(p.state, ev)
			}
		}
		u := &UnreadRoom{Room: p, UserID: userID, DisplayName: displayName, JoinPos: joinPos, Read: map[string]int64{}}
		for i := range threads {
			if i < len(positions) && positions[i] > u.Read[threads[i]] {
				u.Read[threads[i]] = positions[i]
			}
		}
		out[roomUser{roomID, userID}] = u
	}
	return out, rows.Err()
}

// threadOfSQL finds the thread an event belongs to, following relations
// up to three hops as the spec recommends ("" for the main timeline:
// thread roots and events related to them other than by m.thread), in
// the event's own room only.
const threadOfSQL = `COALESCE(CASE WHEN r1.rel_type = 'm.thread' THEN r1.relates_to
		WHEN r2.rel_type = 'm.thread' THEN r2.relates_to
		WHEN r3.rel_type = 'm.thread' THEN r3.relates_to END, '')`

const threadJoinsSQL = `LEFT JOIN event_relations r1 ON r1.event_id = c.event_id AND r1.room_id = c.room_id
	LEFT JOIN event_relations r2 ON r1.rel_type <> 'm.thread' AND r2.event_id = r1.relates_to AND r2.room_id = c.room_id
	LEFT JOIN event_relations r3 ON r2.rel_type <> 'm.thread' AND r3.event_id = r2.relates_to AND r3.room_id = c.room_id`

func unreadRooms(ctx context.Context, q rowsQueryer, cache *matrix.EventCache, userID string, rules *matrix.PushRuleset, roomIDs []string, hi int64) (map[string]*UnreadRoom, error) {
	users := make([]string, len(roomIDs))
	for i := range users {
		users[i] = userID
	}
	pairs, err := unreadPairs(ctx, q, cache, roomIDs, users, func(string) *matrix.PushRuleset { return rules }, hi)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*UnreadRoom, len(pairs))
	for k, u := range pairs {
		out[k.room] = u
	}
	return out, nil
}

// unreadPairs is unreadRooms for many users at once (roomIDs[i] with
// users[i], each counted by rulesOf(user)): two queries in all. An event
// that is a candidate for several users is decoded once.
func unreadPairs(ctx context.Context, q rowsQueryer, cache *matrix.EventCache, roomIDs, users []string, rulesOf func(user string) *matrix.PushRuleset, hi int64) (map[roomUser]*UnreadRoom, error) {
	if len(roomIDs) == 0 {
		return map[roomUser]*UnreadRoom{}, nil
	}
	rooms, err := pushRoomPairs(ctx, q, cache, roomIDs, users, hi)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(rooms))
	floors := make([]int64, 0, len(rooms))
	us := make([]string, 0, len(rooms))
	for k, u := range rooms {
		ids, floors, us = append(ids, k.room), append(floors, u.Floor()), append(us, k.user)
	}
	// The candidates: per room and user the first MaxUnreadExamined events
	// from others after the user's floor, then up to MaxUnreadMentions
	// later ones that mention the user; redacted events are no longer
	// counted.
	rows, err := q.Query(ctx, `SELECT c.room_id, c.user_id, c.pos, c.client, c.mentioned, `+threadOfSQL+`
		FROM unnest($1::text[], $2::bigint[], $3::text[]) AS r(room_id, lo, user_id)
		CROSS JOIN LATERAL (
			(SELECT e.room_id, r.user_id, e.pos, e.event_id, e.client, COALESCE(r.user_id = ANY(e.mentions), false) AS mentioned FROM events e
			 WHERE e.room_id = r.room_id AND e.pos > r.lo AND e.pos < $4 AND e.sender <> r.user_id AND e.redacted_because IS NULL
			 ORDER BY e.pos LIMIT $5)
			UNION ALL
			(SELECT e.room_id, r.user_id, e.pos, e.event_id, e.client, true FROM events e
			 WHERE e.room_id = r.room_id AND e.mentions @> ARRAY[r.user_id] AND e.pos < $4 AND e.sender <> r.user_id AND e.redacted_because IS NULL
			   AND e.pos > (SELECT n.pos FROM events n WHERE n.room_id = r.room_id AND n.pos > r.lo AND n.pos < $4 AND n.sender <> r.user_id
			                  AND n.redacted_because IS NULL ORDER BY n.pos OFFSET $5 - 1 LIMIT 1)
			 ORDER BY e.pos LIMIT $6)) c
		`+threadJoinsSQL+`
		ORDER BY c.room_id, c.user_id, c.pos`, ids, floors, us, hi, MaxUnreadExamined, MaxUnreadMentions)
	if err != nil {
		return nil, fmt.Errorf("unread candidates: %w", err)
	}
	defer rows.Close()
	decoded := map[int64]*matrix.PushEvent{} // by position: one decode per event
	for rows.Next() {
		var roomID, userID, thread string
		var pos int64
		var client []byte
		var mentioned bool
		if err := rows.Scan(&roomID, &userID, &pos, &client, &mentioned, &thread); err != nil {
			return nil, fmt.Errorf("unread candidates: %w", err)
		}
		u := rooms[roomUser{roomID, userID}]
		if u == nil {
			continue
		}
		ev, ok := decoded[pos]
		if !ok {
			if ev, err = matrix.NewPushEvent(client); err != nil {
				continue // projected events are JSON objects; never expected
			}
			decoded[pos] = ev
		}
		u.Add(rulesOf(userID), ev, pos, thread, mentioned)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("unread candidates: %w", err)
	}
	return rooms, nil
}

// NewPushRoom builds a PushRoom from a room's create and power levels
// events (either may be nil): for callers that hold them already, and
// tests.
func NewPushRoom(roomID string, memberCount int, create, powerLevels *matrix.Event) *PushRoom {
	p := &PushRoom{RoomID: roomID, MemberCount: memberCount}
	for _, ev := range []*matrix.Event{create, powerLevels} {
		if ev != nil {
			p.state = matrix.Apply(p.state, ev)
		}
	}
	return p
}
