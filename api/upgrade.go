package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Room upgrades (POST /rooms/{roomId}/upgrade). An upgrade is several
// appends on several subjects, in an order chosen so that a crash anywhere
// leaves something a retry can finish (docs/ARCHITECTURE.md, "Room
// upgrades"):
//
//  1. the replacement room: one room.events record (create with
//     predecessor, the upgrader's join, power levels, the copied state,
//     bans), expected sequence 0 on its own subject;
//  2. the old room: one record holding m.room.tombstone and, where the
//     upgrader may send them, power levels that stop chat and invites and
//     a canonical alias without this server's aliases;
//  3. each local alias of the old room, moved to the replacement;
//  4. the directory listing: the replacement published, then the old room
//     unpublished.
//
// Until step 2 nobody but the upgrader can see the replacement; after it
// the old room names a replacement that exists. Step 1 carries a
// Nats-Msg-Id naming the request and the old room's state, so a repeat
// within the duplicate window reuses the replacement. A repeated request for a
// room this user has already upgraded to the same version redoes steps 3
// and 4 (both only move what still belongs to the old room) and returns
// the same replacement; any other upgrade of a room whose tombstone names
// an existing room is 400 M_BAD_STATE.

type upgradeRequest struct {
	NewVersion         *string  `json:"new_version"`
	AdditionalCreators []string `json:"additional_creators"`
}

// tombstoneBody is the m.room.tombstone body Strand writes.
const tombstoneBody = "This room has been replaced"

// upgradeTypes are the state events copied to the replacement, in the
// order they are sent: the spec's recommended list, the canonical alias
// (its aliases move with the room), the deprecated related groups, and a
// space's children, which make no sense to lose when a space is upgraded.
// Membership is not copied (bans are, separately); nor is any other
// state, which may depend on who sent it.
var upgradeTypes = []string{
	matrix.TypeJoinRules, matrix.TypeHistoryVis, "m.room.guest_access", "m.room.encryption",
	"m.room.server_acl", "m.room.name", "m.room.topic", "m.room.avatar",
	"m.room.canonical_alias", "m.room.related_groups",
}

// upgradeAllKeys are copied with every state key they have in the old room.
var upgradeAllKeys = []string{"m.space.child"}

// maxBansPerRecord keeps each record of copied bans well inside
// eventlog.MaxEventsPerRecord and maxRecordBytes.
const maxBansPerRecord = 500

// POST /_matrix/client/v3/rooms/{roomId}/upgrade
func (s *Server) upgradeRoom(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	var req upgradeRequest
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.NewVersion == nil {
		return matrix.MissingParam("new_version is required")
	}
	version, err := matrix.ParseRoomVersion(*req.NewVersion)
	if err != nil {
		return err
	}
	user := matrix.UserID(session(r).UserID)
	extra, err := additionalCreators(version, user, req.AdditionalCreators)
	if err != nil {
		return err
	}
	old, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return errNotInRoom(err, roomID)
	}
	if err := s.mayUpgrade(ctx, old, user); err != nil {
		return err
	}
	repl, done, err := s.finishedUpgrade(ctx, old, user, version, extra)
	if err != nil {
		return err
	}
	if !done {
		if err := s.notReplaced(ctx, old); err != nil {
			return err
		}
		profile, err := s.store.User(ctx, string(user))
		if err != nil {
			return err
		}
		if repl, err = s.createReplacement(ctx, old, version, user, extra, profile); err != nil {
			return err
		}
		if repl, err = s.tombstone(ctx, roomID, repl, user, version, extra); err != nil {
			return err
		}
	}
	if err := s.moveAliases(ctx, roomID, repl); err != nil {
		return err
	}
	if err := s.moveListing(ctx, roomID, repl); err != nil {
		return err
	}
	// The upgrader joined the replacement by creating it.
	s.carryOverSettings(r, repl)
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"replacement_room": repl})
	return nil
}

