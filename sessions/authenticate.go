package sessions

import (
	"errors"
	"net/http"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Authenticate resolves the request's access token to its session, and
// what it cannot resolve to the Matrix error the client gets: the one
// place where the api and the sync workers decide between "log in again"
// (M_UNKNOWN_TOKEN), "refresh" (soft logout) and "retry" (503).
func (c *Cache) Authenticate(r *http.Request) (store.Session, error) {
	tok, err := matrix.AccessToken(r)
	if err != nil {
		return store.Session{}, err
	}
	ss, err := c.Resolve(r.Context(), store.TokenHash(tok))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ss, matrix.RevokedToken()
	case errors.Is(err, ErrTokenExpired):
		return ss, matrix.SoftLoggedOut("the access token has expired; refresh it")
	case errors.Is(err, ErrCatchingUp):
		return ss, matrix.Unavailable("the server is catching up with its log; retry")
	}
	return ss, err
}
