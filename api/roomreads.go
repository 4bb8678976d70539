package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// renderEvent adds unsigned to an event's stored client form.
func renderEvent(e *store.StoredEvent, viewer store.Session, now time.Time) json.RawMessage {
	return e.Render(viewer.UserID, viewer.DeviceID, now)
}

func renderEvents(evs []store.StoredEvent, viewer store.Session) []json.RawMessage {
	now := time.Now()
	out := make([]json.RawMessage, len(evs))
	for i := range evs {
		out[i] = renderEvent(&evs[i], viewer, now)
	}
	return out
}

// prevVisibleTo says whether v may see the state event e replaced, which
// decides whether e carries unsigned.prev_content.
func prevVisibleTo(v *visibility, e *store.StoredEvent) bool {
	prev := e.Prev()
	return prev != nil && v.CanSee(prev)
}

// renderTimeline renders events of one room with the viewer's membership
// at each (unsigned.membership), which v, the viewer's history of that
// room, knows.
func renderTimeline(evs []store.StoredEvent, viewer store.Session, v *visibility) []json.RawMessage {
	now := time.Now()
	out := make([]json.RawMessage, len(evs))
	for i := range evs {
		out[i] = evs[i].RenderFor(viewer.UserID, viewer.DeviceID, v.MembershipAt(evs[i].Pos), prevVisibleTo(v, &evs[i]), now)
	}
	return out
}

// GET /_matrix/client/v3/rooms/{roomId}/state
func (s *Server) roomState(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	ss := session(r)
	at, _, err := s.roomReadPoint(r.Context(), roomID, ss.UserID)
	if err != nil {
		return err
	}
	evs, err := s.store.StateAt(r.Context(), roomID, at)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, renderEvents(evs, ss))
	return nil
}

// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}
// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey:.*}
func (s *Server) getStateEvent(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	typ, err := eventTypeVar(r)
	if err != nil {
		return err
	}
	key := pathVar(r, "stateKey")
	ss := session(r)
	at, _, err := s.roomReadPoint(r.Context(), roomID, ss.UserID)
	if err != nil {
		return err
	}
	e, err := s.store.StateEvent(r.Context(), roomID, at, typ, key)
	if errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("no %s state with key %q in this room", typ, key)
	}
	if err != nil {
		return err
	}
	ev := &e
	rendered := renderEvent(ev, ss, time.Now())
	if r.URL.Query().Get("format") == "event" {
		matrix.WriteJSON(w, http.StatusOK, rendered)
		return nil
	}
	var parsed struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(ev.Client, &parsed)
	matrix.WriteJSON(w, http.StatusOK, parsed.Content)
	return nil
}

// GET /_matrix/client/v3/rooms/{roomId}/members
func (s *Server) members(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	ss := session(r)
	at, _, err := s.roomReadPoint(r.Context(), roomID, ss.UserID)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if tok := q.Get("at"); tok != "" {
		p, err := s.membersPoint(r.Context(), roomID, tok)
		if err != nil {
			return err
		}
		if at == 0 || p < at {
			at = p
		}
	}
	valid := map[string]bool{"join": true, "invite": true, "leave": true, "ban": true, "knock": true}
	var include, exclude []string
	for _, m := range q["membership"] {
		if !valid[m] {
			return matrix.InvalidParam("invalid membership %q", m)
		}
		include = append(include, m)
	}
	for _, m := range q["not_membership"] {
		if !valid[m] {
			return matrix.InvalidParam("invalid not_membership %q", m)
		}
		exclude = append(exclude, m)
	}
	evs, err := s.store.Members(r.Context(), roomID, at, include, exclude)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"chunk": renderEvents(evs, ss)})
	return nil
}

// membersPoint turns /members' at token into the position whose state it
// answers. A point inside the room's history names the state just before
// it (after the event at p-1), as a prev_batch is the start of its
// timeline. A point at or before the room's first event names a moment the
// room did not exist yet (the prev_batch of a timeline that starts with
// m.room.create); rather than an empty list, that answers the membership
// the room was created with: the state after the creation record, since
// createRoom appends its initial events as one record.
func (s *Server) membersPoint(ctx context.Context, roomID, tok string) (int64, error) {
	p, err := eventlog.ParseRoomPoint(tok)
	if err != nil {
		return 0, matrix.InvalidParam("invalid at token")
	}
	// A next_batch can be ahead of the projection (sync answers from the
	// log), and one beyond the log's head was never issued: as /messages.
	if err := s.awaitRoomPoint(ctx, roomID, p); err != nil {
		return 0, err
	}
	created, err := s.store.CreatePos(ctx, roomID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return 0, err
	case p <= created:
		first := created - created%eventlog.MaxEventsPerRecord
		return first + eventlog.MaxEventsPerRecord - 1, nil
	}
	return max(p-1, 1), nil
}

