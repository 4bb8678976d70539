package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

func (s *Server) profileUser(r *http.Request) (store.User, error) {
	uid, err := matrix.ParseUserID(pathVar(r, "userId"))
	if err != nil {
		return store.User{}, matrix.InvalidParam("invalid user ID: %v", err)
	}
	u, err := s.store.User(r.Context(), string(uid))
	if errors.Is(err, store.ErrNotFound) && s.queryUser(r.Context(), string(uid)) {
		// The service created the user before answering: read again.
		u, err = lookupCaughtUp(r.Context(), s, eventlog.StreamAccounts, func(ctx context.Context) (store.User, error) {
			return s.store.User(ctx, string(uid))
		})
	}
	if errors.Is(err, store.ErrNotFound) || (err == nil && u.Deactivated) {
		return u, matrix.NotFound("profile not found")
	}
	return u, err
}

func profileBody(u store.User, field string) map[string]any {
	out := map[string]any{}
	if u.Displayname != "" && (field == "" || field == "displayname") {
		out["displayname"] = u.Displayname
	}
	if u.AvatarURL != "" && (field == "" || field == "avatar_url") {
		out["avatar_url"] = u.AvatarURL
	}
	return out
}

// GET /_matrix/client/v3/profile/{userId}
// GET /_matrix/client/v3/profile/{userId}/displayname
// GET /_matrix/client/v3/profile/{userId}/avatar_url
func (s *Server) getProfile(field string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		u, err := s.profileUser(r)
		if err != nil {
			return err
		}
		body := profileBody(u, field)
		if field != "" && len(body) == 0 {
			return matrix.NotFound("no %s set", field)
		}
		matrix.WriteJSON(w, http.StatusOK, body)
		return nil
	}
}

// PUT /_matrix/client/v3/profile/{userId}/displayname
// PUT /_matrix/client/v3/profile/{userId}/avatar_url
//
// putProfile sets a profile field, then updates the user's membership
// event in every room they are joined to, as the spec asks.
func (s *Server) putProfile(field string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ss := session(r)
		if pathVar(r, "userId") != ss.UserID {
			if _, err := matrix.ParseUserID(pathVar(r, "userId")); err != nil {
				return matrix.InvalidParam("invalid user ID: %v", err)
			}
			return matrix.Forbidden("you may only change your own profile")
		}
		var body map[string]json.RawMessage
		if err := matrix.DecodeJSON(r, &body, false); err != nil {
			return err
		}
		raw, ok := body[field]
		if !ok {
			return matrix.MissingParam("%s is required", field)
		}
		var val *string
		if err := json.Unmarshal(raw, &val); err != nil {
			return matrix.BadJSON("%s must be a string", field)
		}
		v := ""
		if val != nil {
			v = *val
		}
		limit := matrix.MaxDisplayNameBytes
		if field == "avatar_url" {
			limit = matrix.MaxAvatarURLBytes
		}
		if err := matrix.CheckMaxLength(field, v, limit); err != nil {
			return err
		}
		rec := &eventlog.ProfileSet{UserID: ss.UserID}
		if field == "displayname" {
			rec.Displayname = &v
		} else {
			rec.AvatarURL = &v
		}
		if err := s.appendAccount(r.Context(), ss.UserID, rec, nil); err != nil {
			return err
		}
		u, err := s.store.User(r.Context(), ss.UserID)
		if err != nil {
			return err
		}
		rooms, err := s.store.JoinedRooms(r.Context(), ss.UserID)
		if err != nil {
			return err
		}
		for _, roomID := range rooms {
			_, err := s.writeRoom(r.Context(), roomID, nil, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
				if rs.state.Membership(matrix.UserID(ss.UserID)) != "join" {
					return nil, nil
				}
				return []*matrix.ProtoEvent{{Type: matrix.TypeMember, StateKey: stateKeyPtr(ss.UserID), Sender: matrix.UserID(ss.UserID),
					Content: memberContent("join", u.Displayname, u.AvatarURL)}}, nil
			})
			if err != nil {
				s.logger.Warn("profile change not reflected in room", "room_id", roomID, "user_id", ss.UserID, "err", err)
			}
		}
		matrix.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
}

// POST /_matrix/client/v3/user_directory/search
//
// searchUserDirectory is POST /user_directory/search: users the caller
// shares a room with, or who are in a public room, by ID or display name.
func (s *Server) searchUserDirectory(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.SearchTerm == nil {
		return matrix.MissingParam("search_term is required")
	}
	limit := 10
	if req.Limit != nil {
		if *req.Limit < 0 {
			return matrix.InvalidParam("limit must not be negative")
		}
		limit = min(*req.Limit, 100)
	}
	term := strings.TrimSpace(*req.SearchTerm)
	results := []map[string]any{}
	limited := false
	if term != "" && limit > 0 {
		us, more, err := s.store.SearchUsers(r.Context(), session(r).UserID, term, limit)
		if err != nil {
			return err
		}
		limited = more
		for _, u := range us {
			m := map[string]any{"user_id": u.UserID}
			if u.Displayname != "" {
				m["display_name"] = u.Displayname
			}
			if u.AvatarURL != "" {
				m["avatar_url"] = u.AvatarURL
			}
			results = append(results, m)
		}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
	return nil
}