// additionalCreators validates the request's additional_creators. Only a
// version with several creators (12) uses them; for others the spec says
// the field "is ignored and has no effect", so it is not even checked.
func additionalCreators(version matrix.RoomVersion, user matrix.UserID, ids []string) ([]matrix.UserID, error) {
	if !version.CreatorsHaveInfinitePower() {
		return nil, nil
	}
	if len(ids) > maxInvitesAtCreation {
		return nil, matrix.InvalidParam("too many additional_creators")
	}
	var out []matrix.UserID
	for _, id := range ids {
		u, err := matrix.ParseUserID(id)
		if err != nil {
			return nil, matrix.InvalidParam("additional_creators: %v", err)
		}
		if u != user && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// mayUpgrade checks the spec's one condition, the power to send
// m.room.tombstone, by authorising one against the room's state (which
// also requires the upgrader to be joined). The tombstone appended later
// is authorised again against the state it is appended on.
func (s *Server) mayUpgrade(ctx context.Context, old *roomState, user matrix.UserID) error {
	if old.state.Membership(user) != matrix.MembershipJoin {
		return matrix.Forbidden("you are not joined to room %s", old.head.RoomID)
	}
	trial := *old
	probe := &matrix.ProtoEvent{Type: "m.room.tombstone", StateKey: stateKeyPtr(""), Sender: user,
		Content: content(map[string]any{"body": tombstoneBody, "replacement_room": old.head.RoomID})}
	if _, err := s.buildEvents(ctx, &trial, []*matrix.ProtoEvent{probe}); err != nil {
		if me, ok := matrix.AsError(err); ok && me.Code == "M_FORBIDDEN" {
			return matrix.Forbidden("you may not upgrade room %s", old.head.RoomID)
		}
		return err
	}
	return nil
}

// notReplaced refuses to upgrade a room whose tombstone names a room that
// exists: a second upgrade (by another user with the power to, or to
// another version) would leave two replacements and point the old room's
// members at the later one only. A tombstone naming no existing room does
// not stop an upgrade.
func (s *Server) notReplaced(ctx context.Context, old *roomState) error {
	tomb := old.state.Get(matrix.StateKey{Type: "m.room.tombstone"})
	if tomb == nil {
		return nil
	}
	var tc struct {
		ReplacementRoom string `json:"replacement_room"`
	}
	if json.Unmarshal(tomb.Content(), &tc) != nil || tc.ReplacementRoom == "" {
		return nil
	}
	if _, err := s.loadRoom(ctx, tc.ReplacementRoom); err != nil {
		if me, ok := matrix.AsError(err); ok && me.Code == "M_NOT_FOUND" {
			return nil
		}
		return err
	}
	return matrix.Errorf("M_BAD_STATE", http.StatusBadRequest, "room %s has already been upgraded to %s", old.head.RoomID, tc.ReplacementRoom)
}

// finishedUpgrade reports the replacement if the room is already
// tombstoned by this user in favour of a room of this version (and, in
// version 12, these additional creators) that names it as predecessor:
// then this request is a retry of that upgrade.
func (s *Server) finishedUpgrade(ctx context.Context, old *roomState, user matrix.UserID, version matrix.RoomVersion, extra []matrix.UserID) (string, bool, error) {
	tomb := old.state.Get(matrix.StateKey{Type: "m.room.tombstone"})
	if tomb == nil || tomb.Sender() != user {
		return "", false, nil
	}
	var tc struct {
		ReplacementRoom string `json:"replacement_room"`
	}
	if json.Unmarshal(tomb.Content(), &tc) != nil || tc.ReplacementRoom == "" {
		return "", false, nil
	}
	repl, err := s.loadRoom(ctx, tc.ReplacementRoom)
	if err != nil {
		if me, ok := matrix.AsError(err); ok && me.Code == "M_NOT_FOUND" {
			return "", false, nil
		}
		return "", false, err
	}
	create := repl.state.Create()
	if create == nil || create.Version() != version {
		return "", false, nil
	}
	if predecessorOf(create.Content()) != old.head.RoomID {
		return "", false, nil
	}
	if version.CreatorsHaveInfinitePower() {
		want := append([]matrix.UserID{user}, extra...)
		got := repl.state.Creators()
		if len(got) != len(want) {
			return "", false, nil
		}
		for _, u := range want {
			if !slices.Contains(got, u) {
				return "", false, nil
			}
		}
	}
	return tc.ReplacementRoom, true, nil
}

// createReplacement appends the new room (step 1) and returns its ID once
// the projection shows it.
func (s *Server) createReplacement(ctx context.Context, old *roomState, version matrix.RoomVersion, user matrix.UserID,
	extra []matrix.UserID, profile store.User) (string, error) {
	for attempt := 0; ; attempt++ {
		id, err := s.createReplacementOnce(ctx, old, version, user, extra, profile)
		if errors.Is(err, errRoomIDTaken) && attempt < 5 {
			// Same reason as createRoom: a v12 create hashed to an
			// existing room ID (same creator, content and millisecond).
			time.Sleep(time.Millisecond)
			continue
		}
		return id, err
	}
}

func (s *Server) createReplacementOnce(ctx context.Context, old *roomState, version matrix.RoomVersion, user matrix.UserID,
	extra []matrix.UserID, profile store.User) (string, error) {
	plan, err := planReplacement(old, version, user, extra, memberContent("join", profile.Displayname, profile.AvatarURL))
	if err != nil {
		return "", err
	}
	rs, err := s.newRoomState(version)
	if err != nil {
		return "", err
	}
	// The first record holds everything but the bans that do not fit; the
	// restored power levels come after the last ban.
	first := plan.state
	bans := plan.bans
	n := min(len(bans), maxBansPerRecord)
	first = append(first, bans[:n]...)
	bans = bans[n:]
	if len(bans) == 0 && plan.restore != nil {
		first = append(first, plan.restore)
	}
	events, err := s.buildEvents(ctx, rs, first)
	if err != nil {
		if me, ok := matrix.AsError(err); ok && me.Code == "M_FORBIDDEN" {
			// The old room's state could not be carried over (e.g. an
			// additional creator who is banned).
			return "", matrix.BadJSON("the replacement room's initial events are invalid: %s", me.Msg)
		}
		return "", err
	}
	roomID := string(events[0].RoomID())
	rec := &eventlog.RoomEvents{RoomID: roomID, RoomVersion: string(version)}
	size := 0
	for _, ev := range events {
		rec.Events = append(rec.Events, ev.JSON())
		size += len(ev.JSON())
	}
	if size > maxRecordBytes {
		return "", matrix.TooLarge("the room's state is too large to copy")
	}
	opts := eventlog.AppendOptions{ExpectSeq: eventlog.Expect(0), Room: roomID}
	if len(bans) == 0 {
		// The whole replacement is this one record: the same upgrade of
		// the same old room state, repeated within the duplicate window
		// (a client's retry after a crash before the tombstone, or a
		// double click), gets the room the first attempt stored instead
		// of a second one.
		opts.MsgID = upgradeMsgID(old, version, user, extra)
	}
	seq, dup, err := s.log.AppendDedup(ctx, eventlog.RoomSubject(roomID), rec, opts)
	if errors.Is(err, eventlog.ErrConflict) {
		return "", errRoomIDTaken
	}
	if err != nil {
		s.logger.Error("append replacement room failed", "room_id", roomID, "err", err)
		return "", logUnavailable(err)
	}
	if dup {
		stored, err := s.log.Get(ctx, eventlog.StreamRooms, seq)
		if err != nil {
			return "", logUnavailable(err)
		}
		if stored.Room == "" {
			return "", fmt.Errorf("replacement record %d names no room", seq)
		}
		roomID = stored.Room
	}
	if err := s.awaitApplied(ctx, eventlog.RoomLaneOf(roomID), seq); err != nil {
		return "", err
	}
	for len(bans) > 0 {
		n := min(len(bans), maxBansPerRecord)
		chunk := bans[:n:n]
		bans = bans[n:]
		if len(bans) == 0 && plan.restore != nil {
			chunk = append(chunk, plan.restore)
		}
		if _, err := s.writeRoom(ctx, roomID, nil, func(*roomState) ([]*matrix.ProtoEvent, error) { return cloneProtos(chunk), nil }); err != nil {
			return "", err
		}
	}
	return roomID, nil
}

// upgradeMsgID names one upgrade request of one state of the old room:
// the room, its last sequence, the upgrader, the version and the
// additional creators (hashed, as the IDs together can exceed what a
// header should carry).
func upgradeMsgID(old *roomState, version matrix.RoomVersion, user matrix.UserID, extra []matrix.UserID) string {
	creators := make([]string, len(extra))
	for i, u := range extra {
		creators[i] = string(u)
	}
	slices.Sort(creators)
	h := sha256.New()
	for _, part := range []string{old.head.RoomID, strconv.FormatUint(old.head.LastSeq, 10), string(user), string(version), strings.Join(creators, ",")} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "upgrade:" + hex.EncodeToString(h.Sum(nil))
}

// cloneProtos copies protos so a retried build starts from clean events.
func cloneProtos(ps []*matrix.ProtoEvent) []*matrix.ProtoEvent {
	out := make([]*matrix.ProtoEvent, len(ps))
	for i, p := range ps {
		c := *p
		out[i] = &c
	}
	return out
}

// replacementPlan is the replacement room's events: state (create, join,
// power levels, copied state), bans, and, when the upgrader's level had to
// be raised to copy the state, the power levels as they should end up.
type replacementPlan struct {
	state   []*matrix.ProtoEvent
	bans    []*matrix.ProtoEvent
	restore *matrix.ProtoEvent
}

// planReplacement builds the replacement's events from the old room's
// state. It reads only its arguments.
func planReplacement(old *roomState, version matrix.RoomVersion, user matrix.UserID, extra []matrix.UserID, joinContent json.RawMessage) (*replacementPlan, error) {
	st := old.state
	state := func(typ, key string, c json.RawMessage) *matrix.ProtoEvent {
		return &matrix.ProtoEvent{Type: typ, StateKey: stateKeyPtr(key), Sender: user, Content: c}
	}
	plan := &replacementPlan{}

	// The create event: predecessor, type and m.federate carried over.
	create := map[string]any{"room_version": string(version)}
	pred := map[string]any{"room_id": old.head.RoomID}
	if !version.HashedRoomIDs() && old.head.LastEventID != "" {
		// The spec makes event_id optional from version 12; before, it
		// is the last event of the old room the upgrade saw.
		pred["event_id"] = old.head.LastEventID
	}
	create["predecessor"] = pred
	if c := st.Create(); c != nil {
		var oc map[string]json.RawMessage
		if json.Unmarshal(c.Content(), &oc) == nil {
			for _, k := range []string{"type", "m.federate"} {
				if v, ok := oc[k]; ok {
					create[k] = v
				}
			}
		}
	}
	if version.CreatorInContent() {
		create["creator"] = string(user)
	}
	if version.CreatorsHaveInfinitePower() && len(extra) > 0 {
		create["additional_creators"] = extra
	}
	plan.state = append(plan.state,
		&matrix.ProtoEvent{Type: matrix.TypeCreate, StateKey: stateKeyPtr(""), Sender: user, Content: content(create)},
		state(matrix.TypeMember, string(user), joinContent))

	// The copied state, and the levels sending it needs.
	var copied []*matrix.ProtoEvent
	for _, typ := range upgradeTypes {
		ev := st.Get(matrix.StateKey{Type: typ})
		if ev == nil || isEmptyObject(ev.Content()) {
			continue
		}
		c := ev.Content()
		if typ == matrix.TypeJoinRules {
			c = joinRulesFor(version, c)
		}
		copied = append(copied, state(typ, "", c))
	}
	var keyed []*matrix.ProtoEvent
	for k, ev := range st.All() {
		if slices.Contains(upgradeAllKeys, k.Type) && !isEmptyObject(ev.Content()) {
			keyed = append(keyed, state(k.Type, k.StateKey, ev.Content()))
		}
	}
	// State iterates in no fixed order; the replacement's events should
	// not depend on it.
	slices.SortFunc(keyed, func(a, b *matrix.ProtoEvent) int {
		return strings.Compare(a.Type+"\x00"+*a.StateKey, b.Type+"\x00"+*b.StateKey)
	})
	copied = append(copied, keyed...)
	creators := append([]matrix.UserID{user}, extra...)
	for k, ev := range st.All() {
		if k.Type != matrix.TypeMember || ev.Membership() != matrix.MembershipBan {
			continue
		}
		banned := matrix.UserID(k.StateKey)
		if version.CreatorsHaveInfinitePower() && slices.Contains(creators, banned) {
			continue // a creator cannot be banned; naming them was the caller's choice
		}
		c := map[string]any{"membership": matrix.MembershipBan}
		var oc struct {
			Reason string `json:"reason"`
		}
		if json.Unmarshal(ev.Content(), &oc) == nil && oc.Reason != "" {
			c["reason"] = oc.Reason
		}
		plan.bans = append(plan.bans, state(matrix.TypeMember, string(banned), content(c)))
	}
	slices.SortFunc(plan.bans, func(a, b *matrix.ProtoEvent) int { return strings.Compare(*a.StateKey, *b.StateKey) })

	initial, final, err := upgradePowerLevels(st, version, user, extra, copied, len(plan.bans) > 0)
	if err != nil {
		return nil, err
	}
	plan.state = append(plan.state, state(matrix.TypePowerLevels, "", initial))
	plan.state = append(plan.state, copied...)
	if final != nil {
		plan.restore = state(matrix.TypePowerLevels, "", final)
	}
	return plan, nil
}

func isEmptyObject(c json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(c, &m) != nil || len(m) == 0
}

// joinRulesFor keeps a join rule the new version has and otherwise closes
// the room to invites: a rule the version lacks would let nobody join.
func joinRulesFor(version matrix.RoomVersion, c json.RawMessage) json.RawMessage {
	var jr struct {
		JoinRule string `json:"join_rule"`
	}
	if json.Unmarshal(c, &jr) != nil {
		return c
	}
	supported := true
	switch jr.JoinRule {
	case matrix.JoinRuleKnock:
		supported = version.Knocking()
	case matrix.JoinRuleRestricted:
		supported = version.RestrictedJoins()
	case matrix.JoinRuleKnockRestricted:
		supported = version.KnockRestricted()
	}
	if supported {
		return c
	}
	return content(map[string]any{"join_rule": matrix.JoinRuleInvite})
}

// upgradePowerLevels returns the replacement's power levels: the old
// room's content with its levels written as integers (versions before 10
// allowed strings), without the new room's creators in users when they
// have implicit power (version 12), and with an upgrader coming from a
// version 12 room, where their power was implicit, given the highest level
// the content names (at least 100). When the upgrader's level is below what
// copying the state needs, initial raises it and final is the content as
// it should end; otherwise final is nil.
func upgradePowerLevels(st matrix.State, version matrix.RoomVersion, user matrix.UserID, extra []matrix.UserID,
	copied []*matrix.ProtoEvent, bans bool) (initial, final json.RawMessage, err error) {
	raw := map[string]json.RawMessage{}
	if ev := st.Get(matrix.StateKey{Type: matrix.TypePowerLevels}); ev != nil {
		if err := json.Unmarshal(ev.Content(), &raw); err != nil {
			return nil, nil, err
		}
	}
	pl := st.PowerLevels()
	named := map[string]int64{
		"ban": pl.Ban, "kick": pl.Kick, "redact": pl.Redact, "invite": pl.Invite,
		"events_default": pl.EventsDefault, "state_default": pl.StateDefault, "users_default": pl.UsersDefault,
	}
	out := map[string]any{}
	for k, v := range raw {
		out[k] = v
	}
	top := int64(100)
	for k, v := range named {
		if _, ok := raw[k]; ok {
			out[k] = v
		}
		top = max(top, v)
	}
	if _, ok := raw["events"]; ok || pl.Events != nil {
		out["events"] = pl.Events
	}
	for _, v := range pl.Events {
		top = max(top, v)
	}
	if _, ok := raw["notifications"]; ok {
		out["notifications"] = pl.Notifications
	}
	users := map[string]int64{}
	for u, v := range pl.Users {
		users[string(u)] = v
		top = max(top, v)
	}
	if version.CreatorsHaveInfinitePower() {
		delete(users, string(user))
		for _, u := range extra {
			delete(users, string(u))
		}
	} else if implicit := st.UserPowerLevel(user); implicit > pl.UserLevel(user) {
		// Power the old room gave the upgrader without listing them (a
		// version 12 creator, or a creator before any power levels) is
		// written down, as the new version gives them none.
		users[string(user)] = min(implicit, top)
	}
	out["users"] = users
	final = content(out)
	if version.CreatorsHaveInfinitePower() {
		return final, nil, nil
	}
	newPL, err := matrix.ParsePowerLevels(final)
	if err != nil {
		return nil, nil, matrix.BadJSON("the room's power levels cannot be carried over: %v", err)
	}
	need := newPL.EventLevel(matrix.TypePowerLevels, true)
	for _, p := range copied {
		need = max(need, newPL.EventLevel(p.Type, true))
	}
	if bans {
		need = max(need, newPL.Ban, newPL.EventLevel(matrix.TypeMember, true))
	}
	if newPL.UserLevel(user) >= need {
		return final, nil, nil
	}
	raised := map[string]int64{}
	for u, v := range users {
		raised[u] = v
	}
	raised[string(user)] = need
	out["users"] = raised
	return content(out), final, nil
}

// tombstone appends step 2 and returns the replacement the old room now
// names: repl, or, if a concurrent request of the same upgrade got there
// first, that request's replacement (repl then stays an empty room of the
// upgrader's, which is logged).
func (s *Server) tombstone(ctx context.Context, roomID, repl string, user matrix.UserID, version matrix.RoomVersion, extra []matrix.UserID) (string, error) {
	var twin string
	errTwin := errors.New("upgraded concurrently")
	_, err := s.writeRoom(ctx, roomID, nil, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
		if other, done, err := s.finishedUpgrade(ctx, rs, user, version, extra); err != nil {
			return nil, err
		} else if done && other != repl {
			twin = other
			return nil, errTwin
		} else if !done {
			// Upgraded by someone else meanwhile.
			if err := s.notReplaced(ctx, rs); err != nil {
				return nil, err
			}
		}
		return s.tombstoneEvents(ctx, rs, repl, user)
	})
	if errors.Is(err, errTwin) {
		s.logger.Warn("room upgraded concurrently; replacement left unused", "room_id", roomID, "unused_room_id", repl, "replacement_room_id", twin)
		return twin, nil
	}
	if err != nil {
		s.logger.Warn("room upgrade stopped before the tombstone; replacement left unused", "room_id", roomID, "unused_room_id", repl, "err", err)
		return "", err
	}
	return repl, nil
}

// tombstoneEvents is the old room's record: the tombstone, then the power
// levels and canonical alias changes that the upgrader may make (each is
// tried against the state the earlier ones leave; one refused is left
// out, as the spec asks for them only "if possible").
func (s *Server) tombstoneEvents(ctx context.Context, rs *roomState, repl string, user matrix.UserID) ([]*matrix.ProtoEvent, error) {
	protos := []*matrix.ProtoEvent{{Type: "m.room.tombstone", StateKey: stateKeyPtr(""), Sender: user,
		Content: content(map[string]any{"body": tombstoneBody, "replacement_room": repl})}}
	trial := *rs
	if _, err := s.buildEvents(ctx, &trial, cloneProtos(protos)); err != nil {
		return nil, err
	}
	for _, opt := range []*matrix.ProtoEvent{s.silencedPowerLevels(rs, user), s.aliasesRemoved(rs, user)} {
		if opt == nil {
			continue
		}
		next := trial
		if _, err := s.buildEvents(ctx, &next, []*matrix.ProtoEvent{{Type: opt.Type, StateKey: opt.StateKey, Sender: opt.Sender, Content: opt.Content}}); err != nil {
			continue
		}
		trial = next
		protos = append(protos, opt)
	}
	return protos, nil
}

// silencedPowerLevels raises events_default and invite in the old room to
// the greater of 50 and users_default+1 (the spec's example), so that
// ordinary members can no longer talk or invite there; nil if they
// already are that high.
func (s *Server) silencedPowerLevels(rs *roomState, user matrix.UserID) *matrix.ProtoEvent {
	ev := rs.state.Get(matrix.StateKey{Type: matrix.TypePowerLevels})
	if ev == nil {
		return nil
	}
	raw := map[string]json.RawMessage{}
	if json.Unmarshal(ev.Content(), &raw) != nil {
		return nil
	}
	pl := rs.state.PowerLevels()
	level := max(int64(50), pl.UsersDefault+1)
	changed := false
	if pl.EventsDefault < level {
		raw["events_default"], changed = content(level), true
	}
	if pl.Invite < level {
		raw["invite"], changed = content(level), true
	}
	if !changed {
		return nil
	}
	return &matrix.ProtoEvent{Type: matrix.TypePowerLevels, StateKey: stateKeyPtr(""), Sender: user, Content: content(raw)}
}

// aliasesRemoved is the old room's canonical alias without this server's
// aliases, which move to the replacement; nil if it names none.
func (s *Server) aliasesRemoved(rs *roomState, user matrix.UserID) *matrix.ProtoEvent {
	ev := rs.state.Get(matrix.StateKey{Type: "m.room.canonical_alias"})
	if ev == nil {
		return nil
	}
	raw := map[string]json.RawMessage{}
	if json.Unmarshal(ev.Content(), &raw) != nil {
		return nil
	}
	local := func(a string) bool {
		alias, err := matrix.ParseRoomAlias(a)
		return err == nil && alias.Server() == s.cfg.ServerName
	}
	changed := false
	var alias string
	if json.Unmarshal(raw["alias"], &alias) == nil && local(alias) {
		delete(raw, "alias")
		changed = true
	}
	var alt []string
	if json.Unmarshal(raw["alt_aliases"], &alt) == nil && slices.ContainsFunc(alt, local) {
		alt = slices.DeleteFunc(alt, local)
		if len(alt) == 0 {
			delete(raw, "alt_aliases")
		} else {
			raw["alt_aliases"] = content(alt)
		}
		changed = true
	}
	if !changed {
		return nil
	}
	return &matrix.ProtoEvent{Type: "m.room.canonical_alias", StateKey: stateKeyPtr(""), Sender: user, Content: content(raw)}
}

// moveAliases points every alias that still names the old room at the
// replacement (step 3), keeping each alias's creator. Each move is
// appended against the alias's last record, so an alias changed meanwhile
// is re-read, and one that no longer names the old room is left alone.
func (s *Server) moveAliases(ctx context.Context, oldRoom, repl string) error {
	aliases, err := s.store.RoomAliases(ctx, oldRoom)
	if err != nil {
		return err
	}
	for _, alias := range aliases {
		if err := s.moveAlias(ctx, alias, oldRoom, repl); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) moveAlias(ctx context.Context, alias, oldRoom, repl string) error {
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		last, ok, err := s.log.Last(ctx, eventlog.StreamRooms, eventlog.AliasSubject(alias))
		if err != nil {
			return logUnavailable(err)
		}
		if !ok || last.Type != (eventlog.AliasSet{}).RecordType() {
			return nil
		}
		rec, err := last.Decode()
		if err != nil {
			return err
		}
		set, ok := rec.(*eventlog.AliasSet)
		if !ok || set.RoomID != oldRoom {
			return nil
		}
		seq, err := s.log.Append(ctx, eventlog.AliasSubject(alias), &eventlog.AliasSet{Alias: alias, RoomID: repl, Creator: set.Creator},
			eventlog.AppendOptions{ExpectSeq: eventlog.Expect(last.Seq)})
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		if err != nil {
			return logUnavailable(err)
		}
		return s.awaitApplied(ctx, eventlog.AliasLaneName, seq)
	}
	return matrix.Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests, "room alias %s is contended; retry", alias)
}

