package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Room tags (favourites, low priority, user tags) are the m.tag room
// account data: {"tags": {"<tag>": {"order": 0.5}}}. Reads and writes go
// through account data, so tags reach clients in sync like any other.

func (s *Server) loadTags(r *http.Request, uid, roomID string) (map[string]json.RawMessage, error) {
	raw, err := s.store.AccountData(r.Context(), uid, roomID, "m.tag")
	if errors.Is(err, store.ErrNotFound) {
		return map[string]json.RawMessage{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.Tags == nil {
		return map[string]json.RawMessage{}, nil
	}
	return c.Tags, nil
}

func (s *Server) saveTags(r *http.Request, uid, roomID string, tags map[string]json.RawMessage) error {
	b, err := json.Marshal(map[string]any{"tags": tags})
	if err != nil {
		return err
	}
	return s.appendAccount(r.Context(), uid, &eventlog.AccountDataSet{UserID: uid, RoomID: roomID, Type: "m.tag", Content: b}, nil)
}

func tagTarget(r *http.Request) (uid, roomID string, err error) {
	if uid, err = ownUser(r); err != nil {
		return
	}
	id, perr := matrix.ParseRoomID(pathVar(r, "roomId"))
	if perr != nil {
		err = matrix.InvalidParam("invalid room ID: %v", perr)
		return
	}
	return uid, string(id), nil
}

// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags
func (s *Server) getTags(w http.ResponseWriter, r *http.Request) error {
	uid, roomID, err := tagTarget(r)
	if err != nil {
		return err
	}
	tags, err := s.loadTags(r, uid, roomID)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"tags": tags})
	return nil
}

// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
func (s *Server) putTag(w http.ResponseWriter, r *http.Request) error {
	uid, roomID, err := tagTarget(r)
	if err != nil {
		return err
	}
	tag := pathVar(r, "tag")
	if err := matrix.CheckLength("the tag", tag, matrix.MaxTagBytes); err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := matrix.DecodeJSON(r, &body, false); err != nil {
		return err
	}
	if raw, ok := body["order"]; ok {
		var order float64
		if err := json.Unmarshal(raw, &order); err != nil || order < 0 || order > 1 {
			return matrix.BadJSON("order must be a number between 0 and 1")
		}
	}
	tags, err := s.loadTags(r, uid, roomID)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(body)
	tags[tag] = b
	if err := s.saveTags(r, uid, roomID, tags); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request) error {
	uid, roomID, err := tagTarget(r)
	if err != nil {
		return err
	}
	tags, err := s.loadTags(r, uid, roomID)
	if err != nil {
		return err
	}
	if _, ok := tags[pathVar(r, "tag")]; ok {
		delete(tags, pathVar(r, "tag"))
		if err := s.saveTags(r, uid, roomID, tags); err != nil {
			return err
		}
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /_matrix/client/v3/voip/turnServer
//
// turnServer answers that this server offers no TURN relay: clients then
// place calls peer to peer (the spec's response for an unconfigured relay
// is an empty object).
func (s *Server) turnServer(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}
