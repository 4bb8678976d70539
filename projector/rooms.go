package projector

import (
	"context"
	"fmt"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// applyRoomEvents projects one record of room events. The events were
// authorised by the api against the exact state the record was appended
// after (per-room optimistic concurrency), so the projector applies them
// without re-checking; what an event does to other events (a redaction, a
// relation) is decided here, within the event's own room.
func applyRoomEvents(ctx context.Context, tx *store.Tx, m eventlog.Msg, r *eventlog.RoomEvents) error {
	seq := m.Seq
	if len(r.Events) == 0 || len(r.Events) > eventlog.MaxEventsPerRecord {
		return store.Unappliable(fmt.Errorf("room record with %d events", len(r.Events)))
	}
	// A record holds events of the room whose subject it is on: the
	// subject's sequence is what serialises the room's writers, so events
	// of another room on it would bypass that room's order (and walls).
	if m.Subject != eventlog.RoomSubject(r.RoomID) {
		return store.Unappliable(fmt.Errorf("room record for %s on subject %s", r.RoomID, m.Subject))
	}
	v := matrix.RoomVersion(r.RoomVersion)
	var last *matrix.Event
	var lastPos int64
	for i, raw := range r.Events {
		ev, err := matrix.ParseEvent(v, raw)
		if err != nil {
			return store.Unappliable(fmt.Errorf("event %d: %w", i, err))
		}
		if string(ev.RoomID()) != r.RoomID {
			return store.Unappliable(fmt.Errorf("event %d of room %s in a record of room %s", i, ev.RoomID(), r.RoomID))
		}
		pos := eventlog.EventPos(seq, i)
		if ev.Type() == matrix.TypeCreate && ev.IsState() && *ev.StateKey() == "" {
			tx.CreateRoom(string(ev.RoomID()), r.RoomVersion, string(ev.Sender()), ev.OriginServerTS())
		}
		row := &store.RoomEventRow{
			Pos: pos, EventID: string(ev.ID()), RoomID: string(ev.RoomID()), Type: ev.Type(), StateKey: ev.StateKey(),
			Sender: string(ev.Sender()), OriginServerTS: ev.OriginServerTS(), Depth: ev.Depth(),
			Membership: ev.Membership(), Client: matrix.ClientEvent(ev), PDU: ev.JSON(),
		}
		row.Mentions = matrix.Mentions(ev)
		if len(r.Events) == 1 && r.TxnID != "" && r.Sender == string(ev.Sender()) {
			row.TxnDevice, row.TxnID = r.DeviceID, r.TxnID
		}
		tx.AddRoomEvent(row)
		if key, text, ok := matrix.SearchText(ev); ok {
			tx.AddSearchText(row.EventID, row.RoomID, row.Sender, key, text, pos)
		}
		if parent, relType, ok := matrix.Relation(ev); ok {
			tx.AddRelation(row.EventID, row.RoomID, string(parent), relType, pos)
		}
		if ev.IsState() && *ev.StateKey() == "" {
			tx.UpdateSummary(row.RoomID, ev.Type(), ev.Content())
		}
		if ev.Type() == matrix.TypeRedaction && ev.Redacts() != "" {
			if err := redact(ctx, tx, v, ev); err != nil {
				return err
			}
		}
		last, lastPos = ev, pos
	}
	if r.Published != nil {
		tx.SetPublished(string(last.RoomID()), *r.Published)
	}
	tx.AdvanceRoom(string(last.RoomID()), seq, string(last.ID()), lastPos, last.Depth())
	return nil
}

// redact replaces what readers see of the redaction's target with the
// target's redacted form, as the room version's algorithm defines it, if
// the redaction may take effect on it: the target is an event of the
// redaction's own room, and its sender is the redaction's sender or the
// redaction's sender has the room's redact level (matrix.AuthorizeRedaction
// against the room's state as of the redaction). Otherwise the redaction
// is an event of its room that redacts nothing, as one naming an unknown
// event is. The api checks the same before it appends, but the log may
// hold redactions appended without that check (by earlier versions, or
// aimed at an event of another room, possibly of another room version), and
// whatever is on the log is applied the same live and in replay, so the
// decision is made here from the projection alone.
func redact(ctx context.Context, tx *store.Tx, v matrix.RoomVersion, redaction *matrix.Event) error {
	roomID := string(redaction.RoomID())
	t, ok, auth, err := tx.EventForRedaction(ctx, string(redaction.Redacts()), roomID)
	if err != nil || !ok || t.RoomID != roomID {
		return err
	}
	if !redactionAllowed(v, redaction, t.PDU, auth) {
		return nil
	}
	red, err := matrix.RedactEventJSON(v, t.PDU)
	if err != nil {
		return store.Unappliable(fmt.Errorf("redact %s: %w", redaction.Redacts(), err))
	}
	redacted, err := matrix.ParseEvent(v, red)
	if err != nil {
		return store.Unappliable(fmt.Errorf("parse redacted %s: %w", redaction.Redacts(), err))
	}
	tx.RedactEvent(string(redacted.ID()), matrix.ClientEvent(redacted), matrix.ClientEvent(redaction))
	tx.DeleteRelation(string(redacted.ID()))
	tx.DeleteSearchText(string(redacted.ID()))
	if t.Current && t.StateKey != nil && *t.StateKey == "" {
		tx.UpdateSummary(roomID, t.Type, redacted.Content())
	}
	return nil
}

// redactionAllowed reports whether redaction may take effect on the target
// (its PDU) by matrix.AuthorizeRedaction, against the room's create and
// power levels events (auth). Events of one room share its version, so
// they all parse as v; if one does not, the record claims a version its
// room does not have, and a redaction that cannot be judged redacts
// nothing (failing closed, and the same live and in replay).
func redactionAllowed(v matrix.RoomVersion, redaction *matrix.Event, targetPDU []byte, auth []store.IDPDU) bool {
	target, err := matrix.ParseEvent(v, targetPDU)
	if err != nil {
		return false
	}
	var st matrix.State
	for _, a := range auth {
		ev, err := matrix.ParseEvent(v, a.PDU)
		if err != nil {
			return false
		}
		st = matrix.Apply(st, ev)
		if a.Redacted {
			if st, err = matrix.ApplyRedacted(st, ev); err != nil {
				return false
			}
		}
	}
	return matrix.AuthorizeRedaction(st, redaction, target) == nil
}
