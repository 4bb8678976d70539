package api

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// ownUser checks that the {userId} of the path is the caller.
func ownUser(r *http.Request) (string, error) {
	uid := pathVar(r, "userId")
	if _, err := matrix.ParseUserID(uid); err != nil {
		return "", matrix.InvalidParam("invalid user ID: %v", err)
	}
	if uid != session(r).UserID {
		return "", matrix.Forbidden("cannot access another user's data")
	}
	return uid, nil
}

// newFilterID returns a random decimal filter ID (clients treat it as an
// opaque string; digits keep it safe in query strings).
func newFilterID() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return n.String()
}

// POST /_matrix/client/v3/user/{userId}/filter
func (s *Server) createFilter(w http.ResponseWriter, r *http.Request) error {
	uid, err := ownUser(r)
	if err != nil {
		return err
	}
	var filter map[string]json.RawMessage
	if err := matrix.DecodeJSON(r, &filter, false); err != nil {
		return err
	}
	raw, err := json.Marshal(filter)
	if err != nil {
		return matrix.BadJSON("invalid filter")
	}
	parsed, err := matrix.ParseFilter(raw)
	if err != nil {
		return err
	}
	if err := parsed.CheckIDs(); err != nil {
		return err
	}
	id := newFilterID()
	rec := &eventlog.FilterCreated{UserID: uid, FilterID: id, Filter: raw}
	if err := s.appendAccount(r.Context(), uid, rec, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"filter_id": id})
	return nil
}

// GET /_matrix/client/v3/user/{userId}/filter/{filterId}
func (s *Server) getFilter(w http.ResponseWriter, r *http.Request) error {
	uid, err := ownUser(r)
	if err != nil {
		return err
	}
	f, err := s.store.Filter(r.Context(), uid, pathVar(r, "filterId"))
	if errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("no such filter")
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(f)
	return nil
}

// accountDataTarget validates the path of an account data request.
func accountDataTarget(r *http.Request) (uid, roomID, typ string, err error) {
	if uid, err = ownUser(r); err != nil {
		return
	}
	if roomID = pathVar(r, "roomId"); roomID != "" {
		if _, perr := matrix.ParseRoomID(roomID); perr != nil {
			err = matrix.InvalidParam("invalid room ID: %v", perr)
			return
		}
	}
	typ = pathVar(r, "type")
	if typ == "" || len(typ) > matrix.MaxEventTypeBytes {
		err = matrix.InvalidParam("invalid account data type")
	}
	return
}

// PUT /_matrix/client/v3/user/{userId}/account_data/{type}
// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
func (s *Server) putAccountData(w http.ResponseWriter, r *http.Request) error {
	uid, roomID, typ, err := accountDataTarget(r)
	if err != nil {
		return err
	}
	if typ == "m.fully_read" || typ == "m.push_rules" {
		return matrix.Errorf("M_BAD_JSON", http.StatusBadRequest, "%s cannot be set through this endpoint", typ)
	}
	var content map[string]json.RawMessage
	if err := matrix.DecodeJSON(r, &content, false); err != nil {
		return err
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return matrix.BadJSON("invalid content")
	}
	rec := &eventlog.AccountDataSet{UserID: uid, RoomID: roomID, Type: typ, Content: raw}
	if err := s.appendAccount(r.Context(), uid, rec, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /_matrix/client/v3/user/{userId}/account_data/{type}
// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
func (s *Server) getAccountData(w http.ResponseWriter, r *http.Request) error {
	uid, roomID, typ, err := accountDataTarget(r)
	if err != nil {
		return err
	}
	c, err := s.store.AccountData(r.Context(), uid, roomID, typ)
	if errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("no account data of type %s", typ)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(c)
	return nil
}

// GET /_matrix/client/v3/account/3pid
//
// threePIDs lists the caller's third-party identifiers: Strand binds
// none (no e-mail or phone verification), so the list is empty.
func (s *Server) threePIDs(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"threepids": []any{}})
	return nil
}
