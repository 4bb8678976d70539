package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// The space hierarchy (GET /_matrix/client/v1/rooms/{roomId}/hierarchy):
// a depth-first walk of m.space.child links from a space, listing the
// rooms the caller may see with their summaries. Only rooms this server
// knows are listed (no federation).

const (
	// hierarchyDefaultLimit and hierarchyMaxLimit bound a page.
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
	// hierarchyMaxDepth is the default and largest max_depth.
	hierarchyMaxDepth = 10
	// hierarchyMaxRooms bounds the rooms one request reads: pagination
	// walks the tree again for each page, so the walk must stay cheap.
	hierarchyMaxRooms = 1000
)

type hierarchyParams struct {
	maxDepth      int
	suggestedOnly bool
	limit         int
	offset        int
}

// parseHierarchyParams reads the query. A from token carries the offset
// and the max_depth and suggested_only of the first page, which the spec
// does not let later pages change.
func parseHierarchyParams(r *http.Request) (hierarchyParams, error) {
	q := r.URL.Query()
	p := hierarchyParams{maxDepth: hierarchyMaxDepth, limit: hierarchyDefaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, matrix.InvalidParam("limit must be a positive integer")
		}
		p.limit = min(n, hierarchyMaxLimit)
	}
	depthSet, suggestedSet := q.Has("max_depth"), q.Has("suggested_only")
	if depthSet {
		n, err := strconv.Atoi(q.Get("max_depth"))
		if err != nil || n < 0 {
			return p, matrix.InvalidParam("max_depth must be a non-negative integer")
		}
		p.maxDepth = min(n, hierarchyMaxDepth)
	}
	if suggestedSet {
		switch q.Get("suggested_only") {
		case "true":
			p.suggestedOnly = true
		case "false":
		default:
			return p, matrix.InvalidParam("suggested_only must be true or false")
		}
	}
	from := q.Get("from")
	if from == "" {
		return p, nil
	}
	var offset, depth, suggested int
	if n, err := fmt.Sscanf(from, "h%d_%d_%d", &offset, &depth, &suggested); err != nil || n != 3 ||
		offset < 0 || depth < 0 || depth > hierarchyMaxDepth || suggested > 1 || suggested < 0 || from != hierarchyToken(offset, depth, suggested == 1) {
		return p, matrix.InvalidParam("unknown from token")
	}
	if depthSet && depth != p.maxDepth || suggestedSet && (suggested == 1) != p.suggestedOnly {
		return p, matrix.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
	}
	p.offset, p.maxDepth, p.suggestedOnly = offset, depth, suggested == 1
	return p, nil
}

func hierarchyToken(offset, maxDepth int, suggested bool) string {
	s := 0
	if suggested {
		s = 1
	}
	return fmt.Sprintf("h%d_%d_%d", offset, maxDepth, s)
}

// spaceChild is one valid m.space.child link.
type spaceChild struct {
	roomID    string
	order     string // "" when absent or invalid
	ts        int64
	suggested bool
	stripped  json.RawMessage
}

// spaceChildren returns a space's valid child links (state key a room ID,
// content.via a non-empty list) in the spec's order: those with a valid
// order first, by order; then by the link's origin_server_ts; then by
// room ID. With suggestedOnly, only suggested ones.
func spaceChildren(evs []store.StoredEvent, suggestedOnly bool) []spaceChild {
	var out []spaceChild
	for _, ev := range evs {
		var e struct {
			Type           string `json:"type"`
			StateKey       string `json:"state_key"`
			Sender         string `json:"sender"`
			OriginServerTS int64  `json:"origin_server_ts"`
			Content        struct {
				Via       []json.RawMessage `json:"via"`
				Order     json.RawMessage   `json:"order"`
				Suggested json.RawMessage   `json:"suggested"`
			} `json:"content"`
		}
		if json.Unmarshal(ev.Client, &e) != nil || len(e.Content.Via) == 0 {
			continue
		}
		if _, err := matrix.ParseRoomID(e.StateKey); err != nil {
			continue
		}
		c := spaceChild{roomID: e.StateKey, ts: e.OriginServerTS, suggested: string(e.Content.Suggested) == "true"}
		if suggestedOnly && !c.suggested {
			continue
		}
		var order string
		if json.Unmarshal(e.Content.Order, &order) == nil && validChildOrder(order) {
			c.order = order
		}
		var full struct {
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(ev.Client, &full)
		c.stripped, _ = json.Marshal(map[string]any{"type": e.Type, "state_key": e.StateKey, "sender": e.Sender,
			"origin_server_ts": e.OriginServerTS, "content": full.Content})
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b spaceChild) int {
		if (a.order != "") != (b.order != "") {
			if a.order != "" {
				return -1
			}
			return 1
		}
		if c := strings.Compare(a.order, b.order); c != 0 {
			return c
		}
		if a.ts != b.ts {
			if a.ts < b.ts {
				return -1
			}
			return 1
		}
		return strings.Compare(a.roomID, b.roomID)
	})
	return out
}

