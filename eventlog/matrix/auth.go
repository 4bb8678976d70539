package matrix

import (
	"crypto/ed25519"
	"strings"
)

// authEventKeys returns the state an event may cite in auth_events, per
// "Auth events selection" (server-server API): the create event (not in
// version 12), the power levels, the sender's membership and, for member
// events, the target's membership, the join rules (join, invite, knock),
// the third-party invite an invite redeems, and the member event of the
// user authorising a restricted join.
func authEventKeys(rules versionRules, typ string, stateKey *string, sender UserID, content []byte) []StateKey {
	if typ == TypeCreate {
		return nil
	}
	keys := make([]StateKey, 0, 7)
	if rules.createInAuthEvents {
		keys = append(keys, StateKey{Type: TypeCreate})
	}
	keys = append(keys, StateKey{Type: TypePowerLevels}, StateKey{Type: TypeMember, StateKey: string(sender)})
	if typ != TypeMember || stateKey == nil {
		return keys
	}
	if *stateKey != string(sender) {
		keys = append(keys, StateKey{Type: TypeMember, StateKey: *stateKey})
	}
	membership, _ := stringMember(content, "membership")
	switch membership {
	case MembershipJoin, MembershipInvite, MembershipKnock:
		keys = append(keys, StateKey{Type: TypeJoinRules})
	}
	if membership == MembershipInvite {
		if tpi := lookup(content, "third_party_invite"); isObject(tpi) {
			if signed := lookup(tpi, "signed"); isObject(signed) {
				if token, ok := stringMember(signed, "token"); ok {
					keys = append(keys, StateKey{Type: TypeThirdPartyInvite, StateKey: token})
				}
			}
		}
	}
	if membership == MembershipJoin && rules.restrictedJoins {
		if via, ok := stringMember(content, "join_authorised_via_users_server"); ok && via != string(sender) && via != *stateKey {
			keys = append(keys, StateKey{Type: TypeMember, StateKey: via})
		}
	}
	return keys
}

// AuthEventsFor selects the auth_events for p from the room state (see
// authEventKeys). A create event has none. The room version is the one the
// state's create event gives.
func AuthEventsFor(state State, p *ProtoEvent) ([]EventID, error) {
	if p.Type == TypeCreate {
		return []EventID{}, nil
	}
	create := state.Create()
	if create == nil {
		return nil, Forbidden("room has no create event")
	}
	content := []byte("{}")
	if len(p.Content) > 0 {
		var err error
		if content, err = CanonicalJSON(p.Content); err != nil {
			return nil, err
		}
	}
	ids := make([]EventID, 0, 5)
	for _, k := range authEventKeys(create.rules, p.Type, p.StateKey, p.Sender, content) {
		if ev := state.Get(k); ev != nil {
			ids = append(ids, ev.ID())
		}
	}
	return ids, nil
}

