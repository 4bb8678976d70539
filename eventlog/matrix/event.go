package matrix

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// MaxEventSize is the largest an event may be, in canonical JSON with its
// signatures (client-server API, "Size limits").
const MaxEventSize = 65536

// Limits on event fields from the spec's event formats.
const (
	maxKeyBytes   = MaxEventTypeBytes // type and state_key (MaxStateKeyBytes is the same)
	maxPrevEvents = 20
	maxAuthEvents = 10
)

// Event types the authorisation rules and redaction algorithms name.
const (
	TypeCreate           = "m.room.create"
	TypeMember           = "m.room.member"
	TypeJoinRules        = "m.room.join_rules"
	TypePowerLevels      = "m.room.power_levels"
	TypeThirdPartyInvite = "m.room.third_party_invite"
	TypeRedaction        = "m.room.redaction"
	TypeHistoryVis       = "m.room.history_visibility"
	TypeAliases          = "m.room.aliases" // meaningful to auth and redaction before v6
)

// Event is a room event (a PDU) of a known room version. It is immutable:
// the canonical JSON it was built or parsed from is the truth, and the
// accessors return fields parsed from it once. Slices returned by accessors
// are shared and must not be modified.
//
// From version 3 on the event ID is not part of the JSON: it is the
// reference hash of the event and is computed on construction. In versions
// 1 and 2 it is the event's own event_id.
type Event struct {
	raw     []byte
	version RoomVersion
	rules   versionRules
	id      EventID

	typ        string
	stateKey   *string
	sender     UserID
	roomID     RoomID
	hasRoomID  bool // room_id present in the JSON; false for v12 create events
	content    json.RawMessage
	prevEvents []EventID
	authEvents []EventID
	depth      int64
	originTS   int64
	hashes     json.RawMessage
	signatures json.RawMessage
	unsigned   json.RawMessage
	redacts    EventID

	// Fields of content that authorisation reads, parsed once.
	membership string       // m.room.member
	joinRule   string       // m.room.join_rules
	power      *PowerLevels // m.room.power_levels: what could be read
	powerErr   error        // non-nil if the content breaks the integer-only rules
	create     *createInfo  // m.room.create
}

// createInfo is what authorisation needs from an m.room.create event.
type createInfo struct {
	roomVersion        string // content.room_version, "1" if absent
	hasRoomVersion     bool
	creator            UserID   // v10: content.creator; later: sender
	additionalCreators []UserID // v12 only
	creatorsErr        error    // additional_creators malformed (v12 rule 1.4)
	noFederate         bool     // content["m.federate"] == false
}

// ID returns the event ID.
func (e *Event) ID() EventID { return e.id }

// Version returns the room version the event was parsed or built for.
func (e *Event) Version() RoomVersion { return e.version }

// JSON returns the event's canonical JSON (the federation format, with
// hashes, signatures and unsigned as present). Do not modify it.
func (e *Event) JSON() []byte { return e.raw }

// MarshalJSON returns JSON(), so an Event embeds as itself.
func (e *Event) MarshalJSON() ([]byte, error) { return e.raw, nil }

// Type returns the event type.
func (e *Event) Type() string { return e.typ }

// StateKey returns the state key, or nil for a non-state event.
func (e *Event) StateKey() *string { return e.stateKey }

// IsState reports whether the event has a state key.
func (e *Event) IsState() bool { return e.stateKey != nil }

// Key returns the (type, state_key) the event sets in the room state; ok is
// false for non-state events.
func (e *Event) Key() (key StateKey, ok bool) {
	if e.stateKey == nil {
		return StateKey{}, false
	}
	return StateKey{Type: e.typ, StateKey: *e.stateKey}, true
}

// Sender returns the sending user.
func (e *Event) Sender() UserID { return e.sender }

// RoomID returns the room. For a version 12 create event, which carries no
// room_id, it is the ID derived from the event's own ID.
func (e *Event) RoomID() RoomID { return e.roomID }

// Content returns the content object.
func (e *Event) Content() json.RawMessage { return e.content }

// PrevEvents returns the prev_events.
func (e *Event) PrevEvents() []EventID { return e.prevEvents }

// AuthEvents returns the auth_events.
func (e *Event) AuthEvents() []EventID { return e.authEvents }

