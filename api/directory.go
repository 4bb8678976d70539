package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

type publicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Server string `json:"server"`
	Filter *struct {
		GenericSearchTerm string `json:"generic_search_term"`
	} `json:"filter"`
}

// GET /_matrix/client/v3/publicRooms
// POST /_matrix/client/v3/publicRooms
func (s *Server) publicRooms(w http.ResponseWriter, r *http.Request) error {
	var req publicRoomsRequest
	if r.Method == http.MethodPost {
		if err := matrix.DecodeJSON(r, &req, true); err != nil {
			return err
		}
	} else {
		q := r.URL.Query()
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil {
				return matrix.InvalidParam("invalid limit")
			}
			req.Limit = &n
		}
		req.Since, req.Server = q.Get("since"), q.Get("server")
	}
	if req.Server != "" && req.Server != string(s.cfg.ServerName) {
		return matrix.NotFound("the directory of server %s is not available", req.Server)
	}
	limit := 100
	if req.Limit != nil && *req.Limit > 0 {
		limit = min(*req.Limit, 500)
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if err != nil || n < 0 || !strings.HasPrefix(req.Since, "o") {
			return matrix.InvalidParam("invalid since token")
		}
		offset = n
	}
	search := ""
	if req.Filter != nil {
		search = req.Filter.GenericSearchTerm
	}
	rooms, total, err := s.store.PublicRooms(r.Context(), offset, limit, search)
	if err != nil {
		return err
	}
	chunk := make([]map[string]any, 0, len(rooms))
	for _, pr := range rooms {
		c := map[string]any{
			"room_id":            pr.RoomID,
			"num_joined_members": pr.JoinedMembers,
			"world_readable":     pr.HistoryVisibility != nil && *pr.HistoryVisibility == "world_readable",
			"guest_can_join":     pr.GuestAccess != nil && *pr.GuestAccess == "can_join",
			"join_rule":          "public",
		}
		set := func(k string, v *string) {
			if v != nil {
				c[k] = *v
			}
		}
		set("name", pr.Name)
		set("topic", pr.Topic)
		set("avatar_url", pr.AvatarURL)
		set("canonical_alias", pr.CanonicalAlias)
		set("join_rule", pr.JoinRule)
		set("room_type", pr.RoomType)
		chunk = append(chunk, c)
	}
	resp := map[string]any{"chunk": chunk, "total_room_count_estimate": total}
	if offset+len(rooms) < total {
		resp["next_batch"] = "o" + strconv.Itoa(offset+len(rooms))
	}
	if offset > 0 {
		resp["prev_batch"] = "o" + strconv.Itoa(max(0, offset-limit))
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// GET /_matrix/client/v3/directory/list/room/{roomId}
func (s *Server) getDirectoryVisibility(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	h, err := s.store.RoomHeadOf(r.Context(), roomID)
	if errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("room %s not found", roomID)
	}
	if err != nil {
		return err
	}
	vis := "private"
	if h.Published {
		vis = "public"
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"visibility": vis})
	return nil
}

// PUT /_matrix/client/v3/directory/list/room/{roomId}
func (s *Server) putDirectoryVisibility(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	var req struct {
		Visibility *string `json:"visibility"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.Visibility == nil || (*req.Visibility != "public" && *req.Visibility != "private") {
		return matrix.InvalidParam("visibility must be public or private")
	}
	ss := session(r)
	// Checked and appended against the same room state, like an event:
	// a moderator demoted meanwhile cannot publish.
	for attempt := 0; ; attempt++ {
		rs, err := s.loadRoom(r.Context(), roomID)
		if err != nil {
			return err
		}
		// Publishing a room is a moderator's decision: joined members
		// who may change its canonical alias may list it.
		if !mayManageListing(rs, ss) {
			return matrix.Forbidden("you may not change this room's directory visibility")
		}
		seq, err := s.log.Append(r.Context(), eventlog.RoomSubject(roomID), &eventlog.RoomPublished{RoomID: roomID, Published: *req.Visibility == "public"},
			eventlog.AppendOptions{Room: roomID, ExpectSeq: eventlog.Expect(rs.head.LastSeq)})
		if errors.Is(err, eventlog.ErrConflict) && attempt < maxAppendAttempts {
			if err := s.catchUpRoom(r.Context(), roomID); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return logUnavailable(err)
		}
		if err := s.awaitApplied(r.Context(), eventlog.RoomLaneOf(roomID), seq); err != nil {
			return err
		}
		break
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}