// Authorize applies the authorisation rules of ev's room version
// (content/rooms/v1.md … v12.md, "Authorization rules") to ev
// against state, the room state before ev. It returns nil if ev is allowed
// and an *Error with M_FORBIDDEN saying which rule rejected it if not.
//
// Rules that need what a pure function cannot have are checked as far as
// the state allows, and documented where they fall short:
//   - auth_events must name exactly the current state events for keys the
//     selection algorithm allows. Strand checks every event against the
//     state it appends on, so this is the spec's rule on auth_events with
//     "the auth events" and "the state before the event" being the same.
//   - Signatures are checked by the caller (Event.VerifySignature), which
//     holds the keys. For join_authorised_via_users_server, Authorize
//     requires a signature entry from that user's server to be present.
//   - Restricted joins are authorised per the rules (the authorising user
//     must be joined and able to invite); whether the joiner belongs to an
//     allowed room is for the authorising server to decide before it signs.
//   - Versions 1 and 2 differ from 3 on in state resolution, which a single
//     server appending to one linear order never runs, and in rule 11 on
//     redactions, which is applied. Versions 1–5 accept power levels
//     written as floats; Strand's events are canonical JSON, which has no
//     floats, so such levels are refused as bad JSON before authorisation.
//     Before v10 the power levels rule checks only users; Strand holds the
//     other levels to the same form (integers, or integer strings before
//     v10), since levels it cannot read it cannot apply.
//
// Beyond the spec, Authorize rejects events whose version differs from the
// room's, create events whose state_key is not "" or whose room_version
// disagrees with the version they were parsed as, and member events whose
// state_key is not a user ID: none of these can arise from a correct server.
func Authorize(ev *Event, state State) error {
	rules := ev.rules
	if ev.typ == TypeCreate {
		return authorizeCreate(ev)
	}
	create := state.Create()
	if create == nil || create.create == nil {
		return Forbidden("room has no create event")
	}
	if create.version != ev.version {
		return Forbidden("event of room version %s in a room of version %s", ev.version, create.version)
	}
	// v12 rule 2 (and, through the create auth event, v10/v11 rule 2.5).
	if ev.roomID != create.roomID {
		return Forbidden("event's room %s is not the room %s its create event founded", ev.roomID, create.roomID)
	}
	if err := checkAuthEvents(ev, state, rules, create); err != nil {
		return err
	}
	if create.create.noFederate && ev.sender.Server() != create.sender.Server() {
		return Forbidden("room does not federate and %s is not on %s", ev.sender, create.sender.Server())
	}
	// v1–v5 rule 4: a server names its own aliases, member or not.
	if rules.aliasesRule && ev.typ == TypeAliases {
		if ev.stateKey == nil || *ev.stateKey != string(ev.sender.Server()) {
			return Forbidden("m.room.aliases must have the sender's server as its state_key")
		}
		return nil
	}
	if ev.typ == TypeMember {
		return authorizeMember(ev, state, create)
	}
	if state.Membership(ev.sender) != MembershipJoin {
		return Forbidden("%s is not joined to the room", ev.sender)
	}
	senderLevel := state.UserPowerLevel(ev.sender)
	pl := state.PowerLevels()
	if ev.typ == TypeThirdPartyInvite {
		if senderLevel >= pl.Invite {
			return nil
		}
		return Forbidden("%s has power %d, below the invite level %d", ev.sender, senderLevel, pl.Invite)
	}
	if need := pl.EventLevel(ev.typ, ev.stateKey != nil); need > senderLevel {
		return Forbidden("sending %s needs power %d; %s has %d", ev.typ, need, ev.sender, senderLevel)
	}
	if ev.stateKey != nil && strings.HasPrefix(*ev.stateKey, "@") && *ev.stateKey != string(ev.sender) {
		return Forbidden("state_key %q is another user's ID", *ev.stateKey)
	}
	if ev.typ == TypePowerLevels {
		return authorizePowerLevels(ev, state, senderLevel)
	}
	// v1–v2 rule 11: the redact level, or the redaction's event_id on the
	// server of the redacted event's event_id.
	if rules.redactionRule && ev.typ == TypeRedaction && senderLevel < pl.Redact {
		if ev.redacts == "" || eventIDServer(ev.redacts) != eventIDServer(ev.id) || eventIDServer(ev.id) == "" {
			return Forbidden("redacting needs power %d, or an event of the same server; %s has %d", pl.Redact, ev.sender, senderLevel)
		}
	}
	return nil
}

// eventIDServer is the server part of a "$opaque:server" event ID, or "".
func eventIDServer(id EventID) string {
	if i := strings.IndexByte(string(id), ':'); i > 0 {
		return string(id[i+1:])
	}
	return ""
}

func authorizeCreate(ev *Event) error {
	c := ev.create
	if ev.stateKey == nil || *ev.stateKey != "" || c == nil {
		return Forbidden("create event must have the state_key \"\"")
	}
	if len(ev.prevEvents) > 0 {
		return Forbidden("create event has prev_events")
	}
	if ev.rules.hashRoomIDs {
		if ev.hasRoomID {
			return Forbidden("create event of room version %s has a room_id", ev.version)
		}
	} else if server, ok := ev.roomID.Server(); !ok || server != ev.sender.Server() {
		return Forbidden("create event's room %s is not on the sender's server %s", ev.roomID, ev.sender.Server())
	}
	if c.hasRoomVersion && !RoomVersion(c.roomVersion).Supported() {
		return Forbidden("unrecognised room_version %q", c.roomVersion)
	}
	if RoomVersion(c.roomVersion) != ev.version {
		return Forbidden("create event says room version %q, not %s", c.roomVersion, ev.version)
	}
	if ev.rules.creatorInContent && c.creator == "" {
		return Forbidden("create event has no valid content.creator")
	}
	if c.creatorsErr != nil {
		return Forbidden("create event: %v", c.creatorsErr)
	}
	return nil
}