// Depth returns the depth.
func (e *Event) Depth() int64 { return e.depth }

// OriginServerTS returns origin_server_ts, in milliseconds since the epoch.
func (e *Event) OriginServerTS() int64 { return e.originTS }

// Hashes returns the hashes object.
func (e *Event) Hashes() json.RawMessage { return e.hashes }

// Signatures returns the signatures object.
func (e *Event) Signatures() json.RawMessage { return e.signatures }

// Unsigned returns the unsigned object, or nil.
func (e *Event) Unsigned() json.RawMessage { return e.unsigned }

// Redacts returns the event an m.room.redaction redacts: the top-level
// redacts in version 10, content.redacts from version 11 on. It is empty
// for other events.
func (e *Event) Redacts() EventID { return e.redacts }

// Membership returns content.membership of an m.room.member event, or "".
func (e *Event) Membership() string { return e.membership }

// ParseEvent parses and validates an event of room version v from its
// federation-format JSON, and computes its event ID. It checks the event
// format (required fields and their types, ID grammar, size limits) but
// neither hashes nor signatures (see CheckContentHash and VerifySignature)
// nor authorisation (see Authorize). Errors are *Error values, mostly
// M_BAD_JSON.
func ParseEvent(v RoomVersion, raw []byte) (*Event, error) {
	rules, err := v.checkedRules()
	if err != nil {
		return nil, err
	}
	canon, err := CanonicalJSON(raw)
	if err != nil {
		return nil, err
	}
	return parseCanonicalEvent(rules, canon, "")
}

// eventParse is what parseCanonicalEvent learns member by member.
type eventParse struct {
	e     *Event
	rules versionRules
	have  struct{ typ, sender, content, prev, auth, hashes, sigs bool }
	ownID EventID // event_id, versions 1 and 2
}

// parseCanonicalEvent builds an Event from canonical JSON. If id is empty it
// is computed from the reference hash.
func parseCanonicalEvent(rules versionRules, canon []byte, id EventID) (*Event, error) {
	if len(canon) > MaxEventSize {
		return nil, TooLarge("event is %d bytes, more than %d", len(canon), MaxEventSize)
	}
	if !isObject(canon) {
		return nil, BadJSON("event is not a JSON object")
	}
	e := &Event{raw: canon, version: rules.version, rules: rules, depth: -1, originTS: -1}
	p := &eventParse{e: e, rules: rules}
	err := eachMember(canon, func(k, v []byte) (bool, error) {
		return true, p.member(string(k), v)
	})
	if err != nil {
		if _, ok := AsError(err); ok {
			return nil, err
		}
		return nil, BadJSON("event: %v", err)
	}
	if err := p.complete(); err != nil {
		return nil, err
	}
	isV12Create := rules.hashRoomIDs && e.typ == TypeCreate
	if !e.hasRoomID && !isV12Create {
		return nil, BadJSON("event has no room_id")
	}
	switch {
	case rules.eventID == idOpaque:
		if p.ownID == "" {
			return nil, BadJSON("event of room version %s has no event_id", rules.version)
		}
		if id != "" && id != p.ownID {
			return nil, BadJSON("event_id %s is not %s", p.ownID, id)
		}
		id = p.ownID
	case id == "":
		sum, err := referenceHash(rules, canon)
		if err != nil {
			return nil, err
		}
		id = eventIDFromHash(rules, sum[:])
	}
	e.id = id
	if isV12Create && !e.hasRoomID {
		e.roomID = roomIDForCreate(id)
	}
	if e.typ == TypeRedaction && !rules.topLevelRedacts {
		if s, ok := stringMember(e.content, "redacts"); ok {
			if id, err := parseVersionEventID(rules, s); err == nil {
				e.redacts = id
			}
		}
	}
	e.parseAuthContent()
	return e, nil
}

