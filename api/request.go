package api

import (
	"net/http"
	"net/url"

	"github.com/gorilla/mux"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Request helpers: what handlers read from a request besides its body
// (matrix.DecodeJSON) and its query.

type ctxKey int

const sessionKey ctxKey = iota

// session returns the authenticated caller of the request (see
// authenticated).
func session(r *http.Request) store.Session {
	ss, _ := r.Context().Value(sessionKey).(store.Session)
	return ss
}

// pathVar returns a path variable decoded exactly once. The router
// matches the encoded path (see New), so an ID holding "/", "%", "?" or
// "#" arrives here still escaped and never splits or shifts a route;
// decoding here, and nowhere else, means "%2F" is "/" and "%252F" stays
// "%2F".
func pathVar(r *http.Request, name string) string {
	v := mux.Vars(r)[name]
	d, err := url.PathUnescape(v)
	if err != nil {
		// Unreachable: net/http refuses a request line with a bad
		// escape, and the router matches a correctly escaped path.
		return v
	}
	return d
}

// pathVarOK is pathVar that also reports whether the route has the
// variable.
func pathVarOK(r *http.Request, name string) (string, bool) {
	if _, ok := mux.Vars(r)[name]; !ok {
		return "", false
	}
	return pathVar(r, name), true
}

// roomIDVar is the path's {roomId}, which must be a valid room ID.
func roomIDVar(r *http.Request) (string, error) {
	id, err := matrix.ParseRoomID(pathVar(r, "roomId"))
	if err != nil {
		return "", matrix.InvalidParam("invalid room ID: %v", err)
	}
	return string(id), nil
}

// eventTypeVar is the path's {eventType}: not empty, and at most the
// spec's 255 bytes.
func eventTypeVar(r *http.Request) (string, error) {
	t := pathVar(r, "eventType")
	if t == "" || len(t) > maxTypeBytes {
		return "", matrix.InvalidParam("invalid event type")
	}
	return t, nil
}

// txnIDVar is the path's {txnId}, "" when the route has none. It is keyed
// in the events_txn index and carried in the append's Nats-Msg-Id, so it
// is bounded like every client-chosen key.
func txnIDVar(r *http.Request) (string, error) {
	id := pathVar(r, "txnId")
	return id, matrix.CheckMaxLength("the transaction ID", id, matrix.MaxTxnIDBytes)
}
