package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

// maxPasswordBytes bounds what we hash; longer is surely not a password.
const maxPasswordBytes = 512

// prehash maps a password of any length to 44 bytes before bcrypt, which
// would otherwise reject passwords over 72 bytes and stop at a NUL byte.
func prehash(pw string) []byte {
	h := sha256.Sum256([]byte(pw))
	return []byte(base64.StdEncoding.EncodeToString(h[:]))
}

func (s *Server) hashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword(prehash(pw), s.cfg.BcryptCost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// checkPassword compares pw with a stored hash. With no hash (an unknown
// user, or one without a password) it compares against a dummy hash of the
// configured cost, so that unknown users and wrong passwords take the same
// time and logins do not reveal which accounts exist.
func (s *Server) checkPassword(hash, pw string) bool {
	if hash == "" {
		s.dummyOnce.Do(func() {
			s.dummyHash, _ = bcrypt.GenerateFromPassword(prehash("strand-dummy"), s.cfg.BcryptCost)
		})
		_ = bcrypt.CompareHashAndPassword(s.dummyHash, prehash(pw))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), prehash(pw)) == nil
}

// validatePassword applies the password policy to a new password.
func (s *Server) validatePassword(pw string) error {
	if len(pw) > maxPasswordBytes {
		return matrix.InvalidParam("password is longer than %d bytes", maxPasswordBytes)
	}
	if pw == "" || utf8.RuneCountInString(pw) < s.cfg.PasswordMinLength {
		return matrix.WeakPassword("password must have at least %d characters", max(1, s.cfg.PasswordMinLength))
	}
	return nil
}

// setPassword changes a user's password: validated, hashed and appended
// as one record that, with logout set, also removes every device except
// keep ("" keeps none).
func (s *Server) setPassword(ctx context.Context, userID, pw string, logout bool, keep string) error {
	if err := s.validatePassword(pw); err != nil {
		return err
	}
	hash, err := s.hashPassword(pw)
	if err != nil {
		return err
	}
	rec := &eventlog.PasswordChanged{UserID: userID, PasswordHash: hash, LogoutDevices: logout, KeepDevice: keep}
	return s.appendAccount(ctx, userID, rec, nil)
}
