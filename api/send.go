package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// maxTypeBytes bounds event types and state keys (the spec's 255 bytes).
const maxTypeBytes = matrix.MaxEventTypeBytes

// readContent reads an event content object from the body.
func readContent(r *http.Request) (json.RawMessage, error) {
	var c map[string]json.RawMessage
	if err := matrix.DecodeJSON(r, &c, false); err != nil {
		return nil, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, matrix.BadJSON("invalid content")
	}
	if len(b) > matrix.MaxEventSize {
		return nil, matrix.TooLarge("event content exceeds %d bytes", matrix.MaxEventSize)
	}
	return b, nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
// POST /_matrix/client/v3/rooms/{roomId}/send/{eventType}
//
// send is PUT .../send/{eventType}/{txnId} (idempotent per device) and the
// classic guide's POST .../send/{eventType}.
func (s *Server) send(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	typ, err := eventTypeVar(r)
	if err != nil {
		return err
	}
	ss := session(r)
	id, err := txnIDVar(r)
	if err != nil {
		return err
	}
	var txn *txnRef
	if id != "" {
		// Transaction IDs are scoped to the endpoint, as the request path
		// is: "send:" here, "redact:" for redactions.
		txn = &txnRef{sender: ss.UserID, device: ss.DeviceID, id: "send:" + id}
		if eventID, err := s.store.EventByTxn(r.Context(), roomID, ss.UserID, ss.DeviceID, txn.id); err == nil {
			matrix.WriteJSON(w, http.StatusOK, map[string]string{"event_id": eventID})
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	c, err := readContent(r)
	if err != nil {
		return err
	}
	if typ == matrix.TypeCreate {
		return errCreateIsFixed()
	}
	if typ == "m.room.message" {
		if err := checkMessage(c); err != nil {
			return err
		}
	}
	// The spec has /send accept redactions too (content.redacts, moved
	// to the top level before version 11 by BuildEvent): they are held to
	// the same rules as /redact's in buildEvents.
	redacts, err := s.redactionTarget(r, roomID, typ, c)
	if err != nil {
		return err
	}
	ts, err := massagedTS(r)
	if err != nil {
		return err
	}
	evs, err := s.writeRoom(r.Context(), roomID, txn, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
		return []*matrix.ProtoEvent{{Type: typ, Sender: matrix.UserID(ss.UserID), Content: c, Redacts: redacts, OriginServerTS: ts}}, nil
	})
	return s.answerWrite(w, r, roomID, txn, evs, err)
}

// redactionTarget reads the target of an m.room.redaction sent through
// /send or /state (content.redacts, required) and waits until it is known
// as an event of the room: a redaction is a redaction by its type, however
// it is sent. It returns "" for other types.
func (s *Server) redactionTarget(r *http.Request, roomID, typ string, c json.RawMessage) (matrix.EventID, error) {
	if typ != matrix.TypeRedaction {
		return "", nil
	}
	var rc struct {
		Redacts *string `json:"redacts"`
	}
	if err := json.Unmarshal(c, &rc); err != nil {
		return "", matrix.BadJSON("m.room.redaction: redacts must be a string")
	}
	if rc.Redacts == nil {
		return "", matrix.Errorf("M_MISSING_PARAM", http.StatusBadRequest, "m.room.redaction needs content.redacts")
	}
	id, err := matrix.ParseEventID(*rc.Redacts)
	if err != nil {
		return "", matrix.InvalidParam("invalid redacts: %v", err)
	}
	return id, s.awaitRedactionTarget(r.Context(), roomID, id)
}

// checkCreatorsUnlisted refuses, as a malformed request (400), power
// levels that list a room creator of a version 12 room: their power is
// infinite and cannot be written down. The auth rules refuse such events
// too (403); Complement's TestMSC4289PrivilegedRoomCreators expects 400,
// as for a bad power_level_content_override at createRoom.
func checkCreatorsUnlisted(st matrix.State, content json.RawMessage) error {
	create := st.Create()
	if create == nil || !create.Version().CreatorsHaveInfinitePower() {
		return nil
	}
	var pl struct {
		Users map[string]json.RawMessage `json:"users"`
	}
	if json.Unmarshal(content, &pl) != nil {
		return nil // checkStateContent has refused it already
	}
	for _, c := range st.Creators() {
		if _, ok := pl.Users[string(c)]; ok {
			return matrix.BadJSON("%s is a creator of this room, whose power cannot be listed in m.room.power_levels", c)
		}
	}
	return nil
}

// errCreateIsFixed is the answer to any attempt to send m.room.create into
// an existing room: the auth rules reject every create event but the
// room's first. It is a malformed request (400) rather than a refusal of
// the sender (403): no one may send it, whatever their power, and
// Complement (TestMSC4291RoomIDAsHashOfCreateEvent_CannotSendCreateEvent)
// expects 400, as Synapse answers.
func errCreateIsFixed() error {
	return matrix.BadJSON("a room's m.room.create event cannot be changed")
}

// answerWrite answers a single-event write with its event ID; a retry that
// lost to its own earlier attempt gets that attempt's event ID.
func (s *Server) answerWrite(w http.ResponseWriter, r *http.Request, roomID string, txn *txnRef, evs []*matrix.Event, err error) error {
	if errors.Is(err, errDuplicateTxn) && txn != nil {
		id, lerr := s.store.EventByTxn(r.Context(), roomID, txn.sender, txn.device, txn.id)
		if lerr != nil {
			return lerr
		}
		matrix.WriteJSON(w, http.StatusOK, map[string]string{"event_id": id})
		return nil
	}
	if err != nil {
		return errNotInRoom(err, roomID)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"event_id": string(evs[0].ID())})
	return nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}
// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey:.*}
func (s *Server) putState(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	typ, err := eventTypeVar(r)
	if err != nil {
		return err
	}
	stateKey := pathVar(r, "stateKey")
	if len(stateKey) > matrix.MaxStateKeyBytes {
		return matrix.InvalidParam("state key too long")
	}
	c, err := readContent(r)
	if err != nil {
		return err
	}
	if typ == matrix.TypeCreate {
		return errCreateIsFixed()
	}
	if err := checkStateContent(typ, stateKey, c); err != nil {
		return err
	}
	// A state event of type m.room.redaction is a redaction as well (the
	// room version reads redacts by type, not by state key), so it gets
	// /send's treatment and buildEvents' checks.
	redacts, err := s.redactionTarget(r, roomID, typ, c)
	if err != nil {
		return err
	}
	if typ == "m.room.canonical_alias" {
		if err := s.checkCanonicalAlias(r, roomID, c); err != nil {
			return err
		}
	}
	ss := session(r)
	ts, err := massagedTS(r)
	if err != nil {
		return err
	}
	if typ == matrix.TypeMember {
		if _, err := matrix.ParseUserID(stateKey); err != nil {
			return matrix.InvalidParam("the state key of m.room.member must be a user ID")
		}
	}
	var existing string
	evs, err := s.writeRoom(r.Context(), roomID, nil, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
		c := c
		if typ == matrix.TypePowerLevels {
			if err := checkCreatorsUnlisted(rs.state, c); err != nil {
				return nil, err
			}
		}
		if typ == matrix.TypeMember && stateKey == ss.UserID {
			var err error
			if c, err = s.withJoinAuthoriser(r.Context(), rs.state, matrix.UserID(ss.UserID), c); err != nil {
				return nil, err
			}
		}
		// Setting state to what it already is by the same sender is a
		// no-op that returns the existing event, as clients retry these.
		if cur := rs.state.Get(matrix.StateKey{Type: typ, StateKey: stateKey}); cur != nil &&
			string(cur.Sender()) == ss.UserID && canonicalEqual(cur.Content(), c) {
			existing = string(cur.ID())
			return nil, nil
		}
		return []*matrix.ProtoEvent{{Type: typ, StateKey: stateKeyPtr(stateKey), Sender: matrix.UserID(ss.UserID), Content: c, Redacts: redacts, OriginServerTS: ts}}, nil
	})
	if err == nil && existing != "" {
		matrix.WriteJSON(w, http.StatusOK, map[string]string{"event_id": existing})
		return nil
	}
	return s.answerWrite(w, r, roomID, nil, evs, err)
}

