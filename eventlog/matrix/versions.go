package matrix

import "net/http"

// RoomVersion names a set of rules for a room's events: their format, how
// they are redacted, hashed into IDs and authorised. The spec treats
// versions as opaque strings; content.room_version of m.room.create fixes a
// room's version for good.
type RoomVersion string

// The room versions Strand implements: every version the spec defines
// (content/rooms/v1.md … v12.md). A server cannot choose the version of a
// room it is asked to join, and clients and test suites create rooms of
// older versions on purpose, so all of them are supported for creating,
// joining and authorising rooms.
const (
	RoomVersion1  RoomVersion = "1"
	RoomVersion2  RoomVersion = "2"
	RoomVersion3  RoomVersion = "3"
	RoomVersion4  RoomVersion = "4"
	RoomVersion5  RoomVersion = "5"
	RoomVersion6  RoomVersion = "6"
	RoomVersion7  RoomVersion = "7"
	RoomVersion8  RoomVersion = "8"
	RoomVersion9  RoomVersion = "9"
	RoomVersion10 RoomVersion = "10"
	RoomVersion11 RoomVersion = "11"
	RoomVersion12 RoomVersion = "12"
)

// DefaultRoomVersion is the version of rooms created without an explicit
// room_version, and the "default" of the m.room_versions capability, unless
// the operator chooses another (--default-room-version). Version 10 is what
// Synapse and Dendrite create and what clients and test suites expect: the
// creator is listed in m.room.power_levels, which version 12 drops.
const DefaultRoomVersion = RoomVersion10

// SupportedRoomVersions returns the "available" map of the m.room_versions
// capability: every version Strand can create and authorise, each "stable".
// The map is fresh on every call, so callers may modify it.
func SupportedRoomVersions() map[RoomVersion]string {
	m := make(map[RoomVersion]string, len(versionTable))
	for v := range versionTable {
		m[v] = "stable"
	}
	return m
}

// Supported reports whether Strand implements v.
func (v RoomVersion) Supported() bool {
	_, ok := v.rules()
	return ok
}

// ParseRoomVersion returns s as a RoomVersion if Strand implements it, or an
// M_UNSUPPORTED_ROOM_VERSION error (the errcode /createRoom and /upgrade
// use for this).
func ParseRoomVersion(s string) (RoomVersion, error) {
	v := RoomVersion(s)
	if !v.Supported() {
		return "", Errorf("M_UNSUPPORTED_ROOM_VERSION", http.StatusBadRequest, "room version %q is not supported", s)
	}
	return v, nil
}

// redactionAlgorithm selects which keys survive redaction. Each value is
// the first version whose algorithm changed (rooms/fragments/*-redactions.md
// and the v8 page).
type redactionAlgorithm int

const (
	// redactV1 (versions 1–5) keeps m.room.aliases' aliases.
	redactV1 redactionAlgorithm = iota
	// redactV6 (versions 6 and 7) no longer gives m.room.aliases meaning.
	redactV6
	// redactV8 (version 8) keeps allow in m.room.join_rules.
	redactV8
	// redactV9 (versions 9 and 10) keeps join_authorised_via_users_server
	// in m.room.member.
	redactV9
	// redactV11 (versions 11 and 12): fewer top-level keys, the whole
	// create content, invite in power levels, redacts in redactions,
	// third_party_invite.signed in member events.
	redactV11
)

// eventIDFormat is how a version names its events.
type eventIDFormat int

const (
	// idOpaque (versions 1 and 2): "$opaque:server", chosen by the server
	// that creates the event and carried in the event's event_id.
	idOpaque eventIDFormat = iota
	// idHashStd (version 3): "$" and the reference hash in standard
	// unpadded base64 (which may hold '+' and '/').
	idHashStd
	// idHashURL (version 4 on): the reference hash in URL-safe unpadded
	// base64.
	idHashURL
)

