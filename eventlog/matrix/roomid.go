package matrix

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"
)

// RoomID is a validated room ID. It has one of two forms (appendices:
// "Room IDs"): "!opaque:server" in room versions up to 11, or "!hash" in
// version 12, where hash is the create event's reference hash, so that the
// ID is the create event's ID with '!' in place of '$'.
type RoomID string

// String returns the ID as is.
func (r RoomID) String() string { return string(r) }

// Server returns the server part of a "!opaque:server" ID. Version 12 IDs
// have none, and ok is false: use the create event's sender instead.
func (r RoomID) Server() (server ServerName, ok bool) {
	s := string(r)
	if i := strings.IndexByte(s, ':'); i > 0 {
		return ServerName(s[i+1:]), true
	}
	return "", false
}

// Hashed reports whether r is a version 12 style ID derived from the create
// event.
func (r RoomID) Hashed() bool { return len(r) == 1+hashIDLen && isHashID(string(r[1:])) }

// ParseRoomID validates either form of room ID. Whether the form fits the
// room's version is checked where the version is known (ParseEvent and
// Authorize).
func ParseRoomID(s string) (RoomID, error) {
	if len(s) < 2 || len(s) > MaxIDLength || s[0] != '!' {
		return "", fmt.Errorf("room ID %q: must look like !opaque:server or !hash", s)
	}
	i := strings.IndexByte(s, ':')
	if i < 0 {
		if !isHashID(s[1:]) {
			return "", fmt.Errorf("room ID %q: neither !opaque:server nor a 43-character URL-safe base64 hash", s)
		}
		return RoomID(s), nil
	}
	if err := checkOpaque(s[1:i]); err != nil {
		return "", fmt.Errorf("room ID %q: %w", s, err)
	}
	if _, err := ParseServerName(s[i+1:]); err != nil {
		return "", fmt.Errorf("room ID %q: %w", s, err)
	}
	return RoomID(s), nil
}

// checkOpaque validates the localpart of a room ID or event ID: non-empty,
// valid UTF-8 (which excludes surrogates), no NUL. The caller has already
// split off the ':'.
func checkOpaque(s string) error {
	if s == "" {
		return fmt.Errorf("empty local part")
	}
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("local part is not valid UTF-8 without NUL")
	}
	return nil
}

// roomIDAlphabet is what NewRoomID draws from: the spec asks for
// alphanumerics when generating localparts.
const roomIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// NewRoomID returns a fresh random "!opaque:server" ID for room versions 10
// and 11. Version 12 rooms get their ID from the create event instead (see
// BuildEvent). 18 characters from 62 give 107 bits of randomness, plenty
// for IDs that are also reserved on the log before use.
func NewRoomID(server ServerName) (RoomID, error) {
	if _, err := ParseServerName(string(server)); err != nil {
		return "", err
	}
	var b [18]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	for i := range b {
		// 256 % 62 = 8, so the bias towards the first 8 letters is below 1/32
		// per character; irrelevant for an ID that needs only uniqueness.
		b[i] = roomIDAlphabet[int(b[i])%len(roomIDAlphabet)]
	}
	id := "!" + string(b[:]) + ":" + string(server)
	if len(id) > MaxIDLength {
		return "", fmt.Errorf("room ID for server %q would exceed %d bytes", server, MaxIDLength)
	}
	return RoomID(id), nil
}

// EventID is a validated event ID: "$opaque:server" in room versions 1 and
// 2, "$" and the event's reference hash in unpadded base64 in version 3,
// and in URL-safe unpadded base64 from version 4.
type EventID string

// String returns the ID as is.
func (e EventID) String() string { return string(e) }

// ParseEventID validates an event ID of any room version. ParseEvent is
// stricter about the IDs inside an event: they take the form of its room's
// version.
func ParseEventID(s string) (EventID, error) {
	if len(s) < 2 || len(s) > MaxIDLength || s[0] != '$' {
		return "", fmt.Errorf("event ID %q: must start with '$'", s)
	}
	if isHashID(s[1:]) || isStdHashID(s[1:]) {
		return EventID(s), nil
	}
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", fmt.Errorf("event ID %q: neither a reference hash nor $opaque:server", s)
	}
	if err := checkOpaque(s[1:i]); err != nil {
		return "", fmt.Errorf("event ID %q: %w", s, err)
	}
	if _, err := ParseServerName(s[i+1:]); err != nil {
		return "", fmt.Errorf("event ID %q: %w", s, err)
	}
	return EventID(s), nil
}

// hashIDLen is the length of a sha256 in unpadded base64.
const hashIDLen = 43

// isHashID reports whether s is a sha256 in URL-safe unpadded base64.
func isHashID(s string) bool {
	if len(s) != hashIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	// 43 characters hold 258 bits: the last one carries 2 bits of padding,
	// which must be zero for this to be the canonical encoding of 32 bytes.
	return strings.IndexByte("AEIMQUYcgkosw048", s[len(s)-1]) >= 0
}

// isStdHashID reports whether s is a sha256 in standard unpadded base64,
// the event IDs of room version 3.
func isStdHashID(s string) bool {
	if len(s) != hashIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return strings.IndexByte("AEIMQUYcgkosw048", s[len(s)-1]) >= 0
}

// eventIDFromHash encodes a reference hash as an event ID of a version
// whose IDs are hashes.
func eventIDFromHash(rules versionRules, sum []byte) EventID {
	if rules.eventID == idHashStd {
		return EventID("$" + base64.RawStdEncoding.EncodeToString(sum))
	}
	return EventID("$" + base64.RawURLEncoding.EncodeToString(sum))
}

// NewEventID returns a fresh random "$opaque:server" event ID, the form of
// room versions 1 and 2, where the creating server names its events.
func NewEventID(server ServerName) (EventID, error) {
	id, err := NewRoomID(server)
	if err != nil {
		return "", err
	}
	return EventID("$" + string(id[1:])), nil
}

// roomIDForCreate is the room ID a version 12 create event founds.
func roomIDForCreate(id EventID) RoomID { return RoomID("!" + string(id[1:])) }
