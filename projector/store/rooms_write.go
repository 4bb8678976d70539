package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// RoomEventRow is one room event as the projector writes it.
type RoomEventRow struct {
	Pos            int64
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	OriginServerTS int64
	Depth          int64
	Membership     string // for m.room.member
	Client         []byte // client-format JSON, without unsigned
	PDU            []byte
	TxnDevice      string
	TxnID          string
	// For unread counts: a notifying type, the lower-cased body, and the
	// user IDs in m.mentions.
	Notify    bool
	BodyLower *string
	Mentions  []string
}

// CreateRoom inserts the room row of a create event.
func (t *Tx) CreateRoom(roomID, version, creator string, ts int64) {
	t.queue(`INSERT INTO rooms (room_id, room_version, creator, created_ts, last_seq, last_event_id, last_pos, depth)
		VALUES ($1, $2, $3, $4, 0, '', 0, 0) ON CONFLICT DO NOTHING`, roomID, version, creator, ts)
}

// AddRoomEvent stores an event and, for a state event, makes it the
// current state entry for its key.
func (t *Tx) AddRoomEvent(e *RoomEventRow) {
	t.events = append(t.events, e)
	if e.StateKey == nil {
		return
	}
	var membership *string
	if e.Type == "m.room.member" {
		membership = &e.Membership
	}
	if e.Type != "m.room.member" {
		t.queue(`UPDATE room_state SET to_pos = $4 WHERE room_id = $1 AND type = $2 AND state_key = $3 AND to_pos IS NULL`,
			e.RoomID, e.Type, *e.StateKey, e.Pos)
	} else {
		// Close the member's previous entry and adjust the member counts
		// by what it was and what it becomes: constant work per change,
		// however large the room.
		t.queue(`WITH closed AS (
				UPDATE room_state SET to_pos = $3 WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2 AND to_pos IS NULL
				RETURNING membership)
			UPDATE rooms SET
				joined_members = joined_members + (CASE WHEN $4 = 'join' THEN 1 ELSE 0 END)
					- (SELECT count(*) FROM closed WHERE membership = 'join'),
				invited_members = invited_members + (CASE WHEN $4 = 'invite' THEN 1 ELSE 0 END)
					- (SELECT count(*) FROM closed WHERE membership = 'invite')
			WHERE room_id = $1`, e.RoomID, *e.StateKey, e.Pos, e.Membership)
	}
	t.queue(`INSERT INTO room_state (room_id, type, state_key, event_id, membership, from_pos) VALUES ($1, $2, $3, $4, $5, $6)`,
		e.RoomID, e.Type, *e.StateKey, e.EventID, membership, e.Pos)
	if e.Type == "m.room.member" {
		if e.Membership == "join" || e.Membership == "invite" {
			t.queue("DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2", *e.StateKey, e.RoomID)
		}
	}
}

// summaryColumns maps the state types whose content is denormalised onto
// rooms to the column and content field.
var summaryColumns = map[string][2]string{
	"m.room.name":               {"name", "name"},
	"m.room.topic":              {"topic", "topic"},
	"m.room.avatar":             {"avatar_url", "url"},
	"m.room.canonical_alias":    {"canonical_alias", "alias"},
	"m.room.join_rules":         {"join_rule", "join_rule"},
	"m.room.history_visibility": {"history_visibility", "history_visibility"},
	"m.room.guest_access":       {"guest_access", "guest_access"},
	"m.room.create":             {"room_type", "type"},
}

// UpdateSummary refreshes the denormalised column for a current-state
// event with empty state key (content as it now reads, maybe redacted).
func (t *Tx) UpdateSummary(roomID, typ string, content json.RawMessage) {
	col, ok := summaryColumns[typ]
	if !ok {
		return
	}
	var c map[string]any
	_ = json.Unmarshal(content, &c)
	var val *string
	if s, ok := c[col[1]].(string); ok && s != "" {
		val = &s
	}
	t.queue(fmt.Sprintf("UPDATE rooms SET %s = $2 WHERE room_id = $1", col[0]), roomID, val)
}

