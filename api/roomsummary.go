package api

import (
	"encoding/json"
	"net/http"

	"strand/eventlog/matrix"
)

// roomSummary answers GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
// (room_summary.yaml): what a client shows of a room before joining it.
// A room the caller could not join or peek into is 404, like one that does
// not exist, so that the endpoint reveals no private room. The via
// parameter names servers to ask for remote rooms; there are none.
func (s *Server) roomSummary(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.resolveRoom(r, pathVar(r, "roomIdOrAlias"))
	if err != nil {
		return err
	}
	rs, err := s.loadRoom(r.Context(), roomID)
	if err != nil {
		return err
	}
	st := rs.state
	uid := matrix.UserID(session(r).UserID)
	get := func(typ, key string) string {
		ev := st.Get(matrix.StateKey{Type: typ})
		if ev == nil {
			return ""
		}
		var c map[string]json.RawMessage
		if json.Unmarshal(ev.Content(), &c) != nil {
			return ""
		}
		var v string
		if json.Unmarshal(c[key], &v) != nil {
			return ""
		}
		return v
	}
	membership := st.Membership(uid)
	rule := st.JoinRule()
	worldReadable := get(matrix.TypeHistoryVis, "history_visibility") == "world_readable"
	visible, err := s.summaryVisible(r, string(uid), st)
	if err != nil {
		return err
	}
	if !visible {
		return matrix.NotFound("room %s not found", roomID)
	}

	joined := 0
	for k, ev := range st.All() {
		if k.Type == matrix.TypeMember && ev.Membership() == matrix.MembershipJoin {
			joined++
		}
	}
	out := map[string]any{
		"room_id":            roomID,
		"num_joined_members": joined,
		"world_readable":     worldReadable,
		"guest_can_join":     get("m.room.guest_access", "guest_access") == "can_join",
		"join_rule":          rule,
		"room_version":       rs.head.Version,
	}
	for _, f := range []struct{ field, typ, key string }{
		{"name", "m.room.name", "name"},
		{"topic", "m.room.topic", "topic"},
		{"avatar_url", "m.room.avatar", "url"},
		{"canonical_alias", "m.room.canonical_alias", "alias"},
		{"encryption", "m.room.encryption", "algorithm"},
		{"room_type", matrix.TypeCreate, "type"},
	} {
		if v := get(f.typ, f.key); v != "" {
			out[f.field] = v
		}
	}
	if membership != matrix.MembershipLeave {
		out["membership"] = membership
	}
	if rule == matrix.JoinRuleRestricted || rule == matrix.JoinRuleKnockRestricted {
		if ids := allowedRoomIDs(st); len(ids) > 0 {
			out["allowed_room_ids"] = ids
		}
	}
	matrix.WriteJSON(w, http.StatusOK, out)
	return nil
}

// allowedRoomIDs lists the rooms of the join rules' allow list, skipping
// malformed entries.
func allowedRoomIDs(st matrix.State) []string {
	jr := st.Get(matrix.StateKey{Type: matrix.TypeJoinRules})
	if jr == nil {
		return nil
	}
	var c struct {
		Allow []json.RawMessage `json:"allow"`
	}
	if json.Unmarshal(jr.Content(), &c) != nil {
		return nil
	}
	var ids []string
	for _, raw := range c.Allow {
		var cond struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		}
		if json.Unmarshal(raw, &cond) != nil || cond.Type != "m.room_membership" {
			continue
		}
		if _, err := matrix.ParseRoomID(cond.RoomID); err == nil {
			ids = append(ids, cond.RoomID)
		}
	}
	return ids
}

// summaryVisible reports whether a user could join or peek into a room of
// this state: what the room summary, and a room report, require.
func (s *Server) summaryVisible(r *http.Request, uid string, st matrix.State) (bool, error) {
	var hv struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	if ev := st.Get(matrix.StateKey{Type: matrix.TypeHistoryVis}); ev != nil {
		_ = json.Unmarshal(ev.Content(), &hv)
	}
	return roomVisible(string(st.Membership(matrix.UserID(uid))), hv.HistoryVisibility, string(st.JoinRule()), allowedRoomIDs(st),
		func() (map[string]bool, error) {
			ids, err := s.store.JoinedRooms(r.Context(), uid)
			in := make(map[string]bool, len(ids))
			for _, id := range ids {
				in[id] = true
			}
			return in, err
		})
}
