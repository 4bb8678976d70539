package api

import (
	"encoding/json"
	"errors"
	"net/http"
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
		if _, err := s.store.User(r.Context(), string(target)); errors.Is(err, store.ErrNotFound) {
			return matrix.NotFound("user %s does not exist", target)
		} else if err != nil {
			return err
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
	var roomID string
	switch {
	case strings.HasPrefix(target, "#"):
		alias, err := matrix.ParseRoomAlias(target)
		if err != nil {
			return matrix.InvalidParam("invalid room alias: %v", err)
		}
		id, _, err := s.store.AliasRoom(r.Context(), string(alias))
		if errors.Is(err, store.ErrNotFound) {
			return matrix.NotFound("room alias %s not found", alias)
		}
		if err != nil {
			return err
		}
		roomID = id
	default:
		id, err := matrix.ParseRoomID(target)
		if err != nil {
			return matrix.InvalidParam("invalid room ID or alias: %v", err)
		}
		roomID = string(id)
	}
	uid := session(r).UserID
	profile, err := s.store.User(r.Context(), uid)
	if err != nil {
		return err
	}
	err = s.changeMembership(r, roomID, matrix.UserID(uid), func(rs *roomState) (json.RawMessage, error) {
		if rs.state.Membership(matrix.UserID(uid)) == "join" {
			return nil, nil
		}
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
		return withReason(c, reason), nil
	})
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	return nil
}

// joinKeysNotContent are keys of a /join body that are not membership
// content: the server decides membership, third_party_signed is a request
// parameter, join_authorised_via_users_server is an auth field only the
// server may set, and reason is handled on its own.
var joinKeysNotContent = map[string]bool{"membership": true, "third_party_signed": true, "join_authorised_via_users_server": true, "reason": true}

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
		switch rs.state.Membership(uid) {
		case "join", "invite", "knock":
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
	if err := s.awaitApplied(r.Context(), eventlog.StreamRooms, seq); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

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