// moveListing publishes the replacement in the directory if the old room
// is listed, then unlists the old room (step 4). The old room's listing
// is cleared last, so a retry after a crash still sees that it was listed.
func (s *Server) moveListing(ctx context.Context, oldRoom, repl string) error {
	h, err := s.store.RoomHeadOf(ctx, oldRoom)
	if err != nil {
		return err
	}
	if !h.Published {
		return nil
	}
	if err := s.setListed(ctx, repl, true); err != nil {
		return err
	}
	return s.setListed(ctx, oldRoom, false)
}

// setListed appends a directory change on the room's subject, after
// whatever the room's last record is: the upgrade was authorised, and the
// listing does not depend on the room's state.
func (s *Server) setListed(ctx context.Context, roomID string, published bool) error {
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		last, err := s.log.LastSeq(ctx, eventlog.StreamRooms, eventlog.RoomSubject(roomID))
		if err != nil {
			return logUnavailable(err)
		}
		seq, err := s.log.Append(ctx, eventlog.RoomSubject(roomID), &eventlog.RoomPublished{RoomID: roomID, Published: published},
			eventlog.AppendOptions{Room: roomID, ExpectSeq: eventlog.Expect(last)})
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		if err != nil {
			return logUnavailable(err)
		}
		return s.awaitApplied(ctx, eventlog.RoomLaneOf(roomID), seq)
	}
	return matrix.Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests, "the room is too busy; retry")
}

