package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Server-side key backup (/room_keys): clients back up their encrypted
// room keys under a backup version; the server stores what it cannot
// read. Versions and keys are records on the user's ACCOUNTS subject.

func backupVersionBody(v store.KeyBackupVersion) map[string]any {
	return map[string]any{"algorithm": v.Algorithm, "auth_data": v.AuthData, "count": v.Count,
		"etag": strconv.FormatInt(v.Etag, 10), "version": strconv.FormatInt(v.Version, 10)}
}

// backupVersionParam parses a version from the path or query.
func backupVersionParam(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, matrix.NotFound("no backup version %q", s)
	}
	return v, nil
}

type backupVersionReq struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

func (q *backupVersionReq) check() (json.RawMessage, error) {
	if err := matrix.CheckLength("algorithm", q.Algorithm, matrix.MaxBackupIDBytes); err != nil {
		return nil, err
	}
	return canonicalObject(q.AuthData, "auth_data")
}

// POST /_matrix/client/v3/room_keys/version
func (s *Server) createBackupVersion(w http.ResponseWriter, r *http.Request) error {
	var req backupVersionReq
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	auth, err := req.check()
	if err != nil {
		return err
	}
	user := session(r).UserID
	// The next number is chosen on the projection as of the user's
	// subject sequence and appended expecting it: two creations cannot
	// take the same number.
	for attempt := 0; attempt < maxClaimAttempts; attempt++ {
		last, err := s.log.LastSeq(r.Context(), eventlog.StreamAccounts, eventlog.UserSubject(user))
		if err != nil {
			return logUnavailable(err)
		}
		if err := s.awaitPosition(r.Context(), eventlog.StreamAccounts, last); err != nil {
			return err
		}
		n, err := s.store.MaxKeyBackupVersion(r.Context(), user)
		if err != nil {
			return err
		}
		rec := &eventlog.KeyBackupVersionSet{UserID: user, Version: n + 1, Create: true, Algorithm: req.Algorithm, AuthData: auth}
		err = s.appendAccount(r.Context(), user, rec, &last)
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		matrix.WriteJSON(w, http.StatusOK, map[string]string{"version": strconv.FormatInt(n+1, 10)})
		return nil
	}
	return matrix.Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests, "your account is too busy; retry")
}

// backupVersion loads one of the user's live backup versions (0: the
// newest); a missing one is M_NOT_FOUND.
func (s *Server) backupVersion(r *http.Request, user string, version int64) (store.KeyBackupVersion, error) {
	v, err := s.store.KeyBackupVersionOf(r.Context(), user, version)
	if errors.Is(err, store.ErrNotFound) {
		if version == 0 {
			return v, matrix.NotFound("no current backup version")
		}
		return v, matrix.NotFound("no backup version %d", version)
	}
	return v, err
}

// GET /_matrix/client/v3/room_keys/version
// GET /_matrix/client/v3/room_keys/version/{version}
func (s *Server) getBackupVersion(w http.ResponseWriter, r *http.Request) error {
	var version int64
	if p := pathVar(r, "version"); p != "" {
		var err error
		if version, err = backupVersionParam(p); err != nil {
			return err
		}
	}
	v, err := s.backupVersion(r, session(r).UserID, version)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, backupVersionBody(v))
	return nil
}