// AdvanceRoom records the newest record and event of a room (an empty
// lastEventID: a record without events, which moves only last_seq).
func (t *Tx) AdvanceRoom(roomID string, seq uint64, lastEventID string, lastPos, depth int64) {
	if t.heads == nil {
		t.heads = map[string]roomHead{}
	}
	h, ok := t.heads[roomID]
	if !ok {
		t.order = append(t.order, roomID)
	}
	h.seq = seq
	if lastEventID != "" {
		h.eventID, h.pos, h.depth = lastEventID, lastPos, depth
	}
	t.heads[roomID] = h
}

// pending queues the coalesced writes: the batch's room events in one
// multi-row insert, then each room's head once.
func (t *Tx) pending() {
	if n := len(t.events); n > 0 {
		pos := make([]int64, n)
		ids, rooms, types, senders := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		keys, txnDevs, txnIDs, bodies := make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		ts := make([]int64, n)
		clients, pdus := make([][]byte, n), make([][]byte, n)
		notify := make([]bool, n)
		// text[][] needs rectangular arrays, so mentions travel as one
		// joined string per event and are split back in SQL.
		mentions := make([]string, n)
		for i, e := range t.events {
			pos[i], ids[i], rooms[i], types[i], keys[i], senders[i], ts[i] = e.Pos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.OriginServerTS
			clients[i], pdus[i], notify[i], bodies[i] = e.Client, e.PDU, e.Notify, e.BodyLower
			mentions[i] = strings.Join(e.Mentions, "\n")
			if e.TxnID != "" {
				txnDevs[i], txnIDs[i] = &e.TxnDevice, &e.TxnID
			}
		}
		t.queue(`INSERT INTO events (pos, event_id, room_id, type, state_key, sender, origin_server_ts, client, pdu, txn_device, txn_id,
				notify, body_lower, mentions)
			SELECT p, id, r, ty, k, se, ts, c, pd, td, ti, nt, bl, CASE WHEN m = '' THEN NULL ELSE string_to_array(m, E'\n') END
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
				$8::bytea[], $9::bytea[], $10::text[], $11::text[], $12::boolean[], $13::text[], $14::text[])
				AS x(p, id, r, ty, k, se, ts, c, pd, td, ti, nt, bl, m)`,
			pos, ids, rooms, types, keys, senders, ts, clients, pdus, txnDevs, txnIDs, notify, bodies, mentions)
		t.events = t.events[:0]
	}
	for _, roomID := range t.order {
		h := t.heads[roomID]
		if h.eventID == "" {
			t.queue("UPDATE rooms SET last_seq = $2 WHERE room_id = $1", roomID, int64(h.seq))
		} else {
			t.queue("UPDATE rooms SET last_seq = $2, last_event_id = $3, last_pos = $4, depth = $5 WHERE room_id = $1",
				roomID, int64(h.seq), h.eventID, h.pos, h.depth)
		}
	}
	t.heads, t.order = nil, nil
}

// SetPublished sets a room's directory visibility.
func (t *Tx) SetPublished(roomID string, published bool) {
	t.queue("UPDATE rooms SET published = $2 WHERE room_id = $1", roomID, published)
}

// SetAlias maps an alias to a room.
func (t *Tx) SetAlias(alias, roomID, creator string) {
	t.queue(`INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)
		ON CONFLICT (alias) DO UPDATE SET room_id = EXCLUDED.room_id, creator = EXCLUDED.creator`, alias, roomID, creator)
}

// DeleteAlias frees an alias.
func (t *Tx) DeleteAlias(alias string) {
	t.queue("DELETE FROM room_aliases WHERE alias = $1", alias)
}

// ForgetRoom hides a room from a user.
func (t *Tx) ForgetRoom(userID, roomID string) {
	t.queue("INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", userID, roomID)
}

// flush sends the queued writes so that a read in the same transaction
// sees them.
func (t *Tx) flush(ctx context.Context) error {
	t.pending()
	if t.batch.Len() == 0 {
		return nil
	}
	err := t.tx.SendBatch(ctx, &t.batch).Close()
	t.batch = pgxBatch()
	return err
}

// RedactionTarget is what applying a redaction needs of the event it
// names.
type RedactionTarget struct {
	RoomID   string
	PDU      []byte
	Type     string
	StateKey *string
	Current  bool // the current state entry for its key
}

