package store

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Render returns the event as the viewer's device sees it: its stored
// client form plus unsigned (age; transaction_id for the sending device;
// redacted_because).
func (e *StoredEvent) Render(viewerUser, viewerDevice string, now time.Time) json.RawMessage {
	return e.RenderFor(viewerUser, viewerDevice, "", false, now)
}

// Prev returns the state event this one replaced, with what a visibility
// check needs (position, room, type, state key), or nil.
func (e *StoredEvent) Prev() *StoredEvent {
	if e.PrevClient == nil {
		return nil
	}
	var id struct {
		EventID string `json:"event_id"`
		Sender  string `json:"sender"`
	}
	_ = json.Unmarshal(e.PrevClient, &id)
	return &StoredEvent{Pos: e.PrevPos, EventID: id.EventID, RoomID: e.RoomID, Type: e.Type, StateKey: e.StateKey, Sender: id.Sender, Client: e.PrevClient}
}

// Membership returns the membership a member event sets (content.membership,
// which redaction keeps), or "" for any other event. It is decoded when
// asked for, as Prev is: few readers need it, and most events read are not
// member events.
func (e *StoredEvent) Membership() string {
	if e.Type != "m.room.member" || e.StateKey == nil {
		return ""
	}
	var m struct {
		Content struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	_ = json.Unmarshal(e.Client, &m)
	return m.Content.Membership
}

// RenderFor is Render that also gives unsigned.membership (MSC4115, spec
// 1.11): the viewer's membership at the event, including the event's own
// change, when the caller knows it (empty: left out, which the spec
// allows where working it out is not practical).
//
// A state event that replaced another gets unsigned.replaces_state (its
// ID) always, and unsigned.prev_content (and prev_sender, which clients
// read too) only when showPrev says the viewer may see that event, as the
// spec requires.
func (e *StoredEvent) RenderFor(viewerUser, viewerDevice, membership string, showPrev bool, now time.Time) json.RawMessage {
	var u bytes.Buffer
	u.WriteString(`{"age":`)
	u.WriteString(strconv.FormatInt(max(0, now.UnixMilli()-e.OriginServerTS), 10))
	if e.PrevClient != nil {
		var prev struct {
			EventID string          `json:"event_id"`
			Sender  string          `json:"sender"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(e.PrevClient, &prev) == nil && prev.EventID != "" {
			id, _ := json.Marshal(prev.EventID)
			u.WriteString(`,"replaces_state":`)
			u.Write(id)
			if showPrev && len(prev.Content) > 0 {
				u.WriteString(`,"prev_content":`)
				u.Write(prev.Content)
				sender, _ := json.Marshal(prev.Sender)
				u.WriteString(`,"prev_sender":`)
				u.Write(sender)
			}
		}
	}
	if membership != "" {
		m, _ := json.Marshal(membership)
		u.WriteString(`,"membership":`)
		u.Write(m)
	}
	if e.TxnID != "" && e.Sender == viewerUser && e.TxnDevice == viewerDevice {
		// Stored as "<endpoint>:<client's ID>"; the client gets its own.
		_, clientID, _ := strings.Cut(e.TxnID, ":")
		tid, _ := json.Marshal(clientID)
		u.WriteString(`,"transaction_id":`)
		u.Write(tid)
	}
	if len(e.RedactedBecause) > 0 {
		u.WriteString(`,"redacted_because":`)
		u.Write(e.RedactedBecause)
	}
	u.WriteByte('}')
	c := e.Client
	out := make([]byte, 0, len(c)+u.Len()+14)
	out = append(out, c[:len(c)-1]...)
	out = append(out, `,"unsigned":`...)
	out = append(out, u.Bytes()...)
	out = append(out, '}')
	return out
}