func canonicalEqual(a, b json.RawMessage) bool {
	ca, err1 := matrix.CanonicalJSON(a)
	cb, err2 := matrix.CanonicalJSON(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca, cb)
}

// PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
// POST /_matrix/client/v3/rooms/{roomId}/redact/{eventId}
func (s *Server) redactEvent(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	target, err := matrix.ParseEventID(pathVar(r, "eventId"))
	if err != nil {
		return matrix.InvalidParam("invalid event ID: %v", err)
	}
	ss := session(r)
	id, err := txnIDVar(r)
	if err != nil {
		return err
	}
	var txn *txnRef
	if id != "" {
		txn = &txnRef{sender: ss.UserID, device: ss.DeviceID, id: "redact:" + id}
		if eventID, err := s.store.EventByTxn(r.Context(), roomID, ss.UserID, ss.DeviceID, txn.id); err == nil {
			matrix.WriteJSON(w, http.StatusOK, map[string]string{"event_id": eventID})
			return nil
		}
	}
	var req struct {
		Reason *string `json:"reason"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	if err := s.awaitRedactionTarget(r.Context(), roomID, target); err != nil {
		return err
	}
	evs, err := s.writeRoom(r.Context(), roomID, txn, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
		// The auth rules let any member send a redaction; whether it may
		// take effect on the target is decided in buildEvents, against the
		// same state the redaction is appended on.
		return []*matrix.ProtoEvent{{Type: matrix.TypeRedaction, Sender: matrix.UserID(ss.UserID), Redacts: target,
			Content: withReason(map[string]any{}, req.Reason)}}, nil
	})
	return s.answerWrite(w, r, roomID, txn, evs, err)
}

// requiredMessageFields are the string fields each standard msgtype must
// carry (client-server API, "m.room.message msgtypes"). Other msgtypes are
// accepted as they are: the spec leaves room for custom ones.
var requiredMessageFields = map[string][]string{
	"m.text":     {"body"},
	"m.emote":    {"body"},
	"m.notice":   {"body"},
	"m.image":    {"body"},
	"m.file":     {"body"},
	"m.audio":    {"body"},
	"m.video":    {"body"},
	"m.location": {"body", "geo_uri"},
}

// checkMessage refuses standard messages that lack their required fields
// or give them the wrong type; media must name a url or an encrypted file.
func checkMessage(content json.RawMessage) error {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil {
		return matrix.BadJSON("invalid content")
	}
	var msgtype string
	if raw, ok := c["msgtype"]; ok && json.Unmarshal(raw, &msgtype) != nil {
		return matrix.BadJSON("msgtype must be a string")
	}
	for _, field := range requiredMessageFields[msgtype] {
		var v string
		if raw, ok := c[field]; !ok || json.Unmarshal(raw, &v) != nil {
			return matrix.BadJSON("%s messages need a string %s", msgtype, field)
		}
	}
	switch msgtype {
	case "m.image", "m.file", "m.audio", "m.video":
		_, hasURL := c["url"]
		_, hasFile := c["file"]
		if !hasURL && !hasFile {
			return matrix.BadJSON("%s messages need a url or a file", msgtype)
		}
	}
	return nil
}

// checkStateContent refuses malformed content of the state events whose
// content the server interprets, with 400 rather than letting a wrong
// type change what the event means (a join_rule of 5 is not "invite").
func checkStateContent(typ, stateKey string, content json.RawMessage) error {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil {
		return matrix.BadJSON("invalid content")
	}
	str := func(field string, required bool, allowed ...string) error {
		raw, ok := c[field]
		if !ok {
			if required {
				return matrix.BadJSON("%s needs %s", typ, field)
			}
			return nil
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return matrix.BadJSON("%s.%s must be a string", typ, field)
		}
		if len(allowed) > 0 && !slices.Contains(allowed, v) {
			return matrix.BadJSON("%s.%s must be one of %v", typ, field, allowed)
		}
		return nil
	}
	switch typ {
	case matrix.TypeJoinRules:
		return str("join_rule", true, "public", "invite", "knock", "restricted", "knock_restricted", "private")
	case matrix.TypeHistoryVis:
		return str("history_visibility", true, "world_readable", "shared", "invited", "joined")
	case "m.room.guest_access":
		return str("guest_access", true, "can_join", "forbidden")
	case "m.room.name":
		return str("name", false)
	case "m.room.topic":
		return str("topic", false)
	case matrix.TypeMember:
		return str("membership", true, "join", "invite", "leave", "ban", "knock")
	case matrix.TypePowerLevels:
		if _, err := matrix.ParsePowerLevels(content); err != nil {
			return matrix.BadJSON("invalid power levels: %v", err)
		}
	}
	return nil
}

// checkCanonicalAlias requires the aliases an m.room.canonical_alias event
// names to be valid and, for this server's aliases, to point at the room.
func (s *Server) checkCanonicalAlias(r *http.Request, roomID string, content json.RawMessage) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return matrix.BadJSON("invalid m.room.canonical_alias content: %v", err)
	}
	aliases := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		aliases = append(aliases, *c.Alias)
	}
	for _, a := range aliases {
		alias, err := matrix.ParseRoomAlias(a)
		if err != nil {
			return matrix.InvalidParam("invalid alias %q: %v", a, err)
		}
		if alias.Server() != s.cfg.ServerName {
			continue // another server's alias; nothing to check it against
		}
		target, _, err := s.store.AliasRoom(r.Context(), a)
		if errors.Is(err, store.ErrNotFound) || (err == nil && target != roomID) {
			return matrix.Errorf("M_BAD_ALIAS", http.StatusBadRequest, "alias %s does not point at this room", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
