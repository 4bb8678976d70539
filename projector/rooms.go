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
// without re-checking.
func applyRoomEvents(ctx context.Context, tx *store.Tx, seq uint64, r *eventlog.RoomEvents) error {
	if len(r.Events) == 0 || len(r.Events) > eventlog.MaxEventsPerRecord {
		return store.Unappliable(fmt.Errorf("room record with %d events", len(r.Events)))
	}
	v := matrix.RoomVersion(r.RoomVersion)
	var last *matrix.Event
	var lastPos int64
	for i, raw := range r.Events {
		ev, err := matrix.ParseEvent(v, raw)
		if err != nil {
			return store.Unappliable(fmt.Errorf("event %d: %w", i, err))
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
		row.Notify, row.BodyLower, row.Mentions = matrix.UnreadFacts(ev)
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
// target's redacted form, as the room version's algorithm defines it.
func redact(ctx context.Context, tx *store.Tx, v matrix.RoomVersion, redaction *matrix.Event) error {
	pdu, typ, stateKey, current, ok, err := tx.EventForRedaction(ctx, string(redaction.Redacts()))
	if err != nil || !ok {
		return err
	}
	red, err := matrix.RedactEventJSON(v, pdu)
	if err != nil {
		return store.Unappliable(fmt.Errorf("redact %s: %w", redaction.Redacts(), err))
	}
	target, err := matrix.ParseEvent(v, red)
	if err != nil {
		return store.Unappliable(fmt.Errorf("parse redacted %s: %w", redaction.Redacts(), err))
	}
	tx.RedactEvent(string(target.ID()), matrix.ClientEvent(target), matrix.ClientEvent(redaction))
	tx.DeleteRelation(string(target.ID()))
	tx.DeleteSearchText(string(target.ID()))
	if current && stateKey != nil && *stateKey == "" {
		tx.UpdateSummary(string(target.RoomID()), typ, target.Content())
	}
	return nil
}