// versionRules are the differences between room versions. Every rule that
// depends on the version reads a field here, so the table below is the one
// place that says what each version is.
type versionRules struct {
	version RoomVersion
	eventID eventIDFormat
	// topLevelRedacts: m.room.redaction carries redacts at the top level
	// (v1–v10) rather than in content (v11+).
	topLevelRedacts bool
	// creatorInContent: the room's creator is content.creator of the create
	// event, which must be present (v1–v10); later it is the create's sender.
	creatorInContent bool
	// createInAuthEvents: every non-create event cites the create event in
	// auth_events (v1–v11). In v12 the room ID stands in for it.
	createInAuthEvents bool
	// hashRoomIDs: the room ID is the create event's ID with a '!' sigil,
	// create events carry no room_id, and room creators (sender plus
	// content.additional_creators) have infinite power (v12).
	hashRoomIDs bool
	// aliasesRule: authorisation rule 4 of v1–v5, m.room.aliases events are
	// allowed when their state_key is the sender's server, membership or not.
	aliasesRule bool
	// redactionRule: authorisation rule 11 of v1–v2, a redaction needs the
	// redact level or an event_id on the same server as the target's.
	redactionRule bool
	// notificationsLevels: the power levels rules also guard the
	// notifications object (v6+).
	notificationsLevels bool
	// stringyPowerLevels: power levels may be integers written as strings
	// (v1–v9, rooms/fragments/v1-stringy-power-levels.md).
	stringyPowerLevels bool
	// knocking: the knock join rule and membership (v7+).
	knocking bool
	// restrictedJoins: the restricted join rule and
	// join_authorised_via_users_server (v8+).
	restrictedJoins bool
	// knockRestricted: the knock_restricted join rule (v10+).
	knockRestricted bool
	redaction       redactionAlgorithm
}

// versionTable holds the rules of every supported version. Each entry is
// its predecessor with the changes its page lists.
var versionTable = func() map[RoomVersion]versionRules {
	t := make(map[RoomVersion]versionRules, 12)
	r := versionRules{version: RoomVersion1, eventID: idOpaque, topLevelRedacts: true, creatorInContent: true,
		createInAuthEvents: true, aliasesRule: true, redactionRule: true, stringyPowerLevels: true, redaction: redactV1}
	t[RoomVersion1] = r
	r.version = RoomVersion2 // state resolution v2: nothing on one server with one order
	t[r.version] = r
	r.version, r.eventID, r.redactionRule = RoomVersion3, idHashStd, false
	t[r.version] = r
	r.version, r.eventID = RoomVersion4, idHashURL
	t[r.version] = r
	r.version = RoomVersion5 // signing key validity: Strand signs with its own key only
	t[r.version] = r
	r.version, r.aliasesRule, r.notificationsLevels, r.redaction = RoomVersion6, false, true, redactV6
	t[r.version] = r
	r.version, r.knocking = RoomVersion7, true
	t[r.version] = r
	r.version, r.restrictedJoins, r.redaction = RoomVersion8, true, redactV8
	t[r.version] = r
	r.version, r.redaction = RoomVersion9, redactV9
	t[r.version] = r
	r.version, r.knockRestricted, r.stringyPowerLevels = RoomVersion10, true, false
	t[r.version] = r
	r.version, r.topLevelRedacts, r.creatorInContent, r.redaction = RoomVersion11, false, false, redactV11
	t[r.version] = r
	r.version, r.createInAuthEvents, r.hashRoomIDs = RoomVersion12, false, true
	t[r.version] = r
	return t
}()

func (v RoomVersion) rules() (versionRules, bool) {
	r, ok := versionTable[v]
	return r, ok
}

func (v RoomVersion) checkedRules() (versionRules, error) {
	r, ok := v.rules()
	if !ok {
		return r, Errorf("M_UNSUPPORTED_ROOM_VERSION", http.StatusBadRequest, "room version %q is not supported", string(v))
	}
	return r, nil
}

// HashedRoomIDs reports whether rooms of v are named by their create
// event's ID (version 12), rather than by an ID the server picks.
func (v RoomVersion) HashedRoomIDs() bool {
	r, ok := v.rules()
	return ok && r.hashRoomIDs
}

// CreatorsHaveInfinitePower reports whether v gives room creators
// unlimited power instead of listing them in m.room.power_levels (v12).
func (v RoomVersion) CreatorsHaveInfinitePower() bool { return v.HashedRoomIDs() }

// CreatorInContent reports whether v names the room's creator in
// content.creator of m.room.create (versions 1–10), which createRoom must
// then set.
func (v RoomVersion) CreatorInContent() bool {
	r, ok := v.rules()
	return ok && r.creatorInContent
}

// Knocking reports whether v has the knock join rule and membership (7+).
func (v RoomVersion) Knocking() bool {
	r, ok := v.rules()
	return ok && r.knocking
}

// KnockRestricted reports whether v has the knock_restricted join rule (10+).
func (v RoomVersion) KnockRestricted() bool {
	r, ok := v.rules()
	return ok && r.knockRestricted
}

// RestrictedJoins reports whether v has the restricted join rule (8+).
func (v RoomVersion) RestrictedJoins() bool {
	r, ok := v.rules()
	return ok && r.restrictedJoins
}
