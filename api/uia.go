package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// User-interactive authentication. Every flow Strand offers has a single
// stage, so no server-side session state is needed: the session ID is
// handed out for clients that expect one and accepted back unchecked.

// authData is the "auth" object of a UIA request.
type authData struct {
	Type       string      `json:"type"`
	Session    string      `json:"session"`
	Identifier *identifier `json:"identifier"`
	User       string      `json:"user"` // deprecated m.login.password form
	Password   string      `json:"password"`
	Token      string      `json:"token"` // m.login.registration_token
}

// identifier is a login identifier; only m.id.user is supported.
type identifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// uiaChallenge is the 401 that lists the flows; with cause set it also
// carries the errcode of a failed attempt.
func uiaChallenge(stages []string, session string, cause *matrix.Error) *matrix.Error {
	if session == "" {
		session = randomString(24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
	}
	flows := make([]map[string]any, 0, len(stages))
	for _, st := range stages {
		flows = append(flows, map[string]any{"stages": []string{st}})
	}
	e := &matrix.Error{Status: http.StatusUnauthorized, Extra: map[string]any{
		"flows": flows, "params": map[string]any{}, "session": session, "completed": []string{},
	}}
	if cause != nil {
		e.Code, e.Msg = cause.Code, cause.Msg
	}
	return e
}

// resolveLocalUser turns what a client typed (localpart or full user ID)
// into a user ID of this server. ok is false for a foreign or malformed ID.
func (s *Server) resolveLocalUser(typed string) (string, bool) {
	typed = strings.TrimSpace(typed)
	if strings.HasPrefix(typed, "@") {
		uid, err := matrix.ParseUserID(typed)
		if err != nil || uid.Server() != s.cfg.ServerName {
			return "", false
		}
		return string(uid), true
	}
	if typed == "" || strings.ContainsAny(typed, ": ") {
		return "", false
	}
	return "@" + typed + ":" + string(s.cfg.ServerName), true
}

// userForIdentifier returns the user an m.login.password identifier names.
func (s *Server) userForIdentifier(id *identifier, legacy string) (string, error) {
	typed := legacy
	if id != nil {
		if id.Type != "m.id.user" {
			return "", matrix.Errorf("M_UNKNOWN", http.StatusBadRequest, "unsupported identifier type %q", id.Type)
		}
		typed = id.User
	}
	if typed == "" {
		return "", matrix.MissingParam("identifier.user is required")
	}
	uid, ok := s.resolveLocalUser(typed)
	if !ok {
		return "", nil
	}
	return uid, nil
}

// lookupLogin finds the account a login names, trying the ID as typed and
// then lowercased (registration lowercases localparts). It returns a zero
// User when there is none.
func (s *Server) lookupLogin(ctx context.Context, uid string) (store.User, error) {
	if uid == "" {
		return store.User{}, nil
	}
	u, err := s.store.User(ctx, uid)
	if errors.Is(err, store.ErrNotFound) && strings.ToLower(uid) != uid {
		u, err = s.store.User(ctx, strings.ToLower(uid))
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, nil
	}
	return u, err
}

// requirePassword runs the m.login.password UIA stage for the caller: it
// succeeds only when auth names the caller and carries their password.
func (s *Server) requirePassword(ctx context.Context, caller string, auth *authData) error {
	stages := []string{"m.login.password"}
	if auth == nil || auth.Type == "" {
		sess := ""
		if auth != nil {
			sess = auth.Session
		}
		return uiaChallenge(stages, sess, nil)
	}
	if auth.Type != "m.login.password" {
		return uiaChallenge(stages, auth.Session, matrix.Forbidden("unsupported auth type %q", auth.Type))
	}
	uid, err := s.userForIdentifier(auth.Identifier, auth.User)
	if err != nil {
		return err
	}
	u, err := s.lookupLogin(ctx, uid)
	if err != nil {
		return err
	}
	if !s.checkPassword(u.PasswordHash, auth.Password) {
		return uiaChallenge(stages, auth.Session, matrix.Forbidden("invalid password"))
	}
	if u.UserID != caller {
		// The stage was completed, but as someone else: retrying cannot
		// help, so this is a plain 403 rather than another 401 challenge.
		return matrix.Forbidden("the authenticated user is not the user making the request")
	}
	return nil
}