// member reads one top-level member of an event (key k, raw value v).
func (p *eventParse) member(k string, v []byte) error {
	rules := p.rules
	var ok bool
	switch k {
	case "type":
		p.e.typ, ok = decodeString(v)
		if !ok || len(p.e.typ) > maxKeyBytes {
			return BadJSON("event type must be a string of at most %d bytes", maxKeyBytes)
		}
		p.have.typ = true
	case "state_key":
		var sk string
		sk, ok = decodeString(v)
		if !ok || len(sk) > maxKeyBytes {
			return BadJSON("state_key must be a string of at most %d bytes", maxKeyBytes)
		}
		p.e.stateKey = &sk
	case "sender":
		s, ok := decodeString(v)
		if !ok {
			return BadJSON("sender must be a string")
		}
		u, err := ParseUserID(s)
		if err != nil {
			return BadJSON("sender: %v", err)
		}
		p.e.sender, p.have.sender = u, true
	case "room_id":
		s, ok := decodeString(v)
		if !ok {
			return BadJSON("room_id must be a string")
		}
		r, err := ParseRoomID(s)
		if err != nil {
			return BadJSON("room_id: %v", err)
		}
		if r.Hashed() != rules.hashRoomIDs {
			return BadJSON("room_id %q does not have the form room version %s uses", s, rules.version)
		}
		p.e.roomID, p.e.hasRoomID = r, true
	case "content":
		if !isObject(v) {
			return BadJSON("content must be an object")
		}
		p.e.content, p.have.content = v, true
	case "prev_events", "auth_events":
		ids, err := parseEventIDList(rules, v, k)
		if err != nil {
			return err
		}
		if k == "prev_events" {
			p.e.prevEvents, p.have.prev = ids, true
		} else {
			p.e.authEvents, p.have.auth = ids, true
		}
	case "depth":
		if p.e.depth, ok = decodeInt(v); !ok || p.e.depth < 0 {
			return BadJSON("depth must be a non-negative integer")
		}
	case "origin_server_ts":
		if p.e.originTS, ok = decodeInt(v); !ok {
			return BadJSON("origin_server_ts must be an integer")
		}
	case "hashes":
		if !isObject(v) {
			return BadJSON("hashes must be an object")
		}
		p.e.hashes, p.have.hashes = v, true
	case "signatures":
		if !isObject(v) {
			return BadJSON("signatures must be an object")
		}
		p.e.signatures, p.have.sigs = v, true
	case "unsigned":
		if !isObject(v) {
			return BadJSON("unsigned must be an object")
		}
		p.e.unsigned = v
	case "redacts":
		if rules.topLevelRedacts {
			s, ok := decodeString(v)
			if !ok {
				return BadJSON("redacts must be a string")
			}
			id, err := parseVersionEventID(rules, s)
			if err != nil {
				return BadJSON("redacts: %v", err)
			}
			p.e.redacts = id
		}
	case "event_id":
		// Only versions 1 and 2 carry their ID; later versions'
		// event_id (added by careless senders) is not the ID.
		if rules.eventID == idOpaque {
			s, ok := decodeString(v)
			if !ok {
				return BadJSON("event_id must be a string")
			}
			id, err := parseVersionEventID(rules, s)
			if err != nil {
				return BadJSON("event_id: %v", err)
			}
			p.ownID = id
		}
	}
	return nil
}

// complete refuses an event that lacks a member every event has.
func (p *eventParse) complete() error {
	switch {
	case !p.have.typ:
		return BadJSON("event has no type")
	case !p.have.sender:
		return BadJSON("event has no sender")
	case !p.have.content:
		return BadJSON("event has no content")
	case !p.have.prev || !p.have.auth:
		return BadJSON("event lacks prev_events or auth_events")
	case p.e.depth < 0:
		return BadJSON("event has no depth")
	case p.e.originTS < 0:
		return BadJSON("event has no origin_server_ts")
	case !p.have.hashes || !p.have.sigs:
		return BadJSON("event lacks hashes or signatures")
	}
	return nil
}

// parseAuthContent caches the content fields the authorisation rules read,
// so that Authorize never decodes JSON for events already in the state.
func (e *Event) parseAuthContent() {
	if e.stateKey == nil {
		return
	}
	switch e.typ {
	case TypeMember:
		e.membership, _ = stringMember(e.content, "membership")
	case TypeJoinRules:
		e.joinRule, _ = stringMember(e.content, "join_rule")
	case TypePowerLevels:
		e.power, e.powerErr = parsePowerLevels(e.content, e.rules.stringyPowerLevels)
	case TypeCreate:
		e.create = parseCreateInfo(e)
	}
}