// carryOverSettings gives a user who joins an upgraded room's replacement
// their settings of the old room, as the spec asks ("the server should
// automatically transfer ... notifications, tags"): the room push rule
// and the tags, each only when the new room has none yet, so a rule or
// tag the user changed in the new room is kept. It is best effort: the
// join has succeeded whatever happens here, so failures are logged.
func (s *Server) carryOverSettings(r *http.Request, roomID string) {
	ctx := r.Context()
	// Two single-row reads, as this runs on every join: the room's
	// predecessor, and whether that room's tombstone names this room
	// (anyone can create a room claiming any predecessor).
	pred := predecessorOf(s.stateContent(ctx, roomID, matrix.TypeCreate))
	if pred == "" {
		return
	}
	var tc struct {
		ReplacementRoom string `json:"replacement_room"`
	}
	if json.Unmarshal(s.stateContent(ctx, pred, "m.room.tombstone"), &tc) != nil || tc.ReplacementRoom != roomID {
		return
	}
	uid := session(r).UserID
	if err := s.carryOverPushRule(r, pred, roomID); err != nil {
		s.logger.Warn("carry over push rule", "room_id", roomID, "user_id", uid, "err", err)
	}
	oldTags, err := s.loadTags(r, uid, pred)
	if err == nil && len(oldTags) > 0 {
		var newTags map[string]json.RawMessage
		if newTags, err = s.loadTags(r, uid, roomID); err == nil && len(newTags) == 0 {
			err = s.saveTags(r, uid, roomID, oldTags)
		}
	}
	if err != nil {
		s.logger.Warn("carry over tags", "room_id", roomID, "user_id", uid, "err", err)
	}
}

