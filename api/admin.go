package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Shared-secret registration, the provisioning API Synapse documents at
// /_synapse/admin/v1/register and other homeservers serve too.
//
// Nonces are stateless so that any api process can check a nonce another
// one issued: a nonce is a timestamp and random bytes, MACed with a key
// derived from the shared secret, and valid for nonceLifetime.
//
// A nonce is also single-use, on whichever process it is presented. That
// "used" fact has to be shared by every api process and must not be lost
// when one restarts, so, like every durable fact, it lives on the log: a
// registration first appends eventlog.NonceUsed as the first record of
// the nonce's own subject (expected sequence 0, the mechanism that makes
// user IDs unique), and of two uses, even at the same moment on two
// processes, JetStream accepts one. The NONCES stream keeps it longer than
// a nonce is valid and nothing projects it, so there is no table to
// replay. A process-local set would let each process accept the nonce
// once; a Postgres row would be a durable fact outside the log.

const nonceLifetime = 5 * time.Minute

func (s *Server) nonceMAC(body []byte) []byte {
	m := hmac.New(sha256.New, []byte("strand-nonce:"+s.cfg.SharedSecret))
	m.Write(body)
	return m.Sum(nil)[:16]
}

func (s *Server) newNonce(now time.Time) string {
	body := make([]byte, 8+16)
	binary.BigEndian.PutUint64(body, uint64(now.Unix()))
	_, _ = rand.Read(body[8:])
	return base64.RawURLEncoding.EncodeToString(append(body, s.nonceMAC(body)...))
}

func (s *Server) nonceValid(nonce string, now time.Time) bool {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != 8+16+16 {
		return false
	}
	body, mac := raw[:24], raw[24:]
	if !hmac.Equal(mac, s.nonceMAC(body)) {
		return false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(body)), 0)
	return now.Sub(issued) <= nonceLifetime && issued.Sub(now) < time.Minute
}

// GET /_synapse/admin/v1/register
func (s *Server) adminRegisterNonce(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.SharedSecret == "" {
		return matrix.Errorf("M_FORBIDDEN", http.StatusBadRequest, "shared secret registration is not enabled")
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"nonce": s.newNonce(time.Now())})
	return nil
}