func parseCreateInfo(e *Event) *createInfo {
	c := &createInfo{roomVersion: "1", creator: e.sender}
	if s, ok := stringMember(e.content, "room_version"); ok {
		c.roomVersion, c.hasRoomVersion = s, true
	} else if lookup(e.content, "room_version") != nil {
		c.roomVersion, c.hasRoomVersion = "", true // present but not a string: unrecognised
	}
	if e.rules.creatorInContent {
		c.creator = ""
		if s, ok := stringMember(e.content, "creator"); ok {
			if u, err := ParseUserID(s); err == nil {
				c.creator = u
			}
		}
	}
	if f := lookup(e.content, "m.federate"); f != nil && string(f) == "false" {
		c.noFederate = true
	}
	if e.rules.hashRoomIDs {
		if v := lookup(e.content, "additional_creators"); v != nil {
			if !isArray(v) {
				c.creatorsErr = fmt.Errorf("additional_creators is not an array")
			} else {
				c.creatorsErr = eachElement(v, func(el []byte) error {
					s, ok := decodeString(el)
					if !ok {
						return fmt.Errorf("additional_creators holds a non-string")
					}
					u, err := ParseUserID(s)
					if err != nil {
						return fmt.Errorf("additional_creators: %w", err)
					}
					c.additionalCreators = append(c.additionalCreators, u)
					return nil
				})
			}
		}
	}
	return c
}

// parseVersionEventID accepts only the form of event ID the room version
// uses: inside a room every event ID names an event of that room.
func parseVersionEventID(rules versionRules, s string) (EventID, error) {
	switch rules.eventID {
	case idOpaque:
		if isHashID(s[min(1, len(s)):]) || isStdHashID(s[min(1, len(s)):]) {
			return "", fmt.Errorf("event ID %q is a reference hash, not $opaque:server", s)
		}
		return ParseEventID(s)
	case idHashStd:
		if len(s) != 1+hashIDLen || s[0] != '$' || !isStdHashID(s[1:]) {
			return "", fmt.Errorf("event ID %q is not a reference hash in standard base64", s)
		}
	default:
		if len(s) != 1+hashIDLen || s[0] != '$' || !isHashID(s[1:]) {
			return "", fmt.Errorf("event ID %q is not a reference hash", s)
		}
	}
	return EventID(s), nil
}

