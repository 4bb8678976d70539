package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// maxTypingTimeout bounds how long one typing notice lasts.
const maxTypingTimeout = 2 * time.Minute

// joinedView returns the caller's view of a room they are joined to now,
// or 403.
func (s *Server) joinedView(r *http.Request, roomID string) (*visibility, error) {
	v, err := s.roomVisibility(r.Context(), roomID, session(r).UserID)
	if err != nil {
		return nil, err
	}
	if v.Current() != "join" {
		return nil, matrix.Forbidden("you are not joined to room %s", roomID)
	}
	return v, nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
func (s *Server) typing(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	ss := session(r)
	if pathVar(r, "userId") != ss.UserID {
		return matrix.Forbidden("you may only set your own typing state")
	}
	var req struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.Typing == nil {
		return matrix.MissingParam("typing is required")
	}
	if _, err := s.joinedView(r, roomID); err != nil {
		return err
	}
	rec := &eventlog.TypingSet{RoomID: roomID, UserID: ss.UserID, Typing: *req.Typing}
	if rec.Typing {
		d := 30 * time.Second
		if req.Timeout != nil && *req.Timeout > 0 {
			// Capped in milliseconds first: a huge timeout would overflow
			// the conversion to a Duration and end up in the past.
			d = time.Duration(min(*req.Timeout, maxTypingTimeout.Milliseconds())) * time.Millisecond
		}
		rec.ExpiresTS = time.Now().Add(d).UnixMilli()
	}
	if _, err := s.log.Append(r.Context(), eventlog.TypingSubject(roomID), rec, eventlog.AppendOptions{Room: roomID}); err != nil {
		return logUnavailable(err)
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// receiptTarget returns the event, after checking that it exists in the
// room and the caller, whose view of the room v is, may see it.
func (s *Server) receiptTarget(r *http.Request, roomID, eventID string, v *visibility) (*store.StoredEvent, error) {
	if _, err := matrix.ParseEventID(eventID); err != nil {
		return nil, matrix.InvalidParam("invalid event ID: %v", err)
	}
	return s.eventVisibleTo(r, roomID, eventID, v)
}

func (s *Server) appendReceipt(r *http.Request, roomID, typ, eventID, threadID string) error {
	uid := session(r).UserID
	rec := &eventlog.ReceiptSet{RoomID: roomID, UserID: uid, Type: typ, EventID: eventID, ThreadID: threadID, TS: time.Now().UnixMilli()}
	seq, err := s.log.Append(r.Context(), eventlog.ReceiptSubject(roomID), rec, eventlog.AppendOptions{Room: roomID})
	if err != nil {
		return logUnavailable(err)
	}
	return s.awaitApplied(r.Context(), eventlog.StreamReceipts, seq)
}

func (s *Server) setFullyRead(r *http.Request, roomID, eventID string) error {
	uid := session(r).UserID
	c, _ := json.Marshal(map[string]string{"event_id": eventID})
	return s.appendAccount(r.Context(), uid, &eventlog.AccountDataSet{UserID: uid, RoomID: roomID, Type: "m.fully_read", Content: c}, nil)
}

// maxThreadHops bounds how many relations a receipt's event is followed
// through to find its thread: the spec treats three levels as sufficient.
const maxThreadHops = 3

// checkThreadReceipt refuses a receipt in the thread rooted at root for an
// event that is not in that thread (400, as the spec lists "the event_id is
// not related to the thread_id"). A thread is named by its root, an event
// of this room the user may see; an event is in it when it is the root or
// its relations lead, within maxThreadHops, to an m.thread relation to the
// root (a reaction to or an edit of a threaded message is in its thread).
func (s *Server) checkThreadReceipt(r *http.Request, roomID string, target *store.StoredEvent, root string, v *visibility) error {
	if _, err := matrix.ParseEventID(root); err != nil {
		return matrix.InvalidParam("thread_id must be main or an event ID: %v", err)
	}
	if _, err := s.eventVisibleTo(r, roomID, root, v); err != nil {
		if me, ok := matrix.AsError(err); ok && me.Code == "M_NOT_FOUND" {
			return matrix.InvalidParam("thread_id %s is not an event of room %s", root, roomID)
		}
		return err
	}
	e := target
	for range maxThreadHops + 1 {
		if e.EventID == root {
			return nil
		}
		parent, relType := clientRelation(e.Client)
		if parent == "" {
			break
		}
		if relType == "m.thread" {
			if parent == root {
				return nil
			}
			break
		}
		next, err := s.eventByID(r.Context(), roomID, parent)
		if errors.Is(err, store.ErrNotFound) || (err == nil && next.RoomID != roomID) {
			break
		}
		if err != nil {
			return err
		}
		e = &next
	}
	return matrix.InvalidParam("event %s is not in thread %s", target.EventID, root)
}

// clientRelation reads m.relates_to from an event's stored client form,
// as matrix.Relation reads it from the event.
func clientRelation(client []byte) (parent, relType string) {
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(client, &ev) != nil {
		return "", ""
	}
	p, rt, ok := matrix.ContentRelation(ev.Content)
	if !ok {
		return "", ""
	}
	return string(p), rt
}

// POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
func (s *Server) receipt(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	typ := pathVar(r, "receiptType")
	eventID := pathVar(r, "eventId")
	var req struct {
		ThreadID *string `json:"thread_id"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	thread := ""
	if req.ThreadID != nil {
		if err := matrix.CheckLength("thread_id", *req.ThreadID, matrix.MaxThreadIDBytes); err != nil {
			return err
		}
		thread = *req.ThreadID
	}
	switch typ {
	case "m.read", "m.read.private":
	case "m.fully_read":
		if thread != "" {
			return matrix.InvalidParam("m.fully_read cannot be threaded")
		}
	default:
		return matrix.InvalidParam("unknown receipt type %q", typ)
	}
	v, err := s.joinedView(r, roomID)
	if err != nil {
		return err
	}
	target, err := s.receiptTarget(r, roomID, eventID, v)
	if err != nil {
		return err
	}
	if thread != "" && thread != "main" {
		if err := s.checkThreadReceipt(r, roomID, target, thread, v); err != nil {
			return err
		}
	}
	if typ == "m.fully_read" {
		err = s.setFullyRead(r, roomID, eventID)
	} else {
		err = s.appendReceipt(r, roomID, typ, eventID, thread)
	}
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/read_markers
func (s *Server) readMarkers(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	var req struct {
		FullyRead   *string `json:"m.fully_read"`
		Read        *string `json:"m.read"`
		ReadPrivate *string `json:"m.read.private"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	v, err := s.joinedView(r, roomID)
	if err != nil {
		return err
	}
	for _, id := range []*string{req.FullyRead, req.Read, req.ReadPrivate} {
		if id != nil {
			if _, err := s.receiptTarget(r, roomID, *id, v); err != nil {
				return err
			}
		}
	}
	if req.Read != nil {
		if err := s.appendReceipt(r, roomID, "m.read", *req.Read, ""); err != nil {
			return err
		}
	}
	if req.ReadPrivate != nil {
		if err := s.appendReceipt(r, roomID, "m.read.private", *req.ReadPrivate, ""); err != nil {
			return err
		}
	}
	if req.FullyRead != nil {
		if err := s.setFullyRead(r, roomID, *req.FullyRead); err != nil {
			return err
		}
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// Presence. The newest PresenceSet on a user's subject is their presence;
// "online" decays with inactivity when read.

// GET /_matrix/client/v3/presence/{userId}/status
func (s *Server) getPresence(w http.ResponseWriter, r *http.Request) error {
	uid, err := matrix.ParseUserID(pathVar(r, "userId"))
	if err != nil {
		return matrix.InvalidParam("invalid user ID: %v", err)
	}
	if _, err := s.store.User(r.Context(), string(uid)); errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("unknown user %s", uid)
	} else if err != nil {
		return err
	}
	// Presence is for users who share a room (and for oneself).
	if caller := session(r).UserID; caller != string(uid) {
		shares, err := s.store.SharesRoom(r.Context(), caller, string(uid))
		if err != nil {
			return err
		}
		if !shares {
			return matrix.Forbidden("you do not share a room with %s", uid)
		}
	}
	m, ok, err := s.log.Last(r.Context(), eventlog.StreamEphemeral, eventlog.PresenceSubject(string(uid)))
	if err != nil {
		return logUnavailable(err)
	}
	var p *eventlog.PresenceSet
	if ok {
		rec, err := m.Decode()
		if err != nil {
			return err
		}
		p = rec.(*eventlog.PresenceSet)
	}
	presence, ago, active := p.Effective(time.Now())
	body := map[string]any{"presence": presence}
	if p != nil {
		body["last_active_ago"] = ago
		body["currently_active"] = active
		if p.StatusMsg != nil {
			body["status_msg"] = *p.StatusMsg
		}
	}
	matrix.WriteJSON(w, http.StatusOK, body)
	return nil
}

// PUT /_matrix/client/v3/presence/{userId}/status
func (s *Server) putPresence(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	if pathVar(r, "userId") != ss.UserID {
		if _, err := matrix.ParseUserID(pathVar(r, "userId")); err != nil {
			return matrix.InvalidParam("invalid user ID: %v", err)
		}
		return matrix.Forbidden("you may only set your own presence")
	}
	var req struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.Presence == nil {
		return matrix.MissingParam("presence is required")
	}
	switch *req.Presence {
	case "online", "offline", "unavailable":
	default:
		return matrix.InvalidParam("presence must be online, offline or unavailable")
	}
	if req.StatusMsg != nil {
		if err := matrix.CheckMaxLength("status_msg", *req.StatusMsg, matrix.MaxStatusMsgBytes); err != nil {
			return err
		}
	}
	rec := &eventlog.PresenceSet{UserID: ss.UserID, Presence: *req.Presence, StatusMsg: req.StatusMsg, LastActiveTS: time.Now().UnixMilli()}
	if _, err := s.log.Append(r.Context(), eventlog.PresenceSubject(ss.UserID), rec, eventlog.AppendOptions{}); err != nil {
		return logUnavailable(err)
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}
