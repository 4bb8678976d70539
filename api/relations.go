package api

import (
	"encoding/json"
	"net/http"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}
// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}
// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}
//
// relations is GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]:
// the events relating to a parent the caller can see, newest first by
// default, paginated with the same position tokens as /messages.
func (s *Server) relations(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	backwards, err := parseDir(q.Get("dir"))
	if err != nil {
		return err
	}
	limit, err := parseLimit(q.Get("limit"), 50)
	if err != nil {
		return err
	}
	switch q.Get("recurse") {
	case "", "false", "true":
		// Only direct relations are followed; a server may stop at depth 1.
	default:
		return matrix.InvalidParam("recurse must be true or false")
	}
	parent, v, err := s.visibleEvent(r, roomID, pathVar(r, "eventId"))
	if err != nil {
		return err
	}
	relType, eventType := pathVar(r, "relType"), pathVar(r, "eventType")
	if len(relType) > maxTypeBytes || len(eventType) > maxTypeBytes {
		return matrix.InvalidParam("relation or event type too long")
	}
	var from int64
	if tok := q.Get("from"); tok != "" {
		if from, err = eventlog.ParseRoomPoint(tok); err != nil {
			return matrix.InvalidParam("invalid from token")
		}
	} else if backwards {
		from = 1 << 62 // after everything
	}
	var to int64
	if tok := q.Get("to"); tok != "" {
		if to, err = eventlog.ParseRoomPoint(tok); err != nil {
			return matrix.InvalidParam("invalid to token")
		}
	}
	evs, next, more, err := pageOf(v, &matrix.EventFilter{}, from, backwards, limit, func(next int64, want int) ([]store.StoredEvent, error) {
		return s.store.RelatedEvents(r.Context(), roomID, parent.EventID, relType, eventType, next, backwards, to, want)
	})
	if err != nil {
		return err
	}
	resp := map[string]any{"chunk": renderEvents(evs, session(r))}
	if q.Get("from") != "" {
		resp["prev_batch"] = q.Get("from")
	}
	if more {
		resp["next_batch"] = eventlog.FormatRoomPoint(next)
	}
	if q.Get("recurse") == "true" {
		resp["recursion_depth"] = 1
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// GET /_matrix/client/v1/rooms/{roomId}/threads
//
// threads is GET /rooms/{roomId}/threads: the room's thread roots the
// caller can see, by latest reply, each with its thread summary
// (unsigned.m.relations.m.thread) as clients show it. Roots, replies and
// counts are of this room's events the caller may see (store.Threads);
// each event is checked again here before it is shown.
func (s *Server) threads(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), 50)
	if err != nil {
		return err
	}
	var participated bool
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participated = true
	default:
		return matrix.InvalidParam("include must be all or participated")
	}
	var before int64
	if tok := q.Get("from"); tok != "" {
		if before, err = eventlog.ParseRoomPoint(tok); err != nil {
			return matrix.InvalidParam("invalid from token")
		}
	}
	ss := session(r)
	v, err := s.roomVisibility(r.Context(), roomID, ss.UserID)
	if err != nil {
		return err
	}
	if err := mayReadHistory(v, roomID); err != nil {
		return err
	}
	chunk := []json.RawMessage{}
	var next int64
	now := time.Now()
	// Scan in rounds, as roots the caller may not see are skipped.
	for scanned := 0; len(chunk) < limit && scanned < maxScanPerPage; {
		want := min(max(2*(limit-len(chunk)), 20), maxPageLimit)
		threads, err := s.store.Threads(r.Context(), v, participated, before, want)
		if err != nil {
			return err
		}
		scanned += len(threads)
		if len(threads) == 0 {
			next = 0
			break
		}
		ids := make([]string, len(threads))
		latest := make([]int64, len(threads))
		for i, t := range threads {
			ids[i], latest[i] = t.RootID, t.LatestPos
		}
		roots, err := s.store.EventsByID(r.Context(), []string{roomID}, ids)
		if err != nil {
			return err
		}
		replies, err := s.store.EventsAtPositions(r.Context(), roomID, latest)
		if err != nil {
			return err
		}
		for _, t := range threads {
			before, next = t.LatestPos, t.LatestPos
			root, ok := roots[t.RootID]
			if !ok || !v.CanSee(&root) {
				continue
			}
			summary := map[string]any{"count": t.Count, "current_user_participated": t.Participated}
			if reply, ok := replies[t.LatestPos]; ok && v.CanSee(&reply) {
				summary["latest_event"] = renderEvent(&reply, ss, now)
			}
			chunk = append(chunk, withRelations(renderEvent(&root, ss, now), map[string]any{"m.thread": summary}))
			if len(chunk) == limit {
				break
			}
		}
		if len(threads) < want && len(chunk) < limit {
			next = 0
			break
		}
	}
	resp := map[string]any{"chunk": chunk}
	if next != 0 {
		resp["next_batch"] = eventlog.FormatRoomPoint(next)
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// withRelations adds bundled aggregations to a rendered event's unsigned.
func withRelations(ev json.RawMessage, rel map[string]any) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(ev, &m) != nil {
		return ev
	}
	var unsigned map[string]any
	_ = json.Unmarshal(m["unsigned"], &unsigned)
	if unsigned == nil {
		unsigned = map[string]any{}
	}
	unsigned["m.relations"] = rel
	m["unsigned"], _ = json.Marshal(unsigned)
	out, err := json.Marshal(m)
	if err != nil {
		return ev
	}
	return out
}
