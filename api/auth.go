package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// authenticated requires a valid access token and puts the caller's
// session in the request context.
func (s *Server) authenticated(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		// An application service's as_token is no access token: a map
		// lookup, before the session cache.
		if tok, err := matrix.AccessToken(r); err == nil {
			if reg := s.cfg.Appservices.ByASToken(tok); reg != nil {
				ss, err := s.appserviceSession(r, reg)
				if err != nil {
					return err
				}
				ctx := context.WithValue(r.Context(), appserviceKey, reg)
				r = r.WithContext(context.WithValue(ctx, sessionKey, ss))
				if err := s.limitUser(r, limitRequest); err != nil {
					return err
				}
				return h(w, r)
			}
		}
		ss, err := s.sessions.Authenticate(r)
		if err != nil {
			return err
		}
		r = r.WithContext(context.WithValue(r.Context(), sessionKey, ss))
		if err := s.limitUser(r, limitRequest); err != nil {
			return err
		}
		return h(w, r)
	}
}

// newAccessToken returns a fresh random access token and the hex SHA-256
// under which it is stored. The token itself is never stored or logged: a
// fast hash is enough because it carries 256 bits of randomness.
func newAccessToken() (token, hash string) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	token = "strand_" + base64.RawURLEncoding.EncodeToString(b[:])
	return token, hexHash(token)
}

// hexHash is the hex SHA-256 under which a token goes on the log.
func hexHash(token string) string { return hex.EncodeToString(hashToken(token)) }

func hashToken(token string) []byte { return store.TokenHash(token) }

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// randomString returns n random characters of alphabet.
func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func newDeviceID() string { return randomString(10, idAlphabet) }

// lookupCaughtUp runs lookup, and if it finds nothing while stream's
// projection is behind the log, waits (bounded) for the projection to
// reach the log's head and runs it again. "Not found" from a projection
// that is still catching up is a wrong answer with consequences: an
// "unknown token" logs a client out, a missing event fails a receipt for
// a message a sync worker has already shown (it answers from the log).
func lookupCaughtUp[T any](ctx context.Context, s *Server, stream string, lookup func(context.Context) (T, error)) (T, error) {
	v, err := lookup(ctx)
	if !errors.Is(err, store.ErrNotFound) {
		return v, err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	waited, werr := s.watermark.CatchUp(wctx, s.log, stream)
	if werr != nil {
		var zero T
		return zero, matrix.Unavailable("the server is catching up with its log; retry")
	}
	if !waited {
		return v, err
	}
	return lookup(ctx)
}
