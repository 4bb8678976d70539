package matrix

import (
	"encoding/json"
	"fmt"
)

// ProtoEvent is an event before it is hashed, signed and given its ID: what
// a server decides when it creates an event. AuthEventsFor selects
// AuthEvents from the room state.
type ProtoEvent struct {
	Type     string
	StateKey *string // nil for a non-state event
	Sender   UserID
	// RoomID is the room; leave it empty for a version 12 m.room.create
	// event, whose room ID is derived from its own event ID.
	RoomID RoomID
	// Content is the content object; nil means {}. Any valid JSON object
	// is accepted and canonicalised.
	Content json.RawMessage
	// Redacts is the target of an m.room.redaction. BuildEvent puts it at
	// the top level (v10) or into content (v11+), as the version wants.
	Redacts EventID
	// EventID is the ID of an event of room version 1 or 2, where the
	// creating server names its events; empty means a fresh random one
	// (NewEventID). Later versions derive the ID from the event's hash, and
	// setting it is an error.
	EventID        EventID
	PrevEvents     []EventID
	AuthEvents     []EventID
	Depth          int64
	OriginServerTS int64
}

// BuildEvent turns p into a finished event of version v: the JSON is
// assembled canonically, the content hash added, the redacted form signed
// by origin with key, and the event ID computed from the same bytes that
// were signed. origin must be the sender's server, since an event must be
// signed by the server of its sender. Errors are *Error values (M_BAD_JSON
// or M_INVALID_PARAM, M_TOO_LARGE for oversized events).
func BuildEvent(v RoomVersion, p *ProtoEvent, origin ServerName, key *KeyPair) (*Event, error) {
	rules, err := v.checkedRules()
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, fmt.Errorf("build event: no signing key")
	}
	if p.Sender.Server() != origin {
		return nil, InvalidParam("build event: sender %s is not on origin server %s", p.Sender, origin)
	}
	if _, err := ParseUserID(string(p.Sender)); err != nil {
		return nil, InvalidParam("build event: sender: %v", err)
	}
	if p.Type == "" || len(p.Type) > maxKeyBytes {
		return nil, InvalidParam("build event: type must be 1 to %d bytes", maxKeyBytes)
	}
	if p.StateKey != nil && len(*p.StateKey) > maxKeyBytes {
		return nil, InvalidParam("build event: state_key longer than %d bytes", maxKeyBytes)
	}
	v12Create := rules.hashRoomIDs && p.Type == TypeCreate
	switch {
	case v12Create && p.RoomID != "":
		return nil, InvalidParam("build event: a version %s create event has no room_id", v)
	case !v12Create:
		r, err := ParseRoomID(string(p.RoomID))
		if err != nil {
			return nil, InvalidParam("build event: %v", err)
		}
		if r.Hashed() != rules.hashRoomIDs {
			return nil, InvalidParam("build event: room ID %s does not have the form room version %s uses", r, v)
		}
	}
	if p.Depth < 0 || p.Depth > MaxSafeInteger {
		return nil, InvalidParam("build event: depth %d out of range", p.Depth)
	}
	if p.OriginServerTS < 0 || p.OriginServerTS > MaxSafeInteger {
		return nil, InvalidParam("build event: origin_server_ts %d out of range", p.OriginServerTS)
	}
	ownID := p.EventID
	switch {
	case rules.eventID != idOpaque && ownID != "":
		return nil, InvalidParam("build event: room version %s derives event IDs from hashes", v)
	case rules.eventID == idOpaque && ownID == "":
		if ownID, err = NewEventID(origin); err != nil {
			return nil, InvalidParam("build event: %v", err)
		}
	case rules.eventID == idOpaque:
		if _, err := parseVersionEventID(rules, string(ownID)); err != nil {
			return nil, InvalidParam("build event: %v", err)
		}
	}
	if len(p.PrevEvents) > maxPrevEvents || len(p.AuthEvents) > maxAuthEvents {
		return nil, InvalidParam("build event: at most %d prev_events and %d auth_events", maxPrevEvents, maxAuthEvents)
	}

	content := []byte("{}")
	if len(p.Content) > 0 {
		content, err = CanonicalJSON(p.Content)
		if err != nil {
			return nil, err
		}
		if !isObject(content) {
			return nil, BadJSON("build event: content must be an object")
		}
	}
	var topRedacts []byte
	if p.Redacts != "" {
		if p.Type != TypeRedaction {
			return nil, InvalidParam("build event: only %s events redact", TypeRedaction)
		}
		if _, err := parseVersionEventID(rules, string(p.Redacts)); err != nil {
			return nil, InvalidParam("build event: redacts: %v", err)
		}
		idJSON, _ := appendString(nil, string(p.Redacts))
		if rules.topLevelRedacts {
			topRedacts = idJSON
			// A client sending through /send writes redacts into content
			// whatever the version; before version 11 it moves to the
			// top level (client-server API, PUT .../send).
			if cur := lookup(content, "redacts"); cur != nil {
				if string(cur) != string(idJSON) {
					return nil, InvalidParam("build event: content.redacts differs from Redacts")
				}
				content, err = withMembers(nil, content, func(k, _ []byte) bool { return string(k) == "redacts" }, nil)
				if err != nil {
					return nil, BadJSON("build event: %v", err)
				}
			}
		} else if cur := lookup(content, "redacts"); cur == nil {
			content, err = withMembers(nil, content, nil, []newMember{{key: "redacts", val: idJSON}})
			if err != nil {
				return nil, BadJSON("build event: %v", err)
			}
		} else if string(cur) != string(idJSON) {
			return nil, InvalidParam("build event: content.redacts differs from Redacts")
		}
	}

	// Members in canonical (sorted) order; hashes and signatures are added
	// by hashAndSign.
	var o objectBuilder
	o.begin(make([]byte, 0, 512+len(content)))
	ids, err := appendIDList(nil, rules, p.AuthEvents)
	if err != nil {
		return nil, err
	}
	o.raw("auth_events", ids)
	o.raw("content", content)
	o.raw("depth", appendInt(nil, p.Depth))
	if rules.eventID == idOpaque {
		s, _ := appendString(nil, string(ownID))
		o.raw("event_id", s)
	}
	o.raw("origin_server_ts", appendInt(nil, p.OriginServerTS))
	if ids, err = appendIDList(ids[:0], rules, p.PrevEvents); err != nil {
		return nil, err
	}
	o.raw("prev_events", ids)
	if topRedacts != nil {
		o.raw("redacts", topRedacts)
	}
	if !v12Create {
		s, _ := appendString(nil, string(p.RoomID))
		o.raw("room_id", s)
	}
	s, _ := appendString(nil, string(p.Sender))
	o.raw("sender", s)
	if p.StateKey != nil {
		sk, ok := appendString(nil, *p.StateKey)
		if !ok {
			return nil, InvalidParam("build event: state_key is not valid UTF-8")
		}
		o.raw("state_key", sk)
	}
	t, ok := appendString(nil, p.Type)
	if !ok {
		return nil, InvalidParam("build event: type is not valid UTF-8")
	}
	o.raw("type", t)
	body := o.end()

	signed, id, err := hashAndSign(rules, body, origin, key)
	if err != nil {
		return nil, err
	}
	return parseCanonicalEvent(rules, signed, id)
}

// appendIDList writes prev_events or auth_events. Versions 1 and 2 pair
// each ID with the referenced event's hashes. Strand writes an empty hashes
// object there: the authorisation rules never read these hashes (an event
// is identified by its event_id), and the builder is given IDs alone.
func appendIDList(dst []byte, rules versionRules, ids []EventID) ([]byte, error) {
	dst = append(dst, '[')
	for i, id := range ids {
		if _, err := parseVersionEventID(rules, string(id)); err != nil {
			return nil, InvalidParam("build event: %v", err)
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		if rules.eventID == idOpaque {
			dst = append(dst, '[')
		}
		var ok bool
		if dst, ok = appendString(dst, string(id)); !ok {
			return nil, InvalidParam("build event: event ID %q is not valid UTF-8", id)
		}
		if rules.eventID == idOpaque {
			dst = append(dst, ",{}]"...)
		}
	}
	return append(dst, ']'), nil
}