// EventForRedaction returns what deciding and applying a redaction in
// roomID needs: the event it names (ok false for an unknown event; a
// redaction may name any event ID), and the room's current m.room.create
// and m.room.power_levels events, with whether each was redacted. It reads
// after everything queued so far, so within a batch the state is as of the
// record being applied. The caller checks that the target is in roomID
// before it uses anything else of it.
func (t *Tx) EventForRedaction(ctx context.Context, eventID, roomID string) (target RedactionTarget, ok bool, auth []IDPDU, err error) {
	if err = t.flush(ctx); err != nil {
		return
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT e.room_id, e.pdu, e.type, e.state_key,
			EXISTS (SELECT 1 FROM room_state s WHERE s.event_id = e.event_id AND s.to_pos IS NULL)
		FROM events e WHERE e.event_id = $1`, eventID)
	b.Queue(`SELECT e.event_id, e.pdu, e.redacted_because IS NOT NULL FROM room_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND s.type IN ('m.room.create', 'm.room.power_levels') AND s.state_key = '' AND s.to_pos IS NULL`, roomID)
	br := t.tx.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	err = br.QueryRow().Scan(&target.RoomID, &target.PDU, &target.Type, &target.StateKey, &target.Current)
	switch {
	case isNoRows(err):
		target, err = RedactionTarget{}, nil
	case err != nil:
		return RedactionTarget{}, false, nil, fmt.Errorf("redaction target %s: %w", eventID, err)
	default:
		ok = true
	}
	rows, err := br.Query()
	if err != nil {
		return RedactionTarget{}, false, nil, fmt.Errorf("room %s auth state: %w", roomID, err)
	}
	if auth, err = pgx.CollectRows(rows, pgx.RowToStructByPos[IDPDU]); err != nil {
		return RedactionTarget{}, false, nil, fmt.Errorf("room %s auth state: %w", roomID, err)
	}
	return target, ok, auth, nil
}

// RedactEvent replaces an event's client form with its redacted form.
func (t *Tx) RedactEvent(eventID string, redactedClient, redactedBecause []byte) {
	t.queue("UPDATE events SET client = $2, redacted_because = $3 WHERE event_id = $1", eventID, redactedClient, redactedBecause)
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

// AddSearchText indexes an event's searchable text.
func (t *Tx) AddSearchText(eventID, roomID, sender, key, text string, pos int64) {
	t.queue(`INSERT INTO event_search (event_id, room_id, pos, sender, key, vec)
		VALUES ($1, $2, $3, $4, $5, to_tsvector('simple', $6)) ON CONFLICT DO NOTHING`, eventID, roomID, pos, sender, key, text)
}

// DeleteSearchText forgets a redacted event's text.
func (t *Tx) DeleteSearchText(eventID string) {
	t.queue("DELETE FROM event_search WHERE event_id = $1", eventID)
}

// DeleteRelation forgets a redacted event's relation.
func (t *Tx) DeleteRelation(eventID string) {
	t.queue("DELETE FROM event_relations WHERE event_id = $1", eventID)
}

// SetReceipt records a read receipt, unless the user already has a receipt
// of that type for a later event: receipts only move forward. The position
// is only ever that of an event of the receipt's room: one naming another
// room's event (which the api refuses) takes no position from it.
func (t *Tx) SetReceipt(seq uint64, r *eventlog.ReceiptSet) {
	t.queue(`INSERT INTO receipts (room_id, user_id, type, thread_id, event_id, event_pos, ts, stream_seq)
		VALUES ($1, $2, $3, $4, $5, COALESCE((SELECT pos FROM events WHERE event_id = $5 AND room_id = $1), 0), $6, $7)
		ON CONFLICT (room_id, user_id, type, thread_id) DO UPDATE SET
			event_id = EXCLUDED.event_id, event_pos = EXCLUDED.event_pos, ts = EXCLUDED.ts, stream_seq = EXCLUDED.stream_seq
		WHERE receipts.event_pos < EXCLUDED.event_pos`,
		r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.TS, int64(seq))
}
