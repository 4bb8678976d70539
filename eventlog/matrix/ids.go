package matrix

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxIDLength is the maximum length in bytes of any Matrix identifier,
// including its sigil and server name (appendices: "Common Identifier Format").
const MaxIDLength = 255

// ServerName is a validated homeserver name: a hostname, IPv4 literal or
// bracketed IPv6 literal, optionally followed by a port.
type ServerName string

// ParseServerName validates s against the appendix grammar.
func ParseServerName(s string) (ServerName, error) {
	if s == "" || len(s) > MaxIDLength {
		return "", fmt.Errorf("server name %q: bad length", s)
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", fmt.Errorf("server name %q: unterminated IPv6 literal", s)
		}
		host, port = s[1:end], s[end+1:]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return "", fmt.Errorf("server name %q: bad IPv6 literal", s)
		}
		if port != "" && port[0] != ':' {
			return "", fmt.Errorf("server name %q: junk after IPv6 literal", s)
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i:]
	}
	if port != "" {
		n, err := strconv.Atoi(port[1:])
		if err != nil || n < 0 || n > 65535 || len(port) > 6 || len(port) < 2 {
			return "", fmt.Errorf("server name %q: bad port", s)
		}
	}
	if !strings.HasPrefix(s, "[") {
		if host == "" {
			return "", fmt.Errorf("server name %q: empty host", s)
		}
		for _, c := range host {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.'
			if !ok {
				return "", fmt.Errorf("server name %q: bad character %q", s, c)
			}
		}
	}
	return ServerName(s), nil
}

// UserID is a validated, fully qualified user ID "@localpart:server".
type UserID string

// Localpart returns the part between the sigil and the first colon.
func (u UserID) Localpart() string {
	s := string(u)
	if i := strings.IndexByte(s, ':'); i > 0 {
		return s[1:i]
	}
	return ""
}

// Server returns the server name part.
func (u UserID) Server() ServerName {
	s := string(u)
	if i := strings.IndexByte(s, ':'); i > 0 {
		return ServerName(s[i+1:])
	}
	return ""
}

func (u UserID) String() string { return string(u) }

// NewUserID builds a user ID from a localpart and server, validating the
// localpart with the strict grammar used for new registrations.
func NewUserID(localpart string, server ServerName) (UserID, error) {
	if err := ValidateLocalpart(localpart); err != nil {
		return "", err
	}
	id := UserID("@" + localpart + ":" + string(server))
	if len(id) > MaxIDLength {
		return "", fmt.Errorf("user ID longer than %d bytes", MaxIDLength)
	}
	return id, nil
}

// ValidateLocalpart checks the grammar for localparts of newly registered
// users: a-z, 0-9, and "._=-/+", non-empty.
func ValidateLocalpart(lp string) error {
	if lp == "" {
		return fmt.Errorf("empty localpart")
	}
	for i := 0; i < len(lp); i++ {
		c := lp[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0
		if !ok {
			return fmt.Errorf("localpart %q: character %q is not allowed", lp, c)
		}
	}
	return nil
}

// ParseUserID parses a user ID. It accepts the historical (wider) localpart
// grammar for IDs that already exist elsewhere: any printable ASCII except
// ':'; the server part must be a valid server name.
func ParseUserID(s string) (UserID, error) {
	if len(s) > MaxIDLength || len(s) < 4 || s[0] != '@' {
		return "", fmt.Errorf("user ID %q: must look like @localpart:server", s)
	}
	i := strings.IndexByte(s, ':')
	if i < 2 {
		return "", fmt.Errorf("user ID %q: missing localpart or server", s)
	}
	for j := 1; j < i; j++ {
		if s[j] < 0x21 || s[j] > 0x7e {
			return "", fmt.Errorf("user ID %q: bad localpart character", s)
		}
	}
	if _, err := ParseServerName(s[i+1:]); err != nil {
		return "", fmt.Errorf("user ID %q: %w", s, err)
	}
	return UserID(s), nil
}

// RoomAlias is a validated "#alias:server".
type RoomAlias string

// ParseRoomAlias validates a room alias. The spec lets an alias's
// localpart hold any Unicode character but ":" and NUL, so, unlike room
// IDs, it is not limited to ASCII; Strand still refuses whitespace and
// control characters there, which no client could show or type back.
func ParseRoomAlias(s string) (RoomAlias, error) {
	if len(s) > MaxIDLength || len(s) < 4 || s[0] != '#' {
		return "", fmt.Errorf("room alias %q: must look like #...:server", s)
	}
	i := strings.IndexByte(s, ':')
	if i < 2 {
		return "", fmt.Errorf("room alias %q: missing local part or server", s)
	}
	local := s[1:i]
	if !utf8.ValidString(local) {
		return "", fmt.Errorf("room alias %q: not UTF-8", s)
	}
	for _, c := range local {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return "", fmt.Errorf("room alias %q: bad character %q", s, c)
		}
	}
	if _, err := ParseServerName(s[i+1:]); err != nil {
		return "", fmt.Errorf("room alias %q: %w", s, err)
	}
	return RoomAlias(s), nil
}

// Server returns the alias's server name.
func (a RoomAlias) Server() ServerName {
	s := string(a)
	return ServerName(s[strings.IndexByte(s, ':')+1:])
}
