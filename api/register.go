package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

type registerRequest struct {
	// Type m.login.application_service: a service registers a user of
	// its namespace.
	Type                     string    `json:"type"`
	Auth                     *authData `json:"auth"`
	Username                 *string   `json:"username"`
	Password                 *string   `json:"password"`
	DeviceID                 *string   `json:"device_id"`
	InitialDeviceDisplayName *string   `json:"initial_device_display_name"`
	InhibitLogin             bool      `json:"inhibit_login"`
	RefreshToken             bool      `json:"refresh_token"`
}

// registrationStages is the one-stage flow the policy allows.
func (s *Server) registrationStages() []string {
	if s.cfg.Registration == RegistrationToken {
		return []string{"m.login.registration_token"}
	}
	return []string{"m.login.dummy"}
}

func (s *Server) registrationAllowed() error {
	if s.cfg.Registration == RegistrationClosed {
		return matrix.Forbidden("registration is disabled on this server")
	}
	return nil
}

// GET /_matrix/client/v3/register
//
// registerFlows answers GET /register, which some clients use to learn the
// flows: there is no GET in the spec, so it answers like a POST without
// auth would.
func (s *Server) registerFlows(w http.ResponseWriter, r *http.Request) error {
	if err := s.registrationAllowed(); err != nil {
		return err
	}
	return uiaChallenge(s.registrationStages(), "", nil)
}