// checkAuthEvents applies the rules on auth_events (v10/v11 rule 2, v12
// rule 3) against the state.
func checkAuthEvents(ev *Event, state State, rules versionRules, create *Event) error {
	allowed := authEventKeys(rules, ev.typ, ev.stateKey, ev.sender, ev.content)
	haveCreate := false
	for i, id := range ev.authEvents {
		for _, prev := range ev.authEvents[:i] {
			if prev == id {
				return Forbidden("auth_events lists %s twice", id)
			}
		}
		var found *Event
		for _, k := range allowed {
			if cur := state.Get(k); cur != nil && cur.id == id {
				found = cur
				break
			}
		}
		if found == nil {
			return Forbidden("auth event %s is not current state this event may cite", id)
		}
		if found.roomID != ev.roomID {
			return Forbidden("auth event %s is in another room", id)
		}
		if found == create {
			haveCreate = true
		}
	}
	if rules.createInAuthEvents && !haveCreate {
		return Forbidden("auth_events lack the create event")
	}
	return nil
}

func authorizeMember(ev *Event, state State, create *Event) error {
	if ev.stateKey == nil || ev.membership == "" {
		return Forbidden("member event without state_key or membership")
	}
	target, err := ParseUserID(*ev.stateKey)
	if err != nil {
		return Forbidden("member event's state_key is not a user ID: %v", err)
	}
	rules := create.rules
	var via UserID
	// Rule 4.2 of v8+; earlier versions give the key no meaning.
	if raw := lookup(ev.content, "join_authorised_via_users_server"); raw != nil && rules.restrictedJoins {
		s, ok := decodeString(raw)
		if !ok {
			return Forbidden("join_authorised_via_users_server is not a string")
		}
		if via, err = ParseUserID(s); err != nil {
			return Forbidden("join_authorised_via_users_server: %v", err)
		}
		if !hasSignatureFrom(ev.signatures, via.Server()) {
			return Forbidden("event is not signed by %s, the server of %s", via.Server(), via)
		}
	}
	sender := ev.sender
	senderMembership := state.Membership(sender)
	targetMembership := state.Membership(target)
	pl := state.PowerLevels()

	switch ev.membership {
	case MembershipJoin:
		creator := create.sender
		if create.rules.creatorInContent {
			creator = create.create.creator
		}
		if len(ev.prevEvents) == 1 && ev.prevEvents[0] == create.id && target == creator {
			return nil
		}
		if sender != target {
			return Forbidden("%s cannot join on behalf of %s", sender, target)
		}
		if senderMembership == MembershipBan {
			return Forbidden("%s is banned", sender)
		}
		rule := state.JoinRule()
		// A join rule the version does not know admits no one.
		known := rule == JoinRuleInvite || rule == JoinRulePublic ||
			rule == JoinRuleKnock && rules.knocking ||
			rule == JoinRuleRestricted && rules.restrictedJoins ||
			rule == JoinRuleKnockRestricted && rules.knockRestricted
		if !known {
			return Forbidden("join rule %q admits no one in room version %s", rule, rules.version)
		}
		switch rule {
		case JoinRuleInvite, JoinRuleKnock:
			if senderMembership == MembershipInvite || senderMembership == MembershipJoin {
				return nil
			}
			return Forbidden("join rule is %s and %s is not invited", rule, sender)
		case JoinRuleRestricted, JoinRuleKnockRestricted:
			if senderMembership == MembershipInvite || senderMembership == MembershipJoin {
				return nil
			}
			if via == "" {
				return Forbidden("join rule is %s and no member authorised the join", rule)
			}
			if state.Membership(via) != MembershipJoin {
				return Forbidden("%s, who authorised the join, is not joined", via)
			}
			if state.UserPowerLevel(via) < pl.Invite {
				return Forbidden("%s, who authorised the join, cannot invite", via)
			}
			return nil
		case JoinRulePublic:
			return nil
		default:
			return Forbidden("join rule %q admits no one", rule)
		}

	case MembershipInvite:
		if tpi := lookup(ev.content, "third_party_invite"); tpi != nil {
			return authorizeThirdPartyInvite(ev, state, target, targetMembership, tpi)
		}
		if senderMembership != MembershipJoin {
			return Forbidden("%s is not joined and cannot invite", sender)
		}
		if targetMembership == MembershipJoin || targetMembership == MembershipBan {
			return Forbidden("%s cannot be invited: membership is %s", target, targetMembership)
		}
		if level := state.UserPowerLevel(sender); level < pl.Invite {
			return Forbidden("%s has power %d, below the invite level %d", sender, level, pl.Invite)
		}
		return nil

	case MembershipLeave:
		if sender == target {
			switch senderMembership {
			case MembershipInvite, MembershipJoin:
				return nil
			case MembershipKnock:
				if rules.knocking { // rescinding a knock, v7+
					return nil
				}
			}
			return Forbidden("%s cannot leave from membership %s", sender, senderMembership)
		}
		if senderMembership != MembershipJoin {
			return Forbidden("%s is not joined and cannot kick", sender)
		}
		senderLevel := state.UserPowerLevel(sender)
		if targetMembership == MembershipBan && senderLevel < pl.Ban {
			return Forbidden("unbanning needs power %d; %s has %d", pl.Ban, sender, senderLevel)
		}
		if senderLevel >= pl.Kick && state.UserPowerLevel(target) < senderLevel {
			return nil
		}
		return Forbidden("%s may not kick %s", sender, target)

	case MembershipBan:
		if senderMembership != MembershipJoin {
			return Forbidden("%s is not joined and cannot ban", sender)
		}
		senderLevel := state.UserPowerLevel(sender)
		if senderLevel >= pl.Ban && state.UserPowerLevel(target) < senderLevel {
			return nil
		}
		return Forbidden("%s may not ban %s", sender, target)

	case MembershipKnock:
		if !rules.knocking {
			break // an unknown membership before version 7
		}
		rule := state.JoinRule()
		if !(rule == JoinRuleKnock || rule == JoinRuleKnockRestricted && rules.knockRestricted) {
			return Forbidden("join rule %s does not allow knocking", rule)
		}
		if sender != target {
			return Forbidden("%s cannot knock on behalf of %s", sender, target)
		}
		switch senderMembership {
		case MembershipBan, MembershipInvite, MembershipJoin:
			return Forbidden("%s cannot knock: membership is %s", sender, senderMembership)
		}
		return nil
	}
	return Forbidden("unknown membership %q", ev.membership)
}

