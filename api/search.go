package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// POST /_matrix/client/v3/search
//
// search is POST /search: full-text search of message bodies, room names
// and topics in the rooms the caller is joined to, best match or newest
// first, each result checked against the room's history visibility.
func (s *Server) search(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		SearchCategories struct {
			RoomEvents *struct {
				SearchTerm   string          `json:"search_term"`
				Keys         []string        `json:"keys"`
				Filter       json.RawMessage `json:"filter"`
				OrderBy      string          `json:"order_by"`
				EventContext *struct {
					BeforeLimit *int `json:"before_limit"`
					AfterLimit  *int `json:"after_limit"`
				} `json:"event_context"`
			} `json:"room_events"`
		} `json:"search_categories"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	re := req.SearchCategories.RoomEvents
	if re == nil {
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{}})
		return nil
	}
	if strings.TrimSpace(re.SearchTerm) == "" {
		return matrix.InvalidParam("search_term must not be empty")
	}
	keys := re.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	for _, k := range keys {
		if k != "content.body" && k != "content.name" && k != "content.topic" {
			return matrix.InvalidParam("unknown search key %q", k)
		}
	}
	byRank := true
	switch re.OrderBy {
	case "", "rank":
	case "recent":
		byRank = false
	default:
		return matrix.InvalidParam("order_by must be rank or recent")
	}
	f := &matrix.EventFilter{}
	if len(re.Filter) > 0 && string(re.Filter) != "null" {
		var err error
		if f, err = matrix.ParseEventFilter(re.Filter); err != nil {
			return matrix.InvalidParam("invalid filter: %v", err)
		}
	}
	limit := 10
	if f.Limit != nil {
		limit = min(max(*f.Limit, 1), 100)
	}
	// next_batch: "r<offset>" when ranked, "p<position>" when newest first.
	var offset int
	var before int64
	if nb := r.URL.Query().Get("next_batch"); nb != "" {
		n, err := strconv.ParseInt(nb[min(1, len(nb)):], 10, 64)
		if err != nil || n < 0 || (byRank && nb[0] != 'r') || (!byRank && nb[0] != 'p') {
			return matrix.InvalidParam("invalid next_batch")
		}
		if byRank {
			offset = int(min(n, 1<<20))
		} else {
			before = n
		}
	}
	ss := session(r)
	joined, err := s.store.JoinedRooms(r.Context(), ss.UserID)
	if err != nil {
		return err
	}
	rooms := slices.DeleteFunc(joined, func(id string) bool { return !f.AllowsRoom(id) })
	// The caller's view of each room goes into the query, so that the
	// count, like the results, is of events the caller may see.
	views, err := s.store.Histories(r.Context(), ss.UserID, rooms)
	if err != nil {
		return err
	}
	visible := make(map[string]store.PosRanges, len(views))
	for id, v := range views {
		visible[id] = v.Ranges()
	}
	hits, total, err := s.store.Search(r.Context(), store.SearchQuery{Term: re.SearchTerm, Rooms: rooms, Keys: keys,
		Senders: f.Senders, NotSenders: f.NotSenders, ByRank: byRank, Offset: offset, Before: before, Limit: limit, Visible: visible})
	if err != nil {
		return err
	}
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.EventID
	}
	evs, err := s.store.EventsByID(r.Context(), rooms, ids)
	if err != nil {
		return err
	}
	results := []map[string]any{}
	now := time.Now()
	for _, h := range hits {
		e, ok := evs[h.EventID]
		if !ok {
			continue
		}
		v := views[e.RoomID]
		if v == nil || !v.CanSee(&e) || !f.Allows(e.Type, e.Sender, e.RoomID, func() json.RawMessage { return contentOf(e.Client) }) {
			continue
		}
		res := map[string]any{"rank": h.Rank, "result": renderEvent(&e, ss, now)}
		if ec := re.EventContext; ec != nil {
			bl, al := 5, 5
			if ec.BeforeLimit != nil {
				bl = min(max(*ec.BeforeLimit, 0), 20)
			}
			if ec.AfterLimit != nil {
				al = min(max(*ec.AfterLimit, 0), 20)
			}
			none := &matrix.EventFilter{}
			beforeEvs, bnext, _, err := s.page(r, e.RoomID, v, none, e.Pos, true, 0, bl)
			if err != nil {
				return err
			}
			afterEvs, anext, _, err := s.page(r, e.RoomID, v, none, e.Pos+1, false, 0, al)
			if err != nil {
				return err
			}
			res["context"] = map[string]any{
				"events_before": renderEvents(beforeEvs, ss), "events_after": renderEvents(afterEvs, ss),
				"start": eventlog.FormatRoomPoint(bnext), "end": eventlog.FormatRoomPoint(anext),
			}
		}
		results = append(results, res)
	}
	out := map[string]any{"count": total, "results": results, "highlights": searchHighlights(re.SearchTerm)}
	if len(hits) == limit {
		if byRank {
			out["next_batch"] = "r" + strconv.Itoa(offset+limit)
		} else {
			out["next_batch"] = "p" + strconv.FormatInt(hits[len(hits)-1].Pos, 10)
		}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{"room_events": out}})
	return nil
}

// searchHighlights are the words of a search term, for clients to mark.
func searchHighlights(term string) []string {
	words := strings.Fields(strings.ToLower(term))
	slices.Sort(words)
	return slices.Compact(words)
}