// parseEventIDList parses prev_events or auth_events: a list of event IDs
// or, in versions 1 and 2, of [event ID, hashes] pairs.
func parseEventIDList(rules versionRules, v []byte, field string) ([]EventID, error) {
	if !isArray(v) {
		return nil, BadJSON("%s must be an array", field)
	}
	ids := []EventID{}
	err := eachElement(v, func(el []byte) error {
		if rules.eventID == idOpaque {
			var pair []json.RawMessage
			if !isArray(el) || json.Unmarshal(el, &pair) != nil || len(pair) != 2 || !isObject(pair[1]) {
				return BadJSON("%s must hold [event ID, hashes] pairs", field)
			}
			el = pair[0]
		}
		s, ok := decodeString(el)
		if !ok {
			return BadJSON("%s must hold event IDs", field)
		}
		id, err := parseVersionEventID(rules, s)
		if err != nil {
			return BadJSON("%s: %v", field, err)
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		if _, ok := AsError(err); ok {
			return nil, err
		}
		return nil, BadJSON("%s: %v", field, err)
	}
	limit := maxPrevEvents
	if field == "auth_events" {
		limit = maxAuthEvents
	}
	if len(ids) > limit {
		return nil, BadJSON("%s holds %d events, more than %d", field, len(ids), limit)
	}
	return ids, nil
}

// ContentHash returns the content hash of an event ("Calculating the
// content hash for an event"): the sha256 of its canonical JSON without
// unsigned, signatures and hashes. It covers the unredacted event.
func ContentHash(raw []byte) ([sha256.Size]byte, error) {
	canon, err := CanonicalJSON(raw)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return contentHash(canon)
}

func contentHash(canon []byte) ([sha256.Size]byte, error) {
	h := sha256.New()
	n := 0
	h.Write([]byte{'{'})
	err := eachMember(canon, func(k, v []byte) (bool, error) {
		switch string(k) {
		case "unsigned", "signatures", "hashes":
			return true, nil
		}
		if n > 0 {
			h.Write([]byte{','})
		}
		n++
		h.Write([]byte{'"'})
		h.Write(k)
		h.Write([]byte{'"', ':'})
		h.Write(v)
		return true, nil
	})
	if err != nil {
		return [sha256.Size]byte{}, BadJSON("content hash: event is not an object")
	}
	h.Write([]byte{'}'})
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum, nil
}

// ReferenceHash returns the reference hash of an event of version v
// ("Calculating the reference hash for an event"): the sha256 of its
// redacted canonical JSON without signatures and unsigned. From version 3
// the event ID is "$" and this hash in unpadded base64 (URL-safe from
// version 4).
func ReferenceHash(v RoomVersion, raw []byte) ([sha256.Size]byte, error) {
	rules, err := v.checkedRules()
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	canon, err := CanonicalJSON(raw)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return referenceHash(rules, canon)
}

func referenceHash(rules versionRules, canon []byte) ([sha256.Size]byte, error) {
	red, err := redact(nil, rules, canon, false)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(red), nil
}

// CheckContentHash reports whether hashes.sha256 matches the content hash.
// A mismatch means the event reached us redacted or altered; the spec says
// to continue with the redacted form (see Redact).
func (e *Event) CheckContentHash() error {
	want, ok := stringMember(e.hashes, "sha256")
	if !ok {
		return Forbidden("event %s has no sha256 content hash", e.id)
	}
	wantSum, err := DecodeBase64(want)
	if err != nil {
		return Forbidden("event %s: content hash is not base64", e.id)
	}
	sum, err := contentHash(e.raw)
	if err != nil {
		return err
	}
	if !bytes.Equal(sum[:], wantSum) {
		return Forbidden("event %s: content hash mismatch", e.id)
	}
	return nil
}

// VerifySignature checks the event's signature by server with the key
// keyID, whose public key is pub. The signature covers the redacted event,
// so it verifies equally on a redacted copy.
func (e *Event) VerifySignature(server ServerName, keyID KeyID, pub ed25519.PublicKey) error {
	red, err := redact(nil, e.rules, e.raw, true)
	if err != nil {
		return err
	}
	return verifyCanonical(red, string(server), keyID, pub)
}

// Redact returns the event as the room version's redaction algorithm leaves
// it: same ID, same hashes and signatures, stripped content and no unsigned.
// A redacted state event still counts in the room state.
func (e *Event) Redact() (*Event, error) {
	red, err := redact(nil, e.rules, e.raw, true)
	if err != nil {
		return nil, err
	}
	return parseCanonicalEvent(e.rules, red, e.id)
}

// RedactEventJSON applies the redaction algorithm of room version v to an
// event's JSON, keeping signatures. The result is canonical JSON.
func RedactEventJSON(v RoomVersion, raw []byte) ([]byte, error) {
	rules, err := v.checkedRules()
	if err != nil {
		return nil, err
	}
	canon, err := CanonicalJSON(raw)
	if err != nil {
		return nil, err
	}
	return redact(nil, rules, canon, true)
}

// redact appends to dst the redacted form of the canonical event canon.
// Without keepSignatures it also drops signatures, which gives the bytes
// that are signed and whose sha256 is the reference hash.
func redact(dst []byte, rules versionRules, canon []byte, keepSignatures bool) ([]byte, error) {
	var typ string
	if v := lookup(canon, "type"); v != nil {
		typ, _ = decodeString(v)
	}
	var o objectBuilder
	o.begin(dst)
	err := eachMember(canon, func(k, v []byte) (bool, error) {
		key := string(k)
		switch key {
		case "content":
			c, err := redactContent(rules, typ, v)
			if err != nil {
				return false, err
			}
			o.member(k, c)
			return true, nil
		case "signatures":
			if keepSignatures {
				o.member(k, v)
			}
			return true, nil
		}
		if keepTopLevel(rules, key) {
			o.member(k, v)
		}
		return true, nil
	})
	if err != nil {
		return nil, BadJSON("redact: %v", err)
	}
	return o.end(), nil
}

// keepTopLevel reports whether a top-level key survives redaction.
func keepTopLevel(rules versionRules, key string) bool {
	switch key {
	case "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
		"signatures", "depth", "prev_events", "auth_events", "origin_server_ts":
		return true
	case "prev_state", "origin", "membership":
		return rules.redaction < redactV11
	}
	return false
}

// redactContent strips content down to the keys the event type keeps.
func redactContent(rules versionRules, typ string, content []byte) ([]byte, error) {
	if !isObject(content) {
		return []byte("{}"), nil
	}
	alg := rules.redaction
	v11 := alg == redactV11
	var keep func(key string) bool
	switch typ {
	case TypeMember:
		keep = func(k string) bool {
			return k == "membership" || alg >= redactV9 && k == "join_authorised_via_users_server"
		}
	case TypeCreate:
		if v11 {
			return content, nil
		}
		keep = func(k string) bool { return k == "creator" }
	case TypeJoinRules:
		keep = func(k string) bool { return k == "join_rule" || alg >= redactV8 && k == "allow" }
	case TypePowerLevels:
		keep = func(k string) bool {
			switch k {
			case "ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default":
				return true
			case "invite":
				return v11
			}
			return false
		}
	case TypeHistoryVis:
		keep = func(k string) bool { return k == "history_visibility" }
	case TypeRedaction:
		keep = func(k string) bool { return v11 && k == "redacts" }
	case TypeAliases:
		keep = func(k string) bool { return alg == redactV1 && k == "aliases" }
	default:
		return []byte("{}"), nil
	}
	var o objectBuilder
	o.begin(make([]byte, 0, len(content)))
	err := eachMember(content, func(k, v []byte) (bool, error) {
		if keep(string(k)) {
			o.member(k, v)
			return true, nil
		}
		// v11: a member event keeps third_party_invite.signed only.
		if v11 && typ == TypeMember && string(k) == "third_party_invite" && isObject(v) {
			var inner objectBuilder
			inner.begin(nil)
			if s := lookup(v, "signed"); s != nil {
				inner.raw("signed", s)
			}
			o.member(k, inner.end())
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return o.end(), nil
}

// SignEventJSON adds the content hash and origin's signature to an event of
// version v ("Adding hashes and signatures to outgoing events"): the sha256
// content hash goes into hashes, then the redacted event is signed and the
// signature merged into signatures. It does not check the event format;
// BuildEvent does that and is what servers use. The result is canonical.
func SignEventJSON(v RoomVersion, raw []byte, origin ServerName, key *KeyPair) ([]byte, error) {
	rules, err := v.checkedRules()
	if err != nil {
		return nil, err
	}
	canon, err := CanonicalJSON(raw)
	if err != nil {
		return nil, err
	}
	if !isObject(canon) {
		return nil, BadJSON("event is not a JSON object")
	}
	signed, _, err := hashAndSign(rules, canon, origin, key)
	return signed, err
}

// hashAndSign implements SignEventJSON on canonical input and also returns
// the event ID, which falls out of the same redacted bytes that are signed.
func hashAndSign(rules versionRules, canon []byte, origin ServerName, key *KeyPair) ([]byte, EventID, error) {
	sum, err := contentHash(canon)
	if err != nil {
		return nil, "", err
	}
	var hb objectBuilder
	hb.begin(make([]byte, 0, 64))
	b64, _ := appendString(nil, base64.RawStdEncoding.EncodeToString(sum[:]))
	hb.raw("sha256", b64)
	hashes := hb.end()
	withHashes, err := withMembers(make([]byte, 0, len(canon)+160), canon,
		func(k, _ []byte) bool { return string(k) == "hashes" },
		[]newMember{{key: "hashes", val: hashes}})
	if err != nil {
		return nil, "", BadJSON("sign event: %v", err)
	}
	payload, err := redact(nil, rules, withHashes, false)
	if err != nil {
		return nil, "", err
	}
	var id EventID
	if rules.eventID == idOpaque {
		s, _ := stringMember(payload, "event_id")
		id = EventID(s)
	} else {
		id = eventIDFromHash(rules, sha256Of(payload))
	}
	var sigs []byte
	if v := lookup(withHashes, "signatures"); v != nil {
		sigs = v
	}
	merged, err := addSignature(sigs, string(origin), key.id, key.Sign(payload))
	if err != nil {
		return nil, "", err
	}
	out, err := withMembers(make([]byte, 0, len(withHashes)+len(merged)+16), withHashes,
		func(k, _ []byte) bool { return string(k) == "signatures" },
		[]newMember{{key: "signatures", val: merged}})
	if err != nil {
		return nil, "", BadJSON("sign event: %v", err)
	}
	return out, id, nil
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
