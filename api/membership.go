package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

type membershipRequest struct {
	UserID *string `json:"user_id"`
	Reason *string `json:"reason"`
}

func (req *membershipRequest) target() (matrix.UserID, error) {
	if req.UserID == nil {
		return "", matrix.MissingParam("user_id is required")
	}
	uid, err := matrix.ParseUserID(*req.UserID)
	if err != nil {
		return "", matrix.InvalidParam("invalid user_id: %v", err)
	}
	return uid, nil
}

func withReason(c map[string]any, reason *string) json.RawMessage {
	if reason != nil && *reason != "" {
		c["reason"] = *reason
	}
	return content(c)
}

// changeMembership appends one membership event for target sent by the
// caller, built against the room's current state.
func (s *Server) changeMembership(r *http.Request, roomID string, target matrix.UserID, build func(rs *roomState) (json.RawMessage, error)) error {
	sender := session(r).UserID
	_, err := s.writeRoom(r.Context(), roomID, nil, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
		c, err := build(rs)
		if err != nil || c == nil {
			return nil, err
		}
		return []*matrix.ProtoEvent{{Type: matrix.TypeMember, StateKey: stateKeyPtr(string(target)), Sender: matrix.UserID(sender), Content: c}}, nil
	})
	return err
}

// POST /_matrix/client/v3/rooms/{roomId}/invite
func (s *Server) invite(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	var req membershipRequest
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	target, err := req.target()
	if err != nil {
		return err
	}
	if target.Server() == s.cfg.ServerName {
		if u, err := s.store.User(r.Context(), string(target)); errors.Is(err, store.ErrNotFound) {
			return matrix.NotFound("user %s does not exist", target)
		} else if err != nil {
			return err
		} else if u.Deactivated {
			// Deactivation left every room; an invite could never be
			// answered.
			return matrix.Forbidden("user %s is deactivated", target)
		}
	} else {
		return matrix.Forbidden("inviting users of other servers needs federation, which this server does not offer")
	}
	err = s.changeMembership(r, roomID, target, func(rs *roomState) (json.RawMessage, error) {
		if rs.state.Membership(target) == "join" {
			return nil, matrix.Forbidden("%s is already in the room", target)
		}
		return withReason(map[string]any{"membership": "invite"}, req.Reason), nil
	})
	if err != nil {
		return errNotInRoom(err, roomID)
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/join
// POST /_matrix/client/v3/join/{roomIdOrAlias}
//
// join joins the caller to a room given by ID or alias; joining a room one
// is already in changes nothing.
func (s *Server) join(w http.ResponseWriter, r *http.Request) error {
	target := pathVar(r, "roomIdOrAlias")
	if target == "" {
		target = pathVar(r, "roomId")
	}
	// Keys of the body other than the request's parameters go into the
	// membership content, as clients use them to annotate their join
	// (BuildEvent bounds and canonicalises the result, so nothing
	// unstorable gets through).
	var extra map[string]json.RawMessage
	if err := matrix.DecodeJSON(r, &extra, true); err != nil {
		return err
	}
	var reason *string
	if raw, ok := extra["reason"]; ok {
		if err := json.Unmarshal(raw, &reason); err != nil {
			return matrix.BadJSON("reason must be a string")
		}
	}
	for k := range extra {
		if joinKeysNotContent[k] {
			delete(extra, k)
		}
	}
	roomID, err := s.resolveRoom(r, target)
	if err != nil {
		return err
	}
	uid := session(r).UserID
	profile, err := s.store.User(r.Context(), uid)
	if err != nil {
		return err
	}
	joined := false // whether this request made the user a member
	err = s.changeMembership(r, roomID, matrix.UserID(uid), func(rs *roomState) (json.RawMessage, error) {
		if rs.state.Membership(matrix.UserID(uid)) == "join" {
			joined = false
			return nil, nil
		}
		joined = true
		c := map[string]any{}
		for k, v := range extra {
			c[k] = v
		}
		c["membership"] = "join"
		if _, set := c["displayname"]; !set && profile.Displayname != "" {
			c["displayname"] = profile.Displayname
		}
		if _, set := c["avatar_url"]; !set && profile.AvatarURL != "" {
			c["avatar_url"] = profile.AvatarURL
		}
		// Only the server names who authorised a restricted join: a
		// client's own join_authorised_via_users_server was dropped with
		// the keys that are not content.
		via, err := s.joinAuthoriser(r.Context(), rs.state, matrix.UserID(uid))
		if err != nil {
			return nil, err
		}
		if via != "" {
			c["join_authorised_via_users_server"] = string(via)
		}
		return withReason(c, reason), nil
	})
	if err != nil {
		// A room that does not exist refuses a join like one the caller
		// may not join, so joins cannot probe for rooms.
		return errNotInRoom(err, roomID)
	}
	if joined {
		// Settings of an upgraded room's predecessor follow the user.
		s.carryOverSettings(r, roomID)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	return nil
}

// resolveRoom turns a {roomIdOrAlias} path parameter into a room ID. The
// via and server_name query parameters of /join and /knock name servers to
// ask for a remote room; with no federation there is nobody else to ask.
func (s *Server) resolveRoom(r *http.Request, target string) (string, error) {
	if !strings.HasPrefix(target, "#") {
		id, err := matrix.ParseRoomID(target)
		if err != nil {
			return "", matrix.InvalidParam("invalid room ID or alias: %v", err)
		}
		return string(id), nil
	}
	alias, err := matrix.ParseRoomAlias(target)
	if err != nil {
		return "", matrix.InvalidParam("invalid room alias: %v", err)
	}
	id, _, err := s.store.AliasRoom(r.Context(), string(alias))
	if errors.Is(err, store.ErrNotFound) {
		return "", matrix.NotFound("room alias %s not found", alias)
	}
	return id, err
}

// POST /_matrix/client/v3/knock/{roomIdOrAlias}
//
// knock asks to join a room whose join rule is knock or knock_restricted
// (room versions 7+): POST /knock/{roomIdOrAlias}. Whether the knock is
// allowed (join rule, version, current membership) is the auth rules'
// decision, so the answer is their 403.
func (s *Server) knock(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Reason *string `json:"reason"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	roomID, err := s.resolveRoom(r, pathVar(r, "roomIdOrAlias"))
	if err != nil {
		return err
	}
	uid := matrix.UserID(session(r).UserID)
	profile, err := s.store.User(r.Context(), string(uid))
	if err != nil {
		return err
	}
	err = s.changeMembership(r, roomID, uid, func(rs *roomState) (json.RawMessage, error) {
		switch m := rs.state.Membership(uid); m {
		case "join", "invite", "ban":
			return nil, matrix.Forbidden("you cannot knock on room %s: your membership is %s", roomID, m)
		case "knock":
			return nil, nil // knocking again changes nothing, as joining again does
		}
		c := map[string]any{"membership": "knock"}
		if profile.Displayname != "" {
			c["displayname"] = profile.Displayname
		}
		if profile.AvatarURL != "" {
			c["avatar_url"] = profile.AvatarURL
		}
		return withReason(c, req.Reason), nil
	})
	if err != nil {
		return err // an unknown room is 404, as the spec has it for /knock
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	return nil
}

// joinKeysNotContent are keys of a /join body that are not membership
// content: the server decides membership, third_party_signed is a request
// parameter, join_authorised_via_users_server is an auth field only the
// server may set, and reason is handled on its own.
var joinKeysNotContent = map[string]bool{"membership": true, "third_party_signed": true, "join_authorised_via_users_server": true, "reason": true}

// POST /_matrix/client/v3/rooms/{roomId}/leave
func (s *Server) leave(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	var req struct {
		Reason *string `json:"reason"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	uid := matrix.UserID(session(r).UserID)
	err = s.changeMembership(r, roomID, uid, func(rs *roomState) (json.RawMessage, error) {
		if rs.state.Member(uid) == nil {
			// Never in the room: refused like a room that does not
			// exist, so that leaving cannot probe for rooms.
			return nil, matrix.Forbidden("you are not in room %s", roomID)
		}
		switch rs.state.Membership(uid) {
		case "join", "invite", "knock":
			if err := s.refuseNoticeRejection(rs.state, uid); err != nil {
				return nil, err
			}
			return withReason(map[string]any{"membership": "leave"}, req.Reason), nil
		case "leave":
			return nil, nil // already left: nothing to do
		}
		return nil, matrix.Forbidden("you are not in room %s", roomID)
	})
	if err != nil {
		return errNotInRoom(err, roomID)
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/forget
func (s *Server) forget(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	uid := session(r).UserID
	if forgot, err := s.store.Forgotten(r.Context(), uid, roomID); err != nil {
		return err
	} else if forgot {
		matrix.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
	v, err := s.roomVisibility(r.Context(), roomID, uid)
	if err != nil {
		return err
	}
	switch v.Current() {
	case "":
		return matrix.NotFound("you were never in room %s", roomID)
	case "join", "invite", "knock":
		return matrix.Errorf("M_UNKNOWN", http.StatusBadRequest, "leave the room before forgetting it")
	}
	// On the room's subject, so that it is ordered with the user's later
	// joins (which un-forget the room) on replay as it was live.
	seq, err := s.log.Append(r.Context(), eventlog.RoomSubject(roomID), &eventlog.RoomForgotten{UserID: uid, RoomID: roomID},
		eventlog.AppendOptions{Room: roomID})
	if err != nil {
		return logUnavailable(err)
	}
	if err := s.awaitApplied(r.Context(), eventlog.RoomLaneOf(roomID), seq); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/kick
// POST /_matrix/client/v3/rooms/{roomId}/ban
// POST /_matrix/client/v3/rooms/{roomId}/unban
//
// moderate is kick, ban and unban: a membership change of another user.
func (s *Server) moderate(membership string, requireCurrent func(string) bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		roomID, err := roomIDVar(r)
		if err != nil {
			return err
		}
		var req membershipRequest
		if err := matrix.DecodeJSON(r, &req, false); err != nil {
			return err
		}
		target, err := req.target()
		if err != nil {
			return err
		}
		err = s.changeMembership(r, roomID, target, func(rs *roomState) (json.RawMessage, error) {
			if cur := rs.state.Membership(target); requireCurrent != nil && !requireCurrent(cur) {
				return nil, matrix.Forbidden("%s cannot be %s from membership %q", target, membership, cur)
			}
			m := membership
			if m != "ban" {
				m = "leave"
			}
			return withReason(map[string]any{"membership": m}, req.Reason), nil
		})
		if err != nil {
			return errNotInRoom(err, roomID)
		}
		matrix.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
}

func kickable(m string) bool   { return m == "join" || m == "invite" || m == "knock" }
func unbannable(m string) bool { return m == "ban" }

// joinAuthoriser decides join_authorised_via_users_server for uid's join
// to a room with the restricted or knock_restricted join rule (versions
// 8+): the local member with the most power among those who may invite,
// if uid is joined to a room the join rules' allow list names. It returns
// "" when the join needs no authoriser (another join rule, or uid is
// invited or joined) or uid meets no condition; the auth rules then
// decide, and refuse an unauthorised restricted join.
//
// The server, not the client, names the authoriser: the auth rules trust
// the authorising server's signature, and this server signs every event
// it builds, so a client-chosen value would let anyone in.
func (s *Server) joinAuthoriser(ctx context.Context, st matrix.State, uid matrix.UserID) (matrix.UserID, error) {
	create := st.Create()
	if create == nil || !create.Version().RestrictedJoins() {
		return "", nil
	}
	if rule := st.JoinRule(); rule != matrix.JoinRuleRestricted && rule != matrix.JoinRuleKnockRestricted {
		return "", nil
	}
	if m := st.Membership(uid); m == matrix.MembershipJoin || m == matrix.MembershipInvite {
		return "", nil
	}
	ok, err := s.meetsAllow(ctx, st, uid)
	if err != nil || !ok {
		return "", err
	}
	need := st.PowerLevels().Invite
	var best matrix.UserID
	var bestLevel int64
	for k, ev := range st.All() {
		if k.Type != matrix.TypeMember || ev.Membership() != matrix.MembershipJoin {
			continue
		}
		u := matrix.UserID(k.StateKey)
		if u.Server() != s.cfg.ServerName {
			continue
		}
		level := st.UserPowerLevel(u)
		if level < need {
			continue
		}
		if best == "" || level > bestLevel || level == bestLevel && u < best {
			best, bestLevel = u, level
		}
	}
	return best, nil
}

// meetsAllow reports whether uid is joined to a room of the join rules'
// allow list (entries of type m.room_membership; malformed entries and a
// malformed list allow nothing, as the spec asks).
//
// One query for the user's joined rooms, however long the allow list.
func (s *Server) meetsAllow(ctx context.Context, st matrix.State, uid matrix.UserID) (bool, error) {
	allowed := allowedRoomIDs(st)
	if len(allowed) == 0 {
		return false, nil
	}
	joined, err := s.store.JoinedRooms(ctx, string(uid))
	if err != nil {
		return false, err
	}
	for _, roomID := range allowed {
		if slices.Contains(joined, roomID) {
			return true, nil
		}
	}
	return false, nil
}

// withJoinAuthoriser returns member content c with the client's
// join_authorised_via_users_server replaced by the server's choice (see
// joinAuthoriser), or removed: on a join→join (a profile change) the key
// means nothing, and a client never chooses it.
func (s *Server) withJoinAuthoriser(ctx context.Context, st matrix.State, uid matrix.UserID, c json.RawMessage) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(c, &m); err != nil {
		return nil, matrix.BadJSON("member content: %v", err)
	}
	// Decoded, not compared as bytes: "\u006aoin" is "join" too once the
	// event is canonicalised, and a byte comparison let a client's own
	// authoriser through.
	var membership string
	_ = json.Unmarshal(m["membership"], &membership)
	_, had := m["join_authorised_via_users_server"]
	var via matrix.UserID
	if membership == matrix.MembershipJoin {
		v, err := s.joinAuthoriser(ctx, st, uid)
		if err != nil {
			return nil, err
		}
		via = v
	}
	if !had && via == "" {
		return c, nil
	}
	delete(m, "join_authorised_via_users_server")
	if via != "" {
		m["join_authorised_via_users_server"] = content(string(via))
	}
	return content(m), nil
}