// PUT /_matrix/client/v3/room_keys/version/{version}
func (s *Server) updateBackupVersion(w http.ResponseWriter, r *http.Request) error {
	version, err := backupVersionParam(pathVar(r, "version"))
	if err != nil {
		return err
	}
	var req backupVersionReq
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	auth, err := req.check()
	if err != nil {
		return err
	}
	if req.Version != nil && *req.Version != pathVar(r, "version") {
		return matrix.InvalidParam("the version in the body differs from the path's")
	}
	user := session(r).UserID
	cur, err := s.backupVersion(r, user, version)
	if err != nil {
		return err
	}
	if cur.Algorithm != req.Algorithm {
		return matrix.InvalidParam("the algorithm of a backup version cannot change")
	}
	if err := s.appendAccount(r.Context(), user, &eventlog.KeyBackupVersionSet{UserID: user, Version: version,
		Algorithm: req.Algorithm, AuthData: auth}, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// DELETE /_matrix/client/v3/room_keys/version/{version}
func (s *Server) deleteBackupVersion(w http.ResponseWriter, r *http.Request) error {
	version, err := backupVersionParam(pathVar(r, "version"))
	if err != nil {
		return err
	}
	user := session(r).UserID
	if _, err := s.backupVersion(r, user, version); err != nil {
		return err
	}
	if err := s.appendAccount(r.Context(), user, &eventlog.KeyBackupVersionDeleted{UserID: user, Version: version}, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// keyBackupData validates a KeyBackupData object and returns it canonical.
func keyBackupData(raw json.RawMessage) (json.RawMessage, error) {
	c, err := canonicalObject(raw, "key data")
	if err != nil {
		return nil, err
	}
	var k struct {
		FirstMessageIndex *int64          `json:"first_message_index"`
		ForwardedCount    *int64          `json:"forwarded_count"`
		IsVerified        *bool           `json:"is_verified"`
		SessionData       json.RawMessage `json:"session_data"`
	}
	if err := json.Unmarshal(c, &k); err != nil {
		return nil, matrix.BadJSON("key data: %v", err)
	}
	if k.FirstMessageIndex == nil || *k.FirstMessageIndex < 0 || k.ForwardedCount == nil || *k.ForwardedCount < 0 ||
		k.IsVerified == nil || len(bytes.TrimSpace(k.SessionData)) == 0 || bytes.TrimSpace(k.SessionData)[0] != '{' {
		return nil, matrix.BadJSON("key data needs first_message_index, forwarded_count, is_verified and a session_data object")
	}
	return c, nil
}

// keysVersion resolves the version query parameter of a keys request.
func (s *Server) keysVersion(r *http.Request) (int64, error) {
	q := r.URL.Query().Get("version")
	if q == "" {
		return 0, matrix.InvalidParam("the version query parameter is required")
	}
	return backupVersionParam(q)
}

// PUT /_matrix/client/v3/room_keys/keys
// PUT /_matrix/client/v3/room_keys/keys/{roomId}
// PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
func (s *Server) putRoomKeys(w http.ResponseWriter, r *http.Request) error {
	version, err := s.keysVersion(r)
	if err != nil {
		return err
	}
	roomID, sessionID := pathVar(r, "roomId"), pathVar(r, "sessionId")
	keys := map[string]map[string]json.RawMessage{}
	switch {
	case sessionID != "":
		var data json.RawMessage
		if err := matrix.DecodeJSON(r, &data, false); err != nil {
			return err
		}
		keys[roomID] = map[string]json.RawMessage{sessionID: data}
	case roomID != "":
		var body struct {
			Sessions map[string]json.RawMessage `json:"sessions"`
		}
		if err := matrix.DecodeJSON(r, &body, false); err != nil {
			return err
		}
		keys[roomID] = body.Sessions
	default:
		var body struct {
			Rooms map[string]struct {
				Sessions map[string]json.RawMessage `json:"sessions"`
			} `json:"rooms"`
		}
		if err := matrix.DecodeJSON(r, &body, false); err != nil {
			return err
		}
		for room, rk := range body.Rooms {
			keys[room] = rk.Sessions
		}
	}
	for room, sessions := range keys {
		if _, err := matrix.ParseRoomID(room); err != nil {
			return matrix.InvalidParam("invalid room ID %q", room)
		}
		for sid, data := range sessions {
			if err := matrix.CheckLength("a session ID", sid, matrix.MaxBackupIDBytes); err != nil {
				return err
			}
			c, err := keyBackupData(data)
			if err != nil {
				return err
			}
			sessions[sid] = c
		}
	}
	user := session(r).UserID
	cur, err := s.store.KeyBackupVersionOf(r.Context(), user, 0)
	if errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("no backup version %d", version)
	}
	if err != nil {
		return err
	}
	if cur.Version != version {
		e := matrix.Errorf("M_WRONG_ROOM_KEYS_VERSION", http.StatusForbidden, "backup version %d is not the current one", version)
		e.Extra = map[string]any{"current_version": strconv.FormatInt(cur.Version, 10)}
		return e
	}
	if err := s.appendAccount(r.Context(), user, &eventlog.RoomKeysPut{UserID: user, Version: version, Keys: keys}, nil); err != nil {
		return err
	}
	return s.answerKeysChange(w, r, user, version)
}

// liveKeysVersion is the caller and the version a keys request names,
// which must exist.
func (s *Server) liveKeysVersion(r *http.Request) (user string, version int64, err error) {
	if version, err = s.keysVersion(r); err != nil {
		return "", 0, err
	}
	user = session(r).UserID
	if _, err := s.backupVersion(r, user, version); err != nil {
		return "", 0, err
	}
	return user, version, nil
}

// answerKeysChange answers a keys write with the version's etag and count.
func (s *Server) answerKeysChange(w http.ResponseWriter, r *http.Request, user string, version int64) error {
	v, err := s.backupVersion(r, user, version)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"etag": strconv.FormatInt(v.Etag, 10), "count": v.Count})
	return nil
}

// GET /_matrix/client/v3/room_keys/keys
// GET /_matrix/client/v3/room_keys/keys/{roomId}
// GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
func (s *Server) getRoomKeys(w http.ResponseWriter, r *http.Request) error {
	user, version, err := s.liveKeysVersion(r)
	if err != nil {
		return err
	}
	roomID, sessionID := pathVar(r, "roomId"), pathVar(r, "sessionId")
	keys, err := s.store.RoomKeys(r.Context(), user, version, roomID, sessionID)
	if err != nil {
		return err
	}
	switch {
	case sessionID != "":
		if len(keys) == 0 {
			return matrix.NotFound("no backed-up key for session %s", sessionID)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(keys[0].Data)
	case roomID != "":
		sessions := map[string]json.RawMessage{}
		for _, k := range keys {
			sessions[k.SessionID] = k.Data
		}
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		rooms := map[string]map[string]map[string]json.RawMessage{}
		for _, k := range keys {
			if rooms[k.RoomID] == nil {
				rooms[k.RoomID] = map[string]map[string]json.RawMessage{"sessions": {}}
			}
			rooms[k.RoomID]["sessions"][k.SessionID] = k.Data
		}
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
	return nil
}

// DELETE /_matrix/client/v3/room_keys/keys
// DELETE /_matrix/client/v3/room_keys/keys/{roomId}
// DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
func (s *Server) deleteRoomKeys(w http.ResponseWriter, r *http.Request) error {
	user, version, err := s.liveKeysVersion(r)
	if err != nil {
		return err
	}
	// What a deletion names goes on the log for good: only IDs that
	// could have been stored.
	if room := pathVar(r, "roomId"); room != "" {
		if _, err := matrix.ParseRoomID(room); err != nil {
			return matrix.InvalidParam("invalid room ID: %v", err)
		}
	}
	if err := matrix.CheckMaxLength("the session ID", pathVar(r, "sessionId"), matrix.MaxBackupIDBytes); err != nil {
		return err
	}
	rec := &eventlog.RoomKeysDeleted{UserID: user, Version: version, RoomID: pathVar(r, "roomId"), SessionID: pathVar(r, "sessionId")}
	if err := s.appendAccount(r.Context(), user, rec, nil); err != nil {
		return err
	}
	return s.answerKeysChange(w, r, user, version)
}