// hasSignatureFrom reports whether the signatures object has an ed25519
// signature entry for server.
func hasSignatureFrom(sigs []byte, server ServerName) bool {
	found := false
	_ = eachMember(sigs, func(k, v []byte) (bool, error) {
		if string(k) != string(server) || !isObject(v) {
			return true, nil
		}
		_ = eachMember(v, func(kid, _ []byte) (bool, error) {
			found = strings.HasPrefix(string(kid), "ed25519:")
			return !found, nil
		})
		return false, nil
	})
	return found
}

// authorizeThirdPartyInvite is the rule for invites that redeem an
// m.room.third_party_invite (v10/v11 rule 4.4.1, v12 rule 5.4.1).
func authorizeThirdPartyInvite(ev *Event, state State, target UserID, targetMembership string, tpi []byte) error {
	if targetMembership == MembershipBan {
		return Forbidden("%s is banned", target)
	}
	signed := lookup(tpi, "signed")
	if !isObject(tpi) || !isObject(signed) {
		return Forbidden("third_party_invite has no signed object")
	}
	mxid, ok1 := stringMember(signed, "mxid")
	token, ok2 := stringMember(signed, "token")
	if !ok1 || !ok2 {
		return Forbidden("third_party_invite.signed lacks mxid or token")
	}
	if mxid != string(target) {
		return Forbidden("third-party invite is for %s, not %s", mxid, target)
	}
	inv := state.Get(StateKey{Type: TypeThirdPartyInvite, StateKey: token})
	if inv == nil {
		return Forbidden("no third-party invite with token %q", token)
	}
	if inv.sender != ev.sender {
		return Forbidden("third-party invite was sent by %s, not %s", inv.sender, ev.sender)
	}
	var keys []ed25519.PublicKey
	addKey := func(raw []byte) {
		if s, ok := decodeString(raw); ok {
			if k, err := DecodeBase64(s); err == nil && len(k) == ed25519.PublicKeySize {
				keys = append(keys, k)
			}
		}
	}
	if pk := lookup(inv.content, "public_key"); pk != nil {
		addKey(pk)
	}
	if pks := lookup(inv.content, "public_keys"); isArray(pks) {
		_ = eachElement(pks, func(el []byte) error {
			if isObject(el) {
				if pk := lookup(el, "public_key"); pk != nil {
					addKey(pk)
				}
			}
			return nil
		})
	}
	payload, sigs, err := signable(signed)
	if err != nil || !isObject(sigs) {
		return Forbidden("third_party_invite.signed has no signatures")
	}
	verified := false
	_ = eachMember(sigs, func(_, bySigner []byte) (bool, error) {
		if !isObject(bySigner) {
			return true, nil
		}
		_ = eachMember(bySigner, func(kid, sigRaw []byte) (bool, error) {
			if !strings.HasPrefix(string(kid), "ed25519:") {
				return true, nil
			}
			s, ok := decodeString(sigRaw)
			if !ok {
				return true, nil
			}
			sig, err := DecodeBase64(s)
			if err != nil || len(sig) != ed25519.SignatureSize {
				return true, nil
			}
			for _, k := range keys {
				if ed25519.Verify(k, payload, sig) {
					verified = true
					return false, nil
				}
			}
			return true, nil
		})
		return !verified, nil
	})
	if !verified {
		return Forbidden("no signature on the third-party invite matches its public keys")
	}
	return nil
}