// stateContent is the content of a room's current state event (type, ""),
// or nil if it has none or it cannot be read.
func (s *Server) stateContent(ctx context.Context, roomID, typ string) json.RawMessage {
	ev, err := s.store.StateEvent(ctx, roomID, 0, typ, "")
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.logger.Warn("read state event", "room_id", roomID, "type", typ, "err", err)
		}
		return nil
	}
	var e struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(ev.Client, &e) != nil {
		return nil
	}
	return e.Content
}

func (s *Server) carryOverPushRule(r *http.Request, pred, roomID string) error {
	rules, err := s.loadRuleset(r)
	if err != nil {
		return err
	}
	i := findRule(rules, "room", pred)
	if i < 0 || findRule(rules, "room", roomID) >= 0 {
		return nil
	}
	rule := pushRule{}
	for k, v := range rules["room"][i] {
		rule[k] = v
	}
	rule["rule_id"] = roomID
	rules["room"] = slices.Insert(rules["room"], i+1, rule)
	return s.saveRuleset(r, rules)
}

// predecessorOf is the room an upgraded room replaces, from its create
// event's content, or "".
func predecessorOf(createContent json.RawMessage) string {
	var cc struct {
		Predecessor struct {
			RoomID string `json:"room_id"`
		} `json:"predecessor"`
	}
	if json.Unmarshal(createContent, &cc) != nil {
		return ""
	}
	if _, err := matrix.ParseRoomID(cc.Predecessor.RoomID); err != nil {
		return ""
	}
	return cc.Predecessor.RoomID
}
