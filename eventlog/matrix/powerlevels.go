package matrix

import (
	"fmt"
	"math"
	"strings"
)

// CreatorPowerLevel is the power level of a room creator in room version 12,
// where creators are "infinitely" powerful. It is above every level a
// power_levels event can express (those are at most MaxSafeInteger), so
// ordinary comparisons give the spec's answers: a creator outranks everyone
// but another creator.
const CreatorPowerLevel = math.MaxInt64

// Power level defaults from the m.room.power_levels schema.
const (
	defaultBan           = 50
	defaultKick          = 50
	defaultRedact        = 50
	defaultInvite        = 0
	defaultEventsDefault = 0
	defaultStateDefault  = 50
	defaultUsersDefault  = 0
	// defaultCreatorLevel is the level of the creator in a room of version
	// 1 to 11 that has no m.room.power_levels event yet.
	defaultCreatorLevel = 100
)

// namedLevel indexes the top-level integer properties of power levels.
type namedLevel int

const (
	levelUsersDefault namedLevel = iota
	levelEventsDefault
	levelStateDefault
	levelBan
	levelRedact
	levelKick
	levelInvite
	numNamedLevels
)

var namedLevelKeys = [numNamedLevels]string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

// PowerLevels is the content of an m.room.power_levels event with the
// spec's defaults filled in for missing properties. Versions 10 and later
// allow integers only; versions 1–9 also accept integers written as strings
// (rooms/fragments/v1-stringy-power-levels.md), which parsing turns into
// integers.
type PowerLevels struct {
	Ban, Kick, Redact, Invite   int64
	EventsDefault, StateDefault int64
	UsersDefault                int64
	Events                      map[string]int64
	Users                       map[UserID]int64
	Notifications               map[string]int64

	// present records which named levels the content actually had: the
	// rules on changing power levels treat "absent" differently from "set
	// to the default".
	present [numNamedLevels]bool
}

// DefaultPowerLevels returns the levels that apply when a room has no
// m.room.power_levels event. (The creator's own level is not among them;
// State.UserPowerLevel handles it.)
func DefaultPowerLevels() *PowerLevels {
	return &PowerLevels{
		Ban: defaultBan, Kick: defaultKick, Redact: defaultRedact, Invite: defaultInvite,
		EventsDefault: defaultEventsDefault, StateDefault: defaultStateDefault, UsersDefault: defaultUsersDefault,
	}
}

// ParsePowerLevels parses m.room.power_levels content with the checks of
// authorisation rule "If type is m.room.power_levels" (9.1–9.3 in v10/v11,
// 10.1–10.3 in v12; before v10 the rule names only users, and Strand holds
// the other levels to the same form, since levels it cannot read cannot
// be applied): the named levels integers, events and notifications
// objects of integers, users an object from valid user IDs to integers.
// It is the strict form of every version: what a server lets its own users
// send, since the string levels older versions tolerate are kept "strictly
// for backwards compatibility" (rooms/fragments/v1-deprecated-formatting-off-spec.md).
func ParsePowerLevels(content []byte) (*PowerLevels, error) {
	canon, err := CanonicalJSON(content)
	if err != nil {
		return nil, err
	}
	pl, err := parsePowerLevels(canon, false)
	if err != nil {
		return nil, err
	}
	return pl, nil
}

// parsePowerLevels parses canonical content. It always returns the levels
// it could read, so that state holding a malformed event (which Authorize
// would never have let in) still yields usable levels, and an error
// describing the first problem. With stringy, levels may also be integers
// written as strings (versions 1–9).
func parsePowerLevels(content []byte, stringy bool) (*PowerLevels, error) {
	pl := DefaultPowerLevels()
	var firstErr error
	fail := func(format string, a ...any) {
		if firstErr == nil {
			firstErr = Forbidden("power levels: "+format, a...)
		}
	}
	if !isObject(content) {
		return pl, Forbidden("power levels: content is not an object")
	}
	err := eachMember(content, func(k, v []byte) (bool, error) {
		key := string(k)
		for i, name := range namedLevelKeys {
			if key != name {
				continue
			}
			n, ok := decodeLevel(v, stringy)
			if !ok {
				fail("%s must be an integer", name)
				return true, nil
			}
			pl.present[i] = true
			*pl.named(namedLevel(i)) = n
			return true, nil
		}
		switch key {
		case "events", "notifications":
			m, err := intMap(v, stringy)
			if err != nil {
				fail("%s: %v", key, err)
				return true, nil
			}
			if key == "events" {
				pl.Events = m
			} else {
				pl.Notifications = m
			}
		case "users":
			m, err := intMap(v, stringy)
			if err != nil {
				fail("users: %v", err)
				return true, nil
			}
			pl.Users = make(map[UserID]int64, len(m))
			for u, n := range m {
				if _, err := ParseUserID(u); err != nil {
					fail("users: %v", err)
					continue
				}
				pl.Users[UserID(u)] = n
			}
		}
		return true, nil
	})
	if err != nil {
		return pl, Forbidden("power levels: malformed content")
	}
	return pl, firstErr
}

// decodeLevel decodes a power level: an integer or, with stringy, a string
// holding one in the form the v1 fragment allows (surrounding whitespace,
// one optional sign, base 10 digits with any leading zeros).
func decodeLevel(v []byte, stringy bool) (int64, bool) {
	if n, ok := decodeInt(v); ok || !stringy {
		return n, ok
	}
	s, ok := decodeString(v)
	if !ok {
		return 0, false
	}
	s = strings.TrimSpace(s)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg, s = s[0] == '-', s[1:]
	}
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
		if n > MaxSafeInteger {
			return 0, false
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

// intMap decodes an object whose values must all be integers (or, with
// stringy, integers written as strings).
func intMap(v []byte, stringy bool) (map[string]int64, error) {
	if !isObject(v) {
		return nil, fmt.Errorf("not an object")
	}
	m := map[string]int64{}
	err := eachMember(v, func(k, val []byte) (bool, error) {
		key, ok := decodeString(append(append([]byte{'"'}, k...), '"'))
		if !ok {
			return false, fmt.Errorf("bad key")
		}
		n, ok := decodeLevel(val, stringy)
		if !ok {
			return false, fmt.Errorf("value of %q is not an integer", key)
		}
		m[key] = n
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (pl *PowerLevels) named(l namedLevel) *int64 {
	switch l {
	case levelUsersDefault:
		return &pl.UsersDefault
	case levelEventsDefault:
		return &pl.EventsDefault
	case levelStateDefault:
		return &pl.StateDefault
	case levelBan:
		return &pl.Ban
	case levelRedact:
		return &pl.Redact
	case levelKick:
		return &pl.Kick
	default:
		return &pl.Invite
	}
}

// EventLevel returns the level needed to send an event of type evType: its
// entry in events, else state_default for state events and events_default
// for the rest. (Membership events are governed by invite/kick/ban
// instead; Authorize applies this only to other types.)
func (pl *PowerLevels) EventLevel(evType string, isState bool) int64 {
	if n, ok := pl.Events[evType]; ok {
		return n
	}
	if isState {
		return pl.StateDefault
	}
	return pl.EventsDefault
}

// UserLevel returns u's entry in users, else users_default. It knows
// nothing of room creators; State.UserPowerLevel does.
func (pl *PowerLevels) UserLevel(u UserID) int64 {
	if n, ok := pl.Users[u]; ok {
		return n
	}
	return pl.UsersDefault
}