// authorizePowerLevels is the rule for m.room.power_levels (v10/v11 rule
// 9, v12 rule 10) once the general checks have passed.
func authorizePowerLevels(ev *Event, state State, senderLevel int64) error {
	if ev.powerErr != nil {
		return ev.powerErr
	}
	newPL := ev.power
	if ev.rules.hashRoomIDs {
		for _, c := range state.Creators() {
			if _, ok := newPL.Users[c]; ok {
				return Forbidden("power levels may not list room creator %s", c)
			}
		}
	}
	prev := state.Get(StateKey{Type: TypePowerLevels})
	if prev == nil || prev.power == nil {
		return nil
	}
	oldPL := prev.power
	for i := range numNamedLevels {
		oldSet, newSet := oldPL.present[i], newPL.present[i]
		oldV, newV := *oldPL.named(i), *newPL.named(i)
		if oldSet == newSet && (!oldSet || oldV == newV) {
			continue
		}
		if oldSet && oldV > senderLevel {
			return Forbidden("cannot change %s from %d, above your power %d", namedLevelKeys[i], oldV, senderLevel)
		}
		if newSet && newV > senderLevel {
			return Forbidden("cannot set %s to %d, above your power %d", namedLevelKeys[i], newV, senderLevel)
		}
	}
	maps := []struct {
		name     string
		old, new map[string]int64
	}{{"events", oldPL.Events, newPL.Events}}
	if ev.rules.notificationsLevels { // v6+
		maps = append(maps, struct {
			name     string
			old, new map[string]int64
		}{"notifications", oldPL.Notifications, newPL.Notifications})
	}
	for _, m := range maps {
		for k, oldV := range m.old {
			if newV, ok := m.new[k]; (!ok || newV != oldV) && oldV > senderLevel {
				return Forbidden("cannot change %s[%q] from %d, above your power %d", m.name, k, oldV, senderLevel)
			}
		}
		for k, newV := range m.new {
			if oldV, ok := m.old[k]; (!ok || newV != oldV) && newV > senderLevel {
				return Forbidden("cannot set %s[%q] to %d, above your power %d", m.name, k, newV, senderLevel)
			}
		}
	}
	for u, oldV := range oldPL.Users {
		if u == ev.sender {
			continue
		}
		if newV, ok := newPL.Users[u]; (!ok || newV != oldV) && oldV >= senderLevel {
			return Forbidden("cannot change the power of %s (%d), not below your own %d", u, oldV, senderLevel)
		}
	}
	for u, newV := range newPL.Users {
		if oldV, ok := oldPL.Users[u]; (!ok || newV != oldV) && newV > senderLevel {
			return Forbidden("cannot give %s power %d, above your own %d", u, newV, senderLevel)
		}
	}
	return nil
}

// AuthorizeRedaction decides whether redaction, already accepted by
// Authorize, may take effect on target: the same room, and either the same
// sender or a sender with at least the redact level. Since room version 3
// the authorisation rules leave this to the server ("Handling
// redactions"); the spec's federation check accepts any sender on the
// target sender's server, which on a single server would let every user
// redact everyone, so Strand checks the user as client-side redaction
// permissions intend.
func AuthorizeRedaction(state State, redaction, target *Event) error {
	if redaction.typ != TypeRedaction {
		return Forbidden("%s is not a redaction", redaction.id)
	}
	if redaction.redacts != target.id {
		return Forbidden("redaction %s does not redact %s", redaction.id, target.id)
	}
	if redaction.roomID != target.roomID {
		return Forbidden("redaction and target are in different rooms")
	}
	if redaction.sender == target.sender {
		return nil
	}
	level := state.UserPowerLevel(redaction.sender)
	if need := state.PowerLevels().Redact; level < need {
		return Forbidden("redacting others' events needs power %d; %s has %d", need, redaction.sender, level)
	}
	return nil
}