// validChildOrder is the spec's rule for content.order: at most 50
// printable ASCII characters.
func validChildOrder(o string) bool {
	if o == "" || len(o) > 50 {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7e {
			return false
		}
	}
	return true
}

func isSpace(r *store.SpaceRoom) bool { return r.RoomType != nil && *r.RoomType == "m.space" }

// spaceAllowedRoomIDs is the room_membership allow list of a restricted room's
// join rules.
func spaceAllowedRoomIDs(r *store.SpaceRoom) []string {
	if r.JoinRule == nil || (*r.JoinRule != "restricted" && *r.JoinRule != "knock_restricted") {
		return nil
	}
	var e struct {
		Content struct {
			Allow []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			} `json:"allow"`
		} `json:"content"`
	}
	if json.Unmarshal(r.JoinRules, &e) != nil {
		return nil
	}
	var out []string
	for _, a := range e.Content.Allow {
		if a.Type != "m.room_membership" {
			continue
		}
		if _, err := matrix.ParseRoomID(a.RoomID); err == nil {
			out = append(out, a.RoomID)
		}
	}
	return out
}

// hierarchyVisible is the spec's rule for which rooms the hierarchy
// shows, and the room summary too: the caller is joined or invited (or
// has knocked, as the room summary counts it), may join (public, or
// restricted to a room they are in), may knock, or the room is
// world-readable. A banned user sees nothing of the room.
func hierarchyVisible(r *store.SpaceRoom, joined map[string]bool) bool {
	hv, rule := "", ""
	if r.HistoryVisibility != nil {
		hv = *r.HistoryVisibility
	}
	if r.JoinRule != nil {
		rule = *r.JoinRule
	}
	ok, _ := roomVisible(r.Membership, hv, rule, spaceAllowedRoomIDs(r), func() (map[string]bool, error) { return joined, nil })
	return ok
}

// roomVisible is hierarchyVisible's rule on its parts, for callers that
// have a room's state rather than a store.SpaceRoom. joined (the rooms the
// caller is joined to) is called only for a restricted room.
func roomVisible(membership, historyVisibility, joinRule string, allowed []string, joined func() (map[string]bool, error)) (bool, error) {
	switch membership {
	case "join", "invite", "knock":
		return true, nil
	case "ban":
		return false, nil
	}
	if historyVisibility == "world_readable" {
		return true, nil
	}
	switch joinRule {
	case "public", "knock", "knock_restricted":
		return true, nil
	case "restricted":
		if len(allowed) == 0 {
			return false, nil
		}
		in, err := joined()
		if err != nil {
			return false, err
		}
		for _, id := range allowed {
			if in[id] {
				return true, nil
			}
		}
	}
	return false, nil
}

