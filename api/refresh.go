package api

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// DefaultAccessTokenLifetime is how long an access token issued with a
// refresh token lives unless configured: Synapse's default, short enough
// that a leaked token is soon useless, long enough that refreshing costs
// a client one request in five minutes.
const DefaultAccessTokenLifetime = 5 * time.Minute

// maxRefreshAttempts bounds the compare-and-set loop of a refresh, which
// only loses to other records on the same user's subject.
const maxRefreshAttempts = 8

// newRefreshToken returns a fresh refresh token and its stored hash. It
// has its own prefix so an operator can tell the two kinds apart.
func newRefreshToken() (token, hash string) {
	tok, _ := newAccessToken()
	tok = "strandr_" + tok[len("strand_"):]
	return tok, hexHash(tok)
}

// withRefreshToken gives a device being created (login, register) a
// refresh token and an expiring access token, and adds both to the
// response.
func (s *Server) withRefreshToken(dev *eventlog.DeviceCreated, resp map[string]any) {
	refresh, hash := newRefreshToken()
	dev.RefreshHash = hash
	dev.ExpiresTS = time.UnixMilli(dev.TS).Add(s.cfg.AccessTokenLifetime).UnixMilli()
	resp["refresh_token"] = refresh
	resp["expires_in_ms"] = s.cfg.AccessTokenLifetime.Milliseconds()
}

// POST /_matrix/client/v1/refresh
// POST /_matrix/client/v3/refresh
//
// refresh answers POST /refresh: the refresh token is exchanged for a new
// access token and a new refresh token. Each refresh token works once,
// across every api process: the exchange is decided on the projection as
// of the user's subject sequence and appended expecting that sequence,
// so of two concurrent uses one appends and the other, re-reading, finds
// the token used. (The spec lets a server keep the old refresh token
// usable until the new tokens are used; Strand does not, so that a stolen
// refresh token that has been used is useless to the thief, and its use
// by the thief shows as the client's next refresh failing.)
func (s *Server) refresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefreshToken *string `json:"refresh_token"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.RefreshToken == nil {
		return matrix.MissingParam("refresh_token is required")
	}
	hash := hashToken(*req.RefreshToken)
	ctx := r.Context()
	dev, err := lookupCaughtUp(ctx, s, eventlog.StreamAccounts, func(ctx context.Context) (store.RefreshSession, error) {
		return s.store.DeviceByRefreshToken(ctx, hash)
	})
	if errors.Is(err, store.ErrNotFound) {
		return matrix.SoftLoggedOut("unknown or already used refresh token")
	}
	if err != nil {
		return err
	}
	// A refresh appends a record, like a login: it spends the login
	// budget of the client's address (not of the account, whose lock-out
	// after failed passwords should not end sessions that hold a token).
	if err := s.limitAddress(r, limitLoginAddress); err != nil {
		return err
	}
	access, accessHash := newAccessToken()
	refresh, refreshHash := newRefreshToken()
	now := time.Now()
	rec := &eventlog.TokenRefreshed{
		UserID: dev.UserID, DeviceID: dev.DeviceID, RefreshHash: hex.EncodeToString(hash),
		NewTokenHash: accessHash, NewRefreshHash: refreshHash,
		ExpiresTS: now.Add(s.cfg.AccessTokenLifetime).UnixMilli(), TS: now.UnixMilli(),
	}
	if err := s.exchangeRefresh(ctx, dev, hash, rec); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token":  access,
		"refresh_token": refresh,
		"expires_in_ms": s.cfg.AccessTokenLifetime.Milliseconds(),
	})
	return nil
}

// exchangeRefresh appends rec if, as of the user's last record, hash is
// still dev's refresh token: the compare-and-set that makes a refresh
// token single-use.
func (s *Server) exchangeRefresh(ctx context.Context, dev store.RefreshSession, hash []byte, rec *eventlog.TokenRefreshed) error {
	subject := eventlog.UserSubject(dev.UserID)
	for attempt := 0; attempt < maxRefreshAttempts; attempt++ {
		last, err := s.log.LastSeq(ctx, eventlog.StreamAccounts, subject)
		if err != nil {
			return logUnavailable(err)
		}
		if err := s.awaitPosition(ctx, eventlog.StreamAccounts, last); err != nil {
			return err
		}
		cur, err := s.store.DeviceByRefreshToken(ctx, hash)
		if errors.Is(err, store.ErrNotFound) || err == nil && cur != dev {
			return matrix.SoftLoggedOut("unknown or already used refresh token")
		}
		if err != nil {
			return err
		}
		err = s.appendAccount(ctx, dev.UserID, rec, eventlog.Expect(last))
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		return err
	}
	return matrix.Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests, "the account of %s is too busy; retry", dev.UserID)
}