// GET /_matrix/client/v3/rooms/{roomId}/joined_members
func (s *Server) joinedMembers(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	ss := session(r)
	// "The current user must be in the room": unlike /members, a former
	// member gets no list as of when they left.
	if err := s.requireJoinedOrWorldReadable(r.Context(), roomID, ss.UserID); err != nil {
		return err
	}
	evs, err := s.store.Members(r.Context(), roomID, 0, []string{"join"}, nil)
	if err != nil {
		return err
	}
	joined := make(map[string]any, len(evs))
	for _, e := range evs {
		var c struct {
			Content struct {
				Displayname *string `json:"displayname"`
				AvatarURL   *string `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(e.Client, &c)
		// Both keys are always there, null when the member event has no
		// such field, as clients (and other servers) read them as the
		// member's profile in this room without checking for presence.
		joined[*e.StateKey] = map[string]any{"display_name": c.Content.Displayname, "avatar_url": c.Content.AvatarURL}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"joined": joined})
	return nil
}

// GET /_matrix/client/v3/joined_rooms
func (s *Server) joinedRooms(w http.ResponseWriter, r *http.Request) error {
	ids, err := s.store.JoinedRooms(r.Context(), session(r).UserID)
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"joined_rooms": ids})
	return nil
}

// maxPageLimit bounds /messages and /context pages.
const maxPageLimit = 1000

// maxScanPerPage bounds the events one page request reads.
const maxScanPerPage = 5000

// mayReadHistory refuses a user who was never joined to the room (an
// invitee included), unless its history is world_readable: "in all cases
// except world_readable, a user needs to join a room to view events in
// that room".
func mayReadHistory(v *visibility, roomID string) error {
	if ever, _ := v.LastJoinEnd(); !ever && !(len(v.Hist.Visibility) > 0 && v.Hist.Visibility[len(v.Hist.Visibility)-1].Visibility == "world_readable") {
		return matrix.Forbidden("you are not a member of room %s", roomID)
	}
	return nil
}

// parseDir reads a pagination direction: b (the default) or f.
func parseDir(q string) (backwards bool, err error) {
	switch q {
	case "b", "":
		return true, nil
	case "f":
		return false, nil
	}
	return false, matrix.InvalidParam("dir must be b or f")
}

func parseLimit(q string, def int) (int, error) {
	if q == "" {
		return def, nil
	}
	n, err := strconv.Atoi(q)
	if err != nil || n < 0 {
		return 0, matrix.InvalidParam("invalid limit")
	}
	return min(n, maxPageLimit), nil
}

func parseFilterParam(q string) (*matrix.EventFilter, error) {
	if q == "" {
		return &matrix.EventFilter{}, nil
	}
	if q[0] != '{' {
		return nil, matrix.InvalidParam("filter must be a JSON object")
	}
	f, err := matrix.ParseEventFilter([]byte(q))
	if err != nil {
		return nil, matrix.InvalidParam("invalid filter: %v", err)
	}
	return f, nil
}

// page reads up to limit events visible to v and admitted by f, starting
// at point from in the given direction, scanning in chunks. It returns the
// events and the point after the last event scanned, or ok=false when the
// room's history in that direction is exhausted.
func (s *Server) page(r *http.Request, roomID string, v *visibility, f *matrix.EventFilter, from int64, backwards bool, to int64, limit int) (out []store.StoredEvent, next int64, more bool, err error) {
	return pageOf(v, f, from, backwards, limit, func(next int64, want int) ([]store.StoredEvent, error) {
		return s.store.RoomEvents(r.Context(), roomID, next, backwards, to, want)
	})
}

// pageOf is page over any ordered source of a room's events: fetch reads
// up to want events from point next on.
func pageOf(v *visibility, f *matrix.EventFilter, from int64, backwards bool, limit int, fetch func(next int64, want int) ([]store.StoredEvent, error)) (out []store.StoredEvent, next int64, more bool, err error) {
	next = from
	// A filter that matches little, or a history the user may not see,
	// must not make one request scan the whole room: stop after a bounded
	// scan and hand back a token where it stopped.
	scanned := 0
	for len(out) < limit && scanned < maxScanPerPage {
		want := min(max(2*(limit-len(out)), 20), maxPageLimit)
		evs, err := fetch(next, want)
		if err != nil {
			return nil, 0, false, err
		}
		scanned += len(evs)
		for i := range evs {
			e := &evs[i]
			if backwards {
				next = e.Pos
			} else {
				next = e.Pos + 1
			}
			if v.CanSee(e) && f.Allows(e.Type, e.Sender, e.RoomID, func() json.RawMessage { return contentOf(e.Client) }) {
				out = append(out, *e)
				if len(out) == limit {
					return out, next, true, nil
				}
			}
		}
		if len(evs) < want {
			return out, next, false, nil
		}
	}
	return out, next, true, nil
}

func contentOf(client []byte) json.RawMessage {
	var c struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(client, &c)
	return c.Content
}

// GET /_matrix/client/v3/rooms/{roomId}/messages
func (s *Server) messages(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	backwards, err := parseDir(q.Get("dir"))
	if err != nil {
		return err
	}
	limit, err := parseLimit(q.Get("limit"), 10)
	if err != nil {
		return err
	}
	f, err := parseFilterParam(q.Get("filter"))
	if err != nil {
		return err
	}
	if f.Limit != nil && *f.Limit < limit {
		limit = *f.Limit
	}
	ss := session(r)
	v, err := s.roomVisibility(r.Context(), roomID, ss.UserID)
	if err != nil {
		return err
	}
	if err := mayReadHistory(v, roomID); err != nil {
		return err
	}
	var from int64
	if tok := q.Get("from"); tok != "" {
		if from, err = eventlog.ParseRoomPoint(tok); err != nil {
			return matrix.InvalidParam("invalid from token")
		}
		if err := s.awaitRoomPoint(r.Context(), roomID, from); err != nil {
			return err
		}
	} else if backwards {
		head, err := s.store.RoomHeadOf(r.Context(), roomID)
		if err != nil {
			return errNotInRoom(err, roomID)
		}
		from = head.LastPos + 1
	}
	var to int64
	if tok := q.Get("to"); tok != "" {
		if to, err = eventlog.ParseRoomPoint(tok); err != nil {
			return matrix.InvalidParam("invalid to token")
		}
	}
	evs, next, more, err := s.page(r, roomID, v, f, from, backwards, to, limit)
	if err != nil {
		return err
	}
	resp := map[string]any{"start": eventlog.FormatRoomPoint(from), "chunk": renderTimeline(evs, ss, v)}
	// end is omitted only on a page that has nothing and nothing beyond
	// it. A page that holds the room's first (or, forwards, newest)
	// events still gets one, from which the next request answers an
	// empty chunk without end: the spec omits end once no further events
	// are available, but clients and Synapse expect a token with every
	// page that has events, and paging loops end either way.
	if more || len(evs) > 0 {
		resp["end"] = eventlog.FormatRoomPoint(next)
	}
	if f.LazyLoadMembers && len(evs) > 0 {
		state, err := s.senderMembers(r, roomID, v, evs)
		if err != nil {
			return err
		}
		resp["state"] = renderEvents(state, ss)
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// senderMembers returns the member events of the senders of evs, for
// lazy-loading clients: the current ones, as far as the caller may read
// them (readableState).
func (s *Server) senderMembers(r *http.Request, roomID string, v *visibility, evs []store.StoredEvent) ([]store.StoredEvent, error) {
	senders := map[string]bool{}
	for _, e := range evs {
		senders[e.Sender] = true
	}
	all, err := s.readableState(r, roomID, 0, v)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, m := range all {
		if m.Type == "m.room.member" && m.StateKey != nil && senders[*m.StateKey] {
			out = append(out, m)
		}
	}
	return out, nil
}

// visibleEvent loads an event the caller may see, or 404.
func (s *Server) visibleEvent(r *http.Request, roomID, eventID string) (*store.StoredEvent, *visibility, error) {
	v, err := s.roomVisibility(r.Context(), roomID, session(r).UserID)
	if err != nil {
		return nil, nil, err
	}
	e, err := s.eventVisibleTo(r, roomID, eventID, v)
	return e, v, err
}

// eventVisibleTo loads an event of the room that v may see, or 404. An
// event of another room is "not found", as if it did not exist.
func (s *Server) eventVisibleTo(r *http.Request, roomID, eventID string, v *visibility) (*store.StoredEvent, error) {
	e, err := s.eventByID(r.Context(), roomID, eventID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (e.RoomID != roomID || !v.CanSee(&e))) {
		return nil, matrix.NotFound("event not found")
	}
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	if _, err := matrix.ParseEventID(pathVar(r, "eventId")); err != nil {
		return matrix.InvalidParam("invalid event ID: %v", err)
	}
	e, v, err := s.visibleEvent(r, roomID, pathVar(r, "eventId"))
	if err != nil {
		return err
	}
	ss := session(r)
	matrix.WriteJSON(w, http.StatusOK, e.RenderFor(ss.UserID, ss.DeviceID, v.MembershipAt(e.Pos), prevVisibleTo(v, e), time.Now()))
	return nil
}

// GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
func (s *Server) eventContext(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	if _, err := matrix.ParseEventID(pathVar(r, "eventId")); err != nil {
		return matrix.InvalidParam("invalid event ID: %v", err)
	}
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), 10)
	if err != nil {
		return err
	}
	f, err := parseFilterParam(q.Get("filter"))
	if err != nil {
		return err
	}
	e, v, err := s.visibleEvent(r, roomID, pathVar(r, "eventId"))
	if err != nil {
		return err
	}
	ss := session(r)
	before, bnext, _, err := s.page(r, roomID, v, f, e.Pos, true, 0, limit/2)
	if err != nil {
		return err
	}
	after, anext, _, err := s.page(r, roomID, v, f, e.Pos+1, false, 0, limit-limit/2)
	if err != nil {
		return err
	}
	state, err := s.readableState(r, roomID, e.Pos, v)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{
		"event":         renderEvent(e, ss, time.Now()),
		"events_before": renderEvents(before, ss),
		"events_after":  renderEvents(after, ss),
		"start":         eventlog.FormatRoomPoint(bnext),
		"end":           eventlog.FormatRoomPoint(anext),
		"state":         renderEvents(state, ss),
	})
	return nil
}

// readableState is the room state at pos (0: now) as far as the caller
// may read it. A caller who may read the room's state (joined, a former
// member, a world_readable room; see roomReadPoint) gets it whole, but
// never past where they left. Anyone else (an invitee who never joined)
// gets only the state events that history visibility lets them see one by
// one, such as their own invite: never the member list or power levels
// that /state and /members refuse them. /context and lazy-loading
// /messages return state through this, so neither shows more than /state.
func (s *Server) readableState(r *http.Request, roomID string, pos int64, v *visibility) ([]store.StoredEvent, error) {
	at, _, err := s.roomReadPoint(r.Context(), roomID, v.UserID)
	if err == nil {
		if at == 0 || (pos != 0 && pos < at) {
			at = pos
		}
		return s.store.StateAt(r.Context(), roomID, at)
	}
	if me, ok := matrix.AsError(err); !ok || me.Status != http.StatusForbidden {
		return nil, err
	}
	all, err := s.store.StateAt(r.Context(), roomID, pos)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for i := range all {
		if v.CanSee(&all[i]) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

// eventByID loads an event of roomID by ID, waiting for a lagging rooms
// projection before it answers "not found" (lookupCaughtUp). Every lookup
// by event ID names the room it expects (invariant 12): an event of
// another room is not found.
func (s *Server) eventByID(ctx context.Context, roomID, eventID string) (store.StoredEvent, error) {
	return lookupCaughtUp(ctx, s, eventlog.RoomLaneOf(roomID), func(ctx context.Context) (store.StoredEvent, error) {
		return s.store.Event(ctx, roomID, eventID)
	})
}

// awaitRoomPoint waits (bounded) until the rooms projection holds every
// event of roomID before point: a token from a sync response can be ahead
// of it, since sync workers answer new messages straight from the log. A
// point beyond the log's head was never issued. Only the room's lane
// matters: the read is of that room alone.
func (s *Server) awaitRoomPoint(ctx context.Context, roomID string, point int64) error {
	if point <= 0 {
		return nil
	}
	need := uint64((point - 1) / eventlog.MaxEventsPerRecord) // the record of the last event before point
	lane := eventlog.RoomLaneOf(roomID)
	if need <= s.watermark.Applied(lane) || need <= s.watermark.Applied(eventlog.StreamRooms) {
		return nil
	}
	head, err := s.log.Head(ctx, eventlog.StreamRooms)
	if err != nil {
		return matrix.Unavailable("the event log is unavailable; retry")
	}
	if need > head {
		return matrix.InvalidParam("token is ahead of the event log")
	}
	return s.awaitPosition(ctx, lane, need)
}