// hierarchy answers GET /_matrix/client/v1/rooms/{roomId}/hierarchy.
// The tree is read level by level (one round trip per depth, however
// many rooms a level has), then walked depth-first in memory; a page is a
// slice of that walk, so pagination needs no server-side state.
func (s *Server) hierarchy(w http.ResponseWriter, r *http.Request) error {
	root, err := roomIDVar(r)
	if err != nil {
		return err
	}
	p, err := parseHierarchyParams(r)
	if err != nil {
		return err
	}
	uid := session(r).UserID
	rooms, joined, err := s.readSpaceTree(r.Context(), uid, root, p)
	if err != nil {
		return err
	}
	if rr := rooms[root]; rr == nil || !hierarchyVisible(rr, joined) {
		return matrix.Forbidden("you may not view room %s", root)
	}
	order := walkSpaceTree(rooms, joined, root, p)
	out := []json.RawMessage{}
	// The offset comes from the client's token: clamped, so that one past
	// the walk (up to the largest int) cannot overflow end into a bogus
	// next_batch.
	start := min(p.offset, len(order))
	end := min(len(order), start+p.limit)
	for i := start; i < end; i++ {
		out = append(out, hierarchyEntry(rooms[order[i]], p.suggestedOnly))
	}
	resp := map[string]any{"rooms": out}
	if end < len(order) {
		resp["next_batch"] = hierarchyToken(end, p.maxDepth, p.suggestedOnly)
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// readSpaceTree reads every room the walk may reach: the rooms within
// maxDepth links of root through visible spaces (at most
// hierarchyMaxRooms), one query per level. It also returns the rooms the
// user is joined to, for restricted join rules.
func (s *Server) readSpaceTree(ctx context.Context, uid, root string, p hierarchyParams) (map[string]*store.SpaceRoom, map[string]bool, error) {
	joinedList, err := s.store.JoinedRooms(ctx, uid)
	if err != nil {
		return nil, nil, err
	}
	joined := make(map[string]bool, len(joinedList))
	for _, id := range joinedList {
		joined[id] = true
	}
	rooms := map[string]*store.SpaceRoom{}
	seen := map[string]bool{root: true}
	level := []string{root}
	for depth := 0; len(level) > 0; depth++ {
		got, err := s.store.SpaceRooms(ctx, uid, level)
		if err != nil {
			return nil, nil, err
		}
		var next []string
		for _, id := range level {
			rr := got[id]
			if rr == nil {
				continue // unknown here: it would need federation
			}
			rooms[id] = rr
			if depth >= p.maxDepth || !isSpace(rr) || !hierarchyVisible(rr, joined) {
				continue
			}
			for _, c := range spaceChildren(rr.Children, p.suggestedOnly) {
				if !seen[c.roomID] && len(seen) < hierarchyMaxRooms {
					seen[c.roomID] = true
					next = append(next, c.roomID)
				}
			}
		}
		level = next
	}
	return rooms, joined, nil
}

// walkSpaceTree lists the visible rooms depth-first from root, each once.
func walkSpaceTree(rooms map[string]*store.SpaceRoom, joined map[string]bool, root string, p hierarchyParams) []string {
	var order []string
	visited := map[string]bool{}
	var visit func(id string, depth int)
	visit = func(id string, depth int) {
		rr := rooms[id]
		if visited[id] || rr == nil || !hierarchyVisible(rr, joined) {
			return
		}
		visited[id] = true
		order = append(order, id)
		if depth >= p.maxDepth || !isSpace(rr) {
			return
		}
		for _, c := range spaceChildren(rr.Children, p.suggestedOnly) {
			visit(c.roomID, depth+1)
		}
	}
	visit(root, 0)
	return order
}

// hierarchyEntry is one room of the response: its summary and, for a
// space, its child links as stripped state.
func hierarchyEntry(rr *store.SpaceRoom, suggestedOnly bool) json.RawMessage {
	m := map[string]any{
		"room_id":            rr.RoomID,
		"num_joined_members": rr.JoinedMembers,
		"world_readable":     rr.HistoryVisibility != nil && *rr.HistoryVisibility == "world_readable",
		"guest_can_join":     rr.GuestAccess != nil && *rr.GuestAccess == "can_join",
		"room_version":       rr.RoomVersion,
	}
	for k, v := range map[string]*string{"name": rr.Name, "topic": rr.Topic, "avatar_url": rr.AvatarURL,
		"canonical_alias": rr.CanonicalAlias, "join_rule": rr.JoinRule, "room_type": rr.RoomType, "encryption": rr.Encryption} {
		if v != nil && *v != "" {
			m[k] = *v
		}
	}
	if ids := spaceAllowedRoomIDs(rr); ids != nil {
		m["allowed_room_ids"] = ids
	}
	children := []json.RawMessage{}
	if isSpace(rr) {
		for _, c := range spaceChildren(rr.Children, suggestedOnly) {
			children = append(children, c.stripped)
		}
	}
	m["children_state"] = children
	b, _ := json.Marshal(m)
	return b
}