// SharedSecretMAC computes the mac field of a shared-secret registration:
// HMAC-SHA1 keyed with the secret over nonce, user, password and the admin
// flag, NUL-separated (and the user type, when given).
func SharedSecretMAC(secret, nonce, user, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00"))
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte("\x00" + userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

type adminRegisterRequest struct {
	Nonce       string  `json:"nonce"`
	Username    string  `json:"username"`
	Displayname string  `json:"displayname"`
	Password    string  `json:"password"`
	Admin       bool    `json:"admin"`
	UserType    *string `json:"user_type"`
	MAC         string  `json:"mac"`
}

// POST /_synapse/admin/v1/register
func (s *Server) adminRegister(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.SharedSecret == "" {
		return matrix.Errorf("M_FORBIDDEN", http.StatusBadRequest, "shared secret registration is not enabled")
	}
	var req adminRegisterRequest
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	switch {
	case req.Nonce == "":
		return matrix.MissingParam("nonce is required")
	case req.Username == "":
		return matrix.MissingParam("username is required")
	case req.Password == "":
		return matrix.MissingParam("password is required")
	case req.MAC == "":
		return matrix.MissingParam("mac is required")
	}
	if !s.nonceValid(req.Nonce, time.Now()) {
		return matrix.Errorf("M_UNKNOWN", http.StatusBadRequest, "unrecognised or expired nonce")
	}
	userType := ""
	if req.UserType != nil {
		userType = *req.UserType
	}
	want := SharedSecretMAC(s.cfg.SharedSecret, req.Nonce, req.Username, req.Password, req.Admin, userType)
	if !hmac.Equal([]byte(want), []byte(req.MAC)) {
		return matrix.Forbidden("HMAC incorrect")
	}
	uid, err := s.validateNewUsername(req.Username)
	if err != nil {
		return err
	}
	if err := s.validatePassword(req.Password); err != nil {
		return err
	}
	if err := matrix.CheckMaxLength("displayname", req.Displayname, matrix.MaxDisplayNameBytes); err != nil {
		return err
	}
	if err := s.useNonce(r.Context(), req.Nonce); err != nil {
		return err
	}
	hash, err := s.hashPassword(req.Password)
	if err != nil {
		return err
	}
	token, tokenHash := newAccessToken()
	now := time.Now().UnixMilli()
	rec := &eventlog.UserRegistered{
		PasswordHash: hash, Admin: req.Admin, Displayname: req.Displayname, TS: now,
		Device: &eventlog.DeviceCreated{DeviceID: newDeviceID(), TokenHash: tokenHash, TS: now},
	}
	if _, err := s.createUser(r.Context(), uid, rec); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{
		"user_id": uid, "access_token": token, "device_id": rec.Device.DeviceID, "home_server": string(s.cfg.ServerName),
	})
	return nil
}

// useNonce marks a valid nonce used, or refuses it if it was used before
// (see the top of this file). A nonce is used up even when the
// registration then fails, as a retry needs only a new nonce.
func (s *Server) useNonce(ctx context.Context, nonce string) error {
	rec := &eventlog.NonceUsed{Purpose: "shared_secret_registration", TS: time.Now().UnixMilli()}
	_, err := s.log.Append(ctx, eventlog.NonceSubject(nonce), rec, eventlog.AppendOptions{ExpectSeq: eventlog.Expect(0)})
	if errors.Is(err, eventlog.ErrConflict) {
		return matrix.Errorf("M_UNKNOWN", http.StatusBadRequest, "unrecognised or expired nonce")
	}
	if err != nil {
		s.logger.Error("append failed", "record", rec.RecordType(), "err", err)
		return logUnavailable(err)
	}
	return nil
}

// requireAdmin admits only server admins.
func requireAdmin(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !session(r).Admin {
			return matrix.Forbidden("you are not a server admin")
		}
		return h(w, r)
	}
}

// adminTarget is the local, existing user of an admin request's path.
func (s *Server) adminTarget(r *http.Request) (string, error) {
	uid, err := matrix.ParseUserID(pathVar(r, "userId"))
	if err != nil {
		return "", matrix.InvalidParam("invalid user ID: %v", err)
	}
	if uid.Server() != s.cfg.ServerName {
		return "", matrix.InvalidParam("%s is not a user of this server", uid)
	}
	u, err := s.store.User(r.Context(), string(uid))
	if errors.Is(err, store.ErrNotFound) {
		return "", matrix.NotFound("no user %s", uid)
	}
	if err != nil {
		return "", err
	}
	if u.Deactivated {
		return "", matrix.Errorf("M_USER_DEACTIVATED", http.StatusBadRequest, "%s is deactivated", uid)
	}
	return string(uid), nil
}

// adminResetPassword is Synapse's POST /_synapse/admin/v1/reset_password/{userId}.
func (s *Server) adminResetPassword(w http.ResponseWriter, r *http.Request) error {
	uid, err := s.adminTarget(r)
	if err != nil {
		return err
	}
	var req struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.NewPassword == nil {
		return matrix.MissingParam("new_password is required")
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := s.setPassword(r.Context(), uid, *req.NewPassword, logout, ""); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// adminDeactivate is Synapse's POST /_synapse/admin/v1/deactivate/{userId}.
//
// Repeating it for a user already deactivated is allowed and finishes what
// an interrupted deactivation left undone (rooms not yet left).
func (s *Server) adminDeactivate(w http.ResponseWriter, r *http.Request) error {
	uid, err := s.adminTarget(r)
	if me, ok := matrix.AsError(err); ok && me.Code == "M_USER_DEACTIVATED" {
		uid, err = pathVar(r, "userId"), nil
	}
	if err != nil {
		return err
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	if err := s.deactivateAccount(r.Context(), uid); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"id_server_unbind_result": "success"})
	return nil
}