// POST /_matrix/client/v3/register
func (s *Server) register(w http.ResponseWriter, r *http.Request) error {
	if kind := r.URL.Query().Get("kind"); kind == "guest" {
		return matrix.Errorf("M_GUEST_ACCESS_FORBIDDEN", http.StatusForbidden, "guest accounts are not supported")
	} else if kind != "" && kind != "user" {
		return matrix.InvalidParam("unknown kind %q", kind)
	}
	var req registerRequest
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		if aerr := s.registrationAllowed(); aerr != nil {
			return aerr // closed says so before anything is read
		}
		return err
	}
	if req.Type == "m.login.application_service" {
		// Services register their users whatever the policy for people.
		return s.registerAppservice(w, r, &req)
	}
	if err := s.registrationAllowed(); err != nil {
		return err
	}
	// Check the username before authentication, so the client learns it is
	// taken or invalid before the user goes through the auth stages.
	var userID string
	if req.Username != nil {
		uid, err := s.validateNewUsername(*req.Username)
		if err != nil {
			return err
		}
		if err := s.checkUserNamespace(uid, nil); err != nil {
			return err
		}
		if taken, err := s.userTaken(r.Context(), uid); err != nil {
			return err
		} else if taken {
			return matrix.UserInUse("user ID %s is already taken", uid)
		}
		userID = uid
	}
	if req.Password != nil {
		if err := s.validatePassword(*req.Password); err != nil {
			return err
		}
	}
	if err := checkNewDevice(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	if err := s.checkRegistrationAuth(req.Auth); err != nil {
		return err
	}
	// Counted once the request would create an account, before the
	// password hash that makes a registration costly.
	if err := s.limitAddress(r, limitRegister); err != nil {
		return err
	}
	var hash string
	if req.Password != nil {
		h, err := s.hashPassword(*req.Password)
		if err != nil {
			return err
		}
		hash = h
	}
	rec := &eventlog.UserRegistered{PasswordHash: hash, TS: time.Now().UnixMilli()}
	var token string
	if !req.InhibitLogin {
		dev := registeredDevice(req.DeviceID, req.InitialDeviceDisplayName, rec.TS)
		token, dev.TokenHash = newAccessToken()
		rec.Device = dev
	}
	resp := map[string]any{"home_server": string(s.cfg.ServerName)}
	if rec.Device != nil {
		resp["access_token"] = token
		resp["device_id"] = rec.Device.DeviceID
		if req.RefreshToken {
			s.withRefreshToken(rec.Device, resp)
		}
	}
	uid, err := s.createUser(r.Context(), userID, rec)
	if err != nil {
		return err
	}
	resp["user_id"] = uid
	matrix.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// checkRegistrationAuth completes the registration UIA flow or returns
// the 401 challenge.
func (s *Server) checkRegistrationAuth(auth *authData) error {
	stages := s.registrationStages()
	if auth == nil || auth.Type == "" {
		sess := ""
		if auth != nil {
			sess = auth.Session
		}
		return uiaChallenge(stages, sess, nil)
	}
	switch {
	case auth.Type == stages[0] && auth.Type == "m.login.dummy":
		return nil
	case auth.Type == stages[0] && auth.Type == "m.login.registration_token":
		if !s.registrationTokenValid(auth.Token) {
			return uiaChallenge(stages, auth.Session, matrix.Forbidden("invalid registration token"))
		}
		return nil
	}
	return uiaChallenge(stages, auth.Session, matrix.Forbidden("auth type %q is not offered", auth.Type))
}

func (s *Server) registrationTokenValid(tok string) bool {
	return s.cfg.Registration == RegistrationToken && tok != "" && tok == s.cfg.RegistrationSharedToken
}

// validateNewUsername maps a requested username onto a user ID of this
// server: lowercased, then checked against the localpart grammar.
func (s *Server) validateNewUsername(username string) (string, error) {
	lp := strings.ToLower(username)
	uid, err := matrix.NewUserID(lp, s.cfg.ServerName)
	if err != nil {
		return "", matrix.InvalidUsername("invalid username: %v", err)
	}
	if strings.HasPrefix(lp, "_") {
		return "", matrix.InvalidUsername("usernames starting with '_' are reserved")
	}
	return string(uid), nil
}

// userTaken asks the log itself, which is where uniqueness is decided:
// any record on the user's subject means the ID was registered.
func (s *Server) userTaken(ctx context.Context, userID string) (bool, error) {
	seq, err := s.log.LastSeq(ctx, eventlog.StreamAccounts, eventlog.UserSubject(userID))
	if err != nil {
		return false, logUnavailable(err)
	}
	return seq != 0, nil
}

// createUser appends the registration as the first record of the user's
// subject. With no user ID requested it draws random localparts until one
// is free.
func (s *Server) createUser(ctx context.Context, userID string, rec *eventlog.UserRegistered) (string, error) {
	for attempt := 0; ; attempt++ {
		uid := userID
		if uid == "" {
			uid = "@" + randomString(12, "abcdefghijklmnopqrstuvwxyz0123456789") + ":" + string(s.cfg.ServerName)
		}
		rec.UserID = uid
		if rec.Device != nil {
			rec.Device.UserID = uid
		}
		err := s.appendAccount(ctx, uid, rec, eventlog.Expect(0))
		if errors.Is(err, eventlog.ErrConflict) {
			if userID != "" || attempt >= 5 {
				return "", matrix.UserInUse("user ID %s is already taken", uid)
			}
			continue
		}
		return uid, err
	}
}

// GET /_matrix/client/v3/register/available
func (s *Server) registerAvailable(w http.ResponseWriter, r *http.Request) error {
	if err := s.registrationAllowed(); err != nil {
		return err
	}
	name := r.URL.Query().Get("username")
	if name == "" {
		return matrix.MissingParam("username is required")
	}
	uid, err := s.validateNewUsername(name)
	if err != nil {
		return err
	}
	if err := s.checkUserNamespace(uid, nil); err != nil {
		return err
	}
	taken, err := s.userTaken(r.Context(), uid)
	if err != nil {
		return err
	}
	if taken {
		return matrix.UserInUse("user ID %s is already taken", uid)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]bool{"available": true})
	return nil
}

// GET /_matrix/client/v1/register/m.login.registration_token/validity
// GET /_matrix/client/v3/register/m.login.registration_token/validity
func (s *Server) registrationTokenValidity(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Registration != RegistrationToken {
		return matrix.Forbidden("registration tokens are not used on this server")
	}
	tok := r.URL.Query().Get("token")
	if tok == "" {
		return matrix.MissingParam("token is required")
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]bool{"valid": s.registrationTokenValid(tok)})
	return nil
}

// registeredDevice is the device a registration logs in with: the one the
// request names (checked by checkNewDevice), or a new ID.
func registeredDevice(deviceID, displayName *string, ts int64) *eventlog.DeviceCreated {
	dev := &eventlog.DeviceCreated{DeviceID: newDeviceID(), TS: ts}
	if deviceID != nil && *deviceID != "" {
		dev.DeviceID = *deviceID
	}
	if displayName != nil {
		dev.DisplayName = *displayName
	}
	return dev
}
