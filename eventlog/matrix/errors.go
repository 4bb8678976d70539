// Package matrix is Strand's Matrix domain: identifiers, errors, events,
// canonical JSON, hashing and signing, and the authorisation rules. It does
// no I/O and imports nothing outside the standard library and x/crypto, so
// every other package can depend on it.
package matrix

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a Matrix-level error: the errcode a client sees, the HTTP status
// it travels with, and a human-readable message. Infrastructure failures are
// never Errors; the HTTP layer reports them as M_UNKNOWN with status 500.
type Error struct {
	Code   string // e.g. "M_FORBIDDEN"
	Status int    // HTTP status
	Msg    string
	// Extra holds additional top-level fields of the error body, such as
	// retry_after_ms or the user-interactive auth flows of a 401.
	Extra map[string]any
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

// Errorf returns an *Error with the given code, status and message.
func Errorf(code string, status int, format string, args ...any) *Error {
	return &Error{Code: code, Status: status, Msg: fmt.Sprintf(format, args...)}
}

// AsError reports whether err is or wraps a *Error and returns it.
func AsError(err error) (*Error, bool) {
	var me *Error
	if errors.As(err, &me) {
		return me, true
	}
	return nil, false
}

// Constructors for the errcodes Strand uses. Each sets the status the spec
// pairs with the code, so handlers never choose a status themselves.
func Forbidden(format string, a ...any) *Error {
	return Errorf("M_FORBIDDEN", http.StatusForbidden, format, a...)
}
func NotFound(format string, a ...any) *Error {
	return Errorf("M_NOT_FOUND", http.StatusNotFound, format, a...)
}
func BadJSON(format string, a ...any) *Error {
	return Errorf("M_BAD_JSON", http.StatusBadRequest, format, a...)
}
func NotJSON(format string, a ...any) *Error {
	return Errorf("M_NOT_JSON", http.StatusBadRequest, format, a...)
}
func MissingParam(format string, a ...any) *Error {
	return Errorf("M_MISSING_PARAM", http.StatusBadRequest, format, a...)
}
func InvalidParam(format string, a ...any) *Error {
	return Errorf("M_INVALID_PARAM", http.StatusBadRequest, format, a...)
}
func Unrecognized(format string, a ...any) *Error {
	return Errorf("M_UNRECOGNIZED", http.StatusNotFound, format, a...)
}
func MethodNotAllowed(format string, a ...any) *Error {
	return Errorf("M_UNRECOGNIZED", http.StatusMethodNotAllowed, format, a...)
}
func TooLarge(format string, a ...any) *Error {
	return Errorf("M_TOO_LARGE", http.StatusRequestEntityTooLarge, format, a...)
}
func MissingToken(format string, a ...any) *Error {
	return Errorf("M_MISSING_TOKEN", http.StatusUnauthorized, format, a...)
}

// RevokedToken is the answer to an access token the server does not know
// (never issued, logged out, or of a deactivated account).
func RevokedToken() *Error {
	e := UnknownToken("unknown or revoked access token")
	e.Extra = map[string]any{"soft_logout": false}
	return e
}

// SoftLoggedOut is the answer to an access token that has expired (or a
// refresh token already used): the client keeps its session and data, and
// refreshes or logs in again.
func SoftLoggedOut(msg string) *Error {
	e := UnknownToken("%s", msg)
	e.Extra = map[string]any{"soft_logout": true}
	return e
}

func UnknownToken(format string, a ...any) *Error {
	return Errorf("M_UNKNOWN_TOKEN", http.StatusUnauthorized, format, a...)
}
func UserInUse(format string, a ...any) *Error {
	return Errorf("M_USER_IN_USE", http.StatusBadRequest, format, a...)
}
func InvalidUsername(format string, a ...any) *Error {
	return Errorf("M_INVALID_USERNAME", http.StatusBadRequest, format, a...)
}
func WeakPassword(format string, a ...any) *Error {
	return Errorf("M_WEAK_PASSWORD", http.StatusBadRequest, format, a...)
}
func LimitExceeded(retryAfterMS int64, format string, a ...any) *Error {
	e := Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests, format, a...)
	e.Extra = map[string]any{"retry_after_ms": retryAfterMS}
	return e
}
func Unavailable(format string, a ...any) *Error {
	return Errorf("M_UNKNOWN", http.StatusServiceUnavailable, format, a...)
}
