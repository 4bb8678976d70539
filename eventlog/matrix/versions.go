package matrix

import "net/http"

// RoomVersion names a set of rules for a room's events: their format, how
// they are redacted, hashed into IDs and authorised. The spec treats
// versions as opaque strings; content.room_version of m.room.create fixes a
// room's version for good.
type RoomVersion string

// The room versions Strand implements. Version 12 is the spec's default
// (content/rooms/_index.md: "Servers SHOULD use room version 12 as the
// default room version when creating new rooms"); 10 and 11 are accepted
// for rooms created with an explicit room_version. Older versions differ in
// ways (string power levels, non-hash event IDs, v1 state resolution) that a
// new server has no reason to carry.
const (
	RoomVersion10 RoomVersion = "10"
	RoomVersion11 RoomVersion = "11"
	RoomVersion12 RoomVersion = "12"
)

// DefaultRoomVersion is the version of rooms created without an explicit
// room_version, and the "default" of the m.room_versions capability.
const DefaultRoomVersion = RoomVersion12

// SupportedRoomVersions returns the "available" map of the m.room_versions
// capability: every version Strand can create and authorise, each "stable".
// The map is fresh on every call, so callers may modify it.
func SupportedRoomVersions() map[RoomVersion]string {
	return map[RoomVersion]string{
		RoomVersion10: "stable",
		RoomVersion11: "stable",
		RoomVersion12: "stable",
	}
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

// redactionAlgorithm selects which keys survive redaction.
type redactionAlgorithm int

const (
	// redactV9 is the algorithm of versions 9 and 10 (rooms/fragments/v9-redactions.md).
	redactV9 redactionAlgorithm = iota
	// redactV11 is the algorithm of versions 11 and 12 (rooms/fragments/v11-redactions.md).
	redactV11
)

// versionRules are the differences between the versions Strand implements.
type versionRules struct {
	version RoomVersion
	// topLevelRedacts: m.room.redaction carries redacts at the top level
	// (v10) rather than in content (v11+).
	topLevelRedacts bool
	// creatorInContent: the room's creator is content.creator of the create
	// event, which must be present (v10); later it is the create's sender.
	creatorInContent bool
	// createInAuthEvents: every non-create event cites the create event in
	// auth_events (v10, v11). In v12 the room ID stands in for it.
	createInAuthEvents bool
	// hashRoomIDs: the room ID is the create event's ID with a '!' sigil,
	// create events carry no room_id, and room creators (sender plus
	// content.additional_creators) have infinite power (v12).
	hashRoomIDs bool
	redaction   redactionAlgorithm
}

func (v RoomVersion) rules() (versionRules, bool) {
	switch v {
	case RoomVersion10:
		return versionRules{version: v, topLevelRedacts: true, creatorInContent: true, createInAuthEvents: true, redaction: redactV9}, true
	case RoomVersion11:
		return versionRules{version: v, createInAuthEvents: true, redaction: redactV11}, true
	case RoomVersion12:
		return versionRules{version: v, hashRoomIDs: true, redaction: redactV11}, true
	}
	return versionRules{}, false
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
