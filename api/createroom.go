package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

type stateEventReq struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

type createRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             *string                    `json:"room_alias_name"`
	Name                      *string                    `json:"name"`
	Topic                     *string                    `json:"topic"`
	Invite                    []string                   `json:"invite"`
	Invite3PID                []json.RawMessage          `json:"invite_3pid"`
	RoomVersion               *string                    `json:"room_version"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	InitialState              []stateEventReq            `json:"initial_state"`
	Preset                    string                     `json:"preset"`
	IsDirect                  bool                       `json:"is_direct"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override"`
}

// maxInvitesAtCreation keeps a room's creation record within
// eventlog.MaxEventsPerRecord together with its other events.
const maxInvitesAtCreation = 500

// POST /_matrix/client/v3/createRoom
func (s *Server) createRoom(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	var req createRoomRequest
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	version := s.cfg.DefaultRoomVersion
	if req.RoomVersion != nil {
		v, err := matrix.ParseRoomVersion(*req.RoomVersion)
		if err != nil {
			return err
		}
		version = v
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return matrix.InvalidParam("visibility must be public or private")
	}
	preset := req.Preset
	switch preset {
	case "":
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	case "private_chat", "public_chat", "trusted_private_chat":
	default:
		return matrix.InvalidParam("unknown preset %q", req.Preset)
	}
	if len(req.Invite) > maxInvitesAtCreation || len(req.InitialState) > maxInvitesAtCreation {
		return matrix.InvalidParam("too many invites or initial state events")
	}
	if len(req.Invite3PID) > 0 {
		return matrix.Errorf("M_UNRECOGNIZED", http.StatusBadRequest, "third-party invites are not supported")
	}
	invites := make([]matrix.UserID, 0, len(req.Invite))
	for _, u := range req.Invite {
		uid, err := matrix.ParseUserID(u)
		if err != nil {
			return matrix.InvalidParam("invite: %v", err)
		}
		if uid != matrix.UserID(ss.UserID) {
			invites = append(invites, uid)
		}
	}
	for _, st := range req.InitialState {
		if st.Type == "" {
			return matrix.BadJSON("initial_state events need a type")
		}
		if len(st.Content) > 0 {
			if err := checkStateContent(st.Type, st.StateKey, st.Content); err != nil {
				return err
			}
		}
	}
	var alias matrix.RoomAlias
	if req.RoomAliasName != nil {
		a, err := matrix.ParseRoomAlias("#" + *req.RoomAliasName + ":" + string(s.cfg.ServerName))
		if err != nil || *req.RoomAliasName == "" {
			return matrix.InvalidParam("invalid room_alias_name")
		}
		if err := s.checkAliasNamespace(r, string(a)); err != nil {
			return err
		}
		alias = a
	}
	creator := matrix.UserID(ss.UserID)
	profile, err := s.store.User(r.Context(), ss.UserID)
	if err != nil {
		return err
	}

	for attempt := 0; ; attempt++ {
		roomID, err := s.createRoomOnce(r, version, creator, preset, &req, invites, alias, profile)
		if errors.Is(err, errRoomIDTaken) && attempt < 5 {
			// Another create event hashed to the same room ID (same
			// creator, content and millisecond): build again later.
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		resp := map[string]any{"room_id": roomID}
		if alias != "" {
			resp["room_alias"] = string(alias)
		}
		matrix.WriteJSON(w, http.StatusOK, resp)
		return nil
	}
}

// errRoomIDTaken means the new room's subject already had records.
var errRoomIDTaken = errors.New("room ID taken")

// maxRecordBytes keeps a record within NATS's default 1 MiB message limit.
const maxRecordBytes = 900 << 10

// newRoomState is the state a new room of version is built against: none
// yet, and its ID where the version does not derive it from the create
// event.
func (s *Server) newRoomState(version matrix.RoomVersion) (*roomState, error) {
	rs := &roomState{head: store.RoomHead{Version: string(version)}}
	if !version.HashedRoomIDs() {
		id, err := matrix.NewRoomID(s.cfg.ServerName)
		if err != nil {
			return nil, err
		}
		rs.head.RoomID = string(id)
	}
	return rs, nil
}

// createRoomOnce builds and appends one attempt at the room.
func (s *Server) createRoomOnce(r *http.Request, version matrix.RoomVersion, creator matrix.UserID, preset string, req *createRoomRequest,
	invites []matrix.UserID, alias matrix.RoomAlias, profile store.User) (string, error) {
	ss := session(r)
	protos, err := creationEvents(version, creator, preset, req, invites, alias, memberContent("join", profile.Displayname, profile.AvatarURL))
	if err != nil {
		return "", err
	}
	rs, err := s.newRoomState(version)
	if err != nil {
		return "", err
	}
	events, err := s.buildEvents(r.Context(), rs, protos)
	if err != nil {
		if me, ok := matrix.AsError(err); ok && me.Code == "M_FORBIDDEN" {
			// The creator's own initial events can only fail the auth
			// rules through bad content (e.g. power levels).
			return "", matrix.BadJSON("the room's initial events are invalid: %s", me.Msg)
		}
		return "", err
	}
	roomID := string(events[0].RoomID())
	size := 0
	for _, ev := range events {
		size += len(ev.JSON())
	}
	if size > maxRecordBytes {
		return "", matrix.TooLarge("the room's initial events are too large together")
	}

	// The alias first: if it is taken, nothing else happens.
	if alias != "" {
		if err := s.claimAlias(r.Context(), string(alias), roomID, ss.UserID); err != nil {
			return "", err
		}
	}
	rec := &eventlog.RoomEvents{RoomID: roomID, RoomVersion: string(version)}
	for _, ev := range events {
		rec.Events = append(rec.Events, ev.JSON())
	}
	if req.Visibility == "public" {
		pub := true
		rec.Published = &pub
	}
	seq, err := s.log.Append(r.Context(), eventlog.RoomSubject(roomID), rec,
		eventlog.AppendOptions{ExpectSeq: eventlog.Expect(0), Room: roomID})
	if err != nil {
		if alias != "" {
			s.releaseAlias(context.WithoutCancel(r.Context()), string(alias), roomID)
		}
		if errors.Is(err, eventlog.ErrConflict) {
			return "", errRoomIDTaken
		}
		s.logger.Error("append room creation failed", "room_id", roomID, "err", err)
		return "", logUnavailable(err)
	}
	return roomID, s.awaitApplied(r.Context(), eventlog.RoomLaneOf(roomID), seq)
}

// creationEvents is the spec's createRoom event sequence.
func creationEvents(version matrix.RoomVersion, creator matrix.UserID, preset string, req *createRoomRequest,
	invites []matrix.UserID, alias matrix.RoomAlias, joinContent json.RawMessage) ([]*matrix.ProtoEvent, error) {
	now := time.Now().UnixMilli()
	v12 := version.CreatorsHaveInfinitePower()
	trusted := preset == "trusted_private_chat"

	// 1. m.room.create
	create := map[string]json.RawMessage{}
	for k, val := range req.CreationContent {
		create[k] = val
	}
	create["room_version"] = content(string(version))
	if v12 {
		delete(create, "creator")
		if trusted && len(invites) > 0 {
			// In version 12 a creator's power is implicit; the invitees of
			// a trusted private chat share it as additional creators, next
			// to those creation_content names.
			var ids []string
			if raw, ok := create["additional_creators"]; ok {
				if err := json.Unmarshal(raw, &ids); err != nil {
					return nil, matrix.BadJSON("creation_content.additional_creators must be a list of user IDs")
				}
			}
			for _, u := range invites {
				if !slices.Contains(ids, string(u)) {
					ids = append(ids, string(u))
				}
			}
			create["additional_creators"] = content(ids)
		}
	} else if version.CreatorInContent() {
		// Versions 1–10 name the creator in the create event; whatever
		// creation_content says, it is the user creating the room.
		create["creator"] = content(string(creator))
	}
	protos := []*matrix.ProtoEvent{{Type: matrix.TypeCreate, StateKey: stateKeyPtr(""), Sender: creator, Content: content(create), OriginServerTS: now}}

	// 2. the creator joins
	protos = append(protos, &matrix.ProtoEvent{Type: matrix.TypeMember, StateKey: stateKeyPtr(string(creator)), Sender: creator, Content: joinContent})

	// 3. power levels
	users := map[string]any{}
	if !v12 {
		users[string(creator)] = 100
		if trusted {
			for _, u := range invites {
				users[string(u)] = 100
			}
		}
	}
	invite := 0
	if preset == "public_chat" {
		invite = 50
	}
	tombstone := 100
	if v12 {
		// Upgrading a room is for its creators (MSC4289): 150 is above the
		// 100 admins get by convention, so only creators (infinite power)
		// and users raised above 100 on purpose can upgrade.
		tombstone = 150
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": invite,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": tombstone,
			"m.room.server_acl": 100, "m.room.encryption": 100, "m.room.topic": 50,
		},
		"notifications": map[string]any{"room": 50},
	}
	plJSON, _ := json.Marshal(pl)
	var plMap map[string]json.RawMessage
	_ = json.Unmarshal(plJSON, &plMap)
	for k, val := range req.PowerLevelContentOverride {
		plMap[k] = val
	}
	protos = append(protos, &matrix.ProtoEvent{Type: matrix.TypePowerLevels, StateKey: stateKeyPtr(""), Sender: creator, Content: content(plMap)})

	// 4. canonical alias
	if alias != "" {
		protos = append(protos, &matrix.ProtoEvent{Type: "m.room.canonical_alias", StateKey: stateKeyPtr(""), Sender: creator,
			Content: content(map[string]any{"alias": string(alias)})})
	}

	// 5. the preset's state, unless initial_state sets it
	overridden := map[[2]string]bool{}
	for _, st := range req.InitialState {
		overridden[[2]string{st.Type, st.StateKey}] = true
	}
	joinRule, guest := "invite", "can_join"
	if preset == "public_chat" {
		joinRule, guest = "public", "forbidden"
	}
	presetState := []struct {
		typ string
		c   any
	}{
		{matrix.TypeJoinRules, map[string]any{"join_rule": joinRule}},
		{matrix.TypeHistoryVis, map[string]any{"history_visibility": "shared"}},
		{"m.room.guest_access", map[string]any{"guest_access": guest}},
	}
	for _, ps := range presetState {
		if !overridden[[2]string{ps.typ, ""}] {
			protos = append(protos, &matrix.ProtoEvent{Type: ps.typ, StateKey: stateKeyPtr(""), Sender: creator, Content: content(ps.c)})
		}
	}

	// 6. initial_state
	for _, st := range req.InitialState {
		c := st.Content
		if len(c) == 0 {
			c = json.RawMessage("{}")
		}
		// A redaction could only name an event of the room being made
		// (anything else is another room's); none has a reason to be
		// redacted at birth.
		if st.Type == matrix.TypeCreate || st.Type == matrix.TypeMember || st.Type == matrix.TypePowerLevels || st.Type == matrix.TypeRedaction {
			return nil, matrix.InvalidParam("initial_state cannot set %s", st.Type)
		}
		// The name and topic keys override initial_state (the spec's
		// order); leaving the overridden event out spares the room a state
		// change nobody asked to see.
		if st.StateKey == "" && ((st.Type == "m.room.name" && req.Name != nil) || (st.Type == "m.room.topic" && req.Topic != nil)) {
			continue
		}
		protos = append(protos, &matrix.ProtoEvent{Type: st.Type, StateKey: stateKeyPtr(st.StateKey), Sender: creator, Content: c})
	}

	// 7. name and topic
	if req.Name != nil {
		protos = append(protos, &matrix.ProtoEvent{Type: "m.room.name", StateKey: stateKeyPtr(""), Sender: creator,
			Content: content(map[string]any{"name": *req.Name})})
	}
	if req.Topic != nil {
		protos = append(protos, &matrix.ProtoEvent{Type: "m.room.topic", StateKey: stateKeyPtr(""), Sender: creator,
			Content: content(topicContent(*req.Topic))})
	}

	// 8. invites
	for _, u := range invites {
		c := map[string]any{"membership": "invite"}
		if req.IsDirect {
			c["is_direct"] = true
		}
		protos = append(protos, &matrix.ProtoEvent{Type: matrix.TypeMember, StateKey: stateKeyPtr(string(u)), Sender: creator, Content: content(c)})
	}
	return protos, nil
}

// memberContent is the content of a membership event, carrying the
// member's profile on joins.
func memberContent(membership, displayname, avatarURL string) json.RawMessage {
	c := map[string]any{"membership": membership}
	if displayname != "" {
		c["displayname"] = displayname
	}
	if avatarURL != "" {
		c["avatar_url"] = avatarURL
	}
	return content(c)
}

// topicContent is the m.room.topic content for a plain-text topic: the
// plain "topic" and its rich form, m.topic with one text/plain
// representation, which clients that understand rich topics read first.
func topicContent(topic string) map[string]any {
	return map[string]any{
		"topic":   topic,
		"m.topic": map[string]any{"m.text": []map[string]any{{"body": topic, "mimetype": "text/plain"}}},
	}
}
