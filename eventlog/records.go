package eventlog

import (
	"encoding/json"
	"time"
)

// Record is one fact on the log. Its Type travels in the Strand-Type header;
// the body is the record's JSON. Record types are the log's schema: add
// fields compatibly and never change the meaning of an existing one, since
// replay reads every record ever written.
type Record interface {
	RecordType() string
}

// Account records, all on the ACCOUNTS stream under UserSubject(user).

// UserRegistered creates an account. It is the first record on the user's
// subject (appended with expected sequence 0). Device, when set, is the
// device and token the registration logged in with.
type UserRegistered struct {
	UserID       string         `json:"user_id"`
	PasswordHash string         `json:"password_hash,omitempty"` // bcrypt; empty: no password login
	Admin        bool           `json:"admin,omitempty"`
	Displayname  string         `json:"displayname,omitempty"`
	TS           int64          `json:"ts"`
	Device       *DeviceCreated `json:"device,omitempty"`
}

// DeviceCreated adds a device with a fresh access token, or, when the
// device already exists, replaces its token (and so revokes the old one,
// its refresh token and any older token still valid after a refresh).
// RefreshHash is set when the client asked for a refresh token; the access
// token then expires at ExpiresTS (0: never).
type DeviceCreated struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	TokenHash   string `json:"token_hash"` // hex SHA-256 of the access token
	TS          int64  `json:"ts"`
	RefreshHash string `json:"refresh_hash,omitempty"` // hex SHA-256 of the refresh token
	ExpiresTS   int64  `json:"expires_ts,omitempty"`   // unix ms; 0: the token does not expire
}

// TokenRefreshed exchanges a device's refresh token (RefreshHash, which it
// consumes) for a new access token and a new refresh token. The device's
// current access token stays valid, as its previous token, until the new
// one is first used (TokenUsed) or it expires; a previous token older than
// that is revoked. Applied only while RefreshHash is still the device's
// refresh token; the api appends it expecting the user's subject sequence
// it checked that against, so a refresh token is exchanged at most once.
type TokenRefreshed struct {
	UserID         string `json:"user_id"`
	DeviceID       string `json:"device_id"`
	RefreshHash    string `json:"refresh_hash"`
	NewTokenHash   string `json:"new_token_hash"`
	NewRefreshHash string `json:"new_refresh_hash"`
	ExpiresTS      int64  `json:"expires_ts,omitempty"`
	TS             int64  `json:"ts"`
}

// TokenUsed records the first use of a device's access token issued by a
// refresh: the device's previous access token is revoked. Applied only
// while TokenHash is still the device's current token.
type TokenUsed struct {
	UserID    string `json:"user_id"`
	DeviceID  string `json:"device_id"`
	TokenHash string `json:"token_hash"`
}

// PusherSet creates, replaces (same app ID and pushkey) or, with Kind
// empty, deletes one of the user's pushers. The pusher belongs to
// DeviceID, the device whose token set it, and is deleted with it. Unless
// Append, pushers of other users with the same app ID and pushkey go (the
// push key now belongs to this user).
type PusherSet struct {
	UserID            string          `json:"user_id"`
	DeviceID          string          `json:"device_id"`
	AppID             string          `json:"app_id"`
	Pushkey           string          `json:"pushkey"`
	Kind              string          `json:"kind,omitempty"`
	AppDisplayName    string          `json:"app_display_name,omitempty"`
	DeviceDisplayName string          `json:"device_display_name,omitempty"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang,omitempty"`
	Data              json.RawMessage `json:"data,omitempty"`
	Append            bool            `json:"append,omitempty"`
}

// DeviceUpdated renames a device.
type DeviceUpdated struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name"`
}

// DevicesDeleted removes devices and their tokens. With All set, every
// device the user has when the record is applied goes, except Keep.
type DevicesDeleted struct {
	UserID    string   `json:"user_id"`
	DeviceIDs []string `json:"device_ids,omitempty"`
	All       bool     `json:"all,omitempty"`
	Keep      string   `json:"keep,omitempty"`
}

// PasswordChanged sets a new password hash. With LogoutDevices set, every
// device except KeepDevice is removed in the same step.
type PasswordChanged struct {
	UserID        string `json:"user_id"`
	PasswordHash  string `json:"password_hash"`
	LogoutDevices bool   `json:"logout_devices,omitempty"`
	KeepDevice    string `json:"keep_device,omitempty"`
}

// UserDeactivated disables an account for good and removes its devices.
type UserDeactivated struct {
	UserID string `json:"user_id"`
}

// End-to-end encryption records. The server keeps and relays keys and
// to-device messages; it never sees plaintext. All are on the ACCOUNTS
// stream under UserSubject of the user whose keys or messages they are
// (ToDeviceSent: of the sender).

// KeysUploaded stores what a device uploaded to /keys/upload, in one
// step: its identity keys (the signed DeviceKeys object), one-time keys by
// "algorithm:key_id" (a key ID already held keeps its key), and fallback
// keys by "algorithm:key_id" (one per algorithm, replacing the previous).
type KeysUploaded struct {
	UserID       string                     `json:"user_id"`
	DeviceID     string                     `json:"device_id"`
	DeviceKeys   json.RawMessage            `json:"device_keys,omitempty"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys,omitempty"`
}

// KeysClaimed consumes one-time keys of UserID's devices (a fallback key
// is marked used instead). It is appended expecting the user's subject
// sequence the claim was chosen at, so no key is handed out twice.
type KeysClaimed struct {
	UserID string       `json:"user_id"`
	Claims []ClaimedKey `json:"claims"`
}

// ClaimedKey is one key a claim took.
type ClaimedKey struct {
	DeviceID string `json:"device_id"`
	KeyID    string `json:"key_id"` // "algorithm:key_id"
	Fallback bool   `json:"fallback,omitempty"`
}

// ToDeviceSent carries to-device messages: Messages[user][device] is the
// content for that device ("*": every device the user has when the
// record is applied).
type ToDeviceSent struct {
	Sender       string                                `json:"sender"`
	SenderDevice string                                `json:"sender_device"`
	TxnID        string                                `json:"txn_id"`
	Type         string                                `json:"type"`
	Messages     map[string]map[string]json.RawMessage `json:"messages"`
}

// ToDeviceAcked records that a device has received its to-device
// messages up to ACCOUNTS sequence Through (it synced with a token at or
// beyond it), so they are not delivered again.
type ToDeviceAcked struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	Through  uint64 `json:"through"`
}

// CrossSigningKeysSet stores a user's cross-signing public keys; a nil
// key leaves the stored one as it is.
type CrossSigningKeysSet struct {
	UserID      string          `json:"user_id"`
	Master      json.RawMessage `json:"master,omitempty"`
	SelfSigning json.RawMessage `json:"self_signing,omitempty"`
	UserSigning json.RawMessage `json:"user_signing,omitempty"`
}

// SignaturesAdded stores signatures the user made (with a device or a
// cross-signing key) of keys: Signatures[user][key ID] holds the
// signatures object to merge into that key's.
type SignaturesAdded struct {
	UserID     string                                `json:"user_id"`
	Signatures map[string]map[string]json.RawMessage `json:"signatures"`
}

// Server-side key backup (/room_keys): encrypted room keys a client backs
// up, under backup versions. On the user's subject.

// KeyBackupVersionSet creates backup Version (with Create; the api picks
// the next number, appending expecting the user's subject sequence it
// read) or replaces an existing version's auth data.
type KeyBackupVersionSet struct {
	UserID    string          `json:"user_id"`
	Version   int64           `json:"version"`
	Create    bool            `json:"create,omitempty"`
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
}

// KeyBackupVersionDeleted deletes a backup version and its keys.
type KeyBackupVersionDeleted struct {
	UserID  string `json:"user_id"`
	Version int64  `json:"version"`
}

// RoomKeysPut stores backed-up room keys: Keys[room][session] is a
// KeyBackupData object. A stored key is replaced only by a better one
// (verified over not, then lower first_message_index, then lower
// forwarded_count), decided when the record is applied.
type RoomKeysPut struct {
	UserID  string                                `json:"user_id"`
	Version int64                                 `json:"version"`
	Keys    map[string]map[string]json.RawMessage `json:"keys"`
}

// RoomKeysDeleted deletes backed-up keys of a version: all of them, a
// room's (RoomID), or one session's (RoomID and SessionID).
type RoomKeysDeleted struct {
	UserID    string `json:"user_id"`
	Version   int64  `json:"version"`
	RoomID    string `json:"room_id,omitempty"`
	SessionID string `json:"session_id,omitempty"`
}

// ContentReported is a user's report of an event (RoomID and EventID), a
// room (RoomID) or a user (TargetUserID) to the server's administrators. A
// report is a fact the server keeps, so it is a record like any other
// rather than a log line; its time is the record's.
type ContentReported struct {
	UserID       string `json:"user_id"` // the reporter
	RoomID       string `json:"room_id,omitempty"`
	EventID      string `json:"event_id,omitempty"`
	TargetUserID string `json:"target_user_id,omitempty"`
	Reason       string `json:"reason"`
	// Score is the -100 (most offensive) to 0 rating that clients sent
	// before Matrix 1.18 removed it; nil when not given.
	Score *int `json:"score,omitempty"`
}

// FilterCreated stores a sync filter under an ID chosen by the api.
type FilterCreated struct {
	UserID   string          `json:"user_id"`
	FilterID string          `json:"filter_id"`
	Filter   json.RawMessage `json:"filter"`
}

// AccountDataSet sets global (RoomID empty) or per-room account data.
type AccountDataSet struct {
	UserID  string          `json:"user_id"`
	RoomID  string          `json:"room_id,omitempty"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// ProfileSet changes profile fields; a nil field is left as it is.
type ProfileSet struct {
	UserID      string  `json:"user_id"`
	Displayname *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// NonceUsed marks a single-use nonce as used (NONCES stream, first record
// on NonceSubject). Purpose names what the nonce was for.
type NonceUsed struct {
	Purpose string `json:"purpose"`
	TS      int64  `json:"ts"`
}

// Room records, on the ROOMS stream.

// RoomEvents appends events of one room, all or none: room creation puts
// its whole initial event sequence in one record, so no client ever sees a
// half-created room. Events are complete signed PDUs of RoomVersion, in
// order. TxnID and DeviceID identify the client transaction that sent the
// (single) event, for idempotent retries.
type RoomEvents struct {
	RoomID      string            `json:"room_id"`
	RoomVersion string            `json:"room_version"`
	Events      []json.RawMessage `json:"events"`
	Sender      string            `json:"txn_sender,omitempty"`
	DeviceID    string            `json:"txn_device,omitempty"`
	TxnID       string            `json:"txn_id,omitempty"`
	// Published sets the room's visibility in the public room directory
	// together with the events (createRoom's "visibility").
	Published *bool `json:"published,omitempty"`
}

// RoomPublished changes a room's visibility in the public room directory.
type RoomPublished struct {
	RoomID    string `json:"room_id"`
	Published bool   `json:"published"`
}

// AliasSet maps an alias to a room. Appended on AliasSubject with the
// subject's last sequence, so an alias has one room at a time.
type AliasSet struct {
	Alias   string `json:"alias"`
	RoomID  string `json:"room_id"`
	Creator string `json:"creator"`
}

// AliasDeleted frees an alias.
type AliasDeleted struct {
	Alias  string `json:"alias"`
	RoomID string `json:"room_id"`
}

// RoomForgotten hides a left room from a user. It is on the room's
// subject, ordered with the user's membership events: a later join or
// invite un-forgets the room.
type RoomForgotten struct {
	UserID string `json:"user_id"`
	RoomID string `json:"room_id"`
}

// ReceiptSet records that a user has read up to an event (RECEIPTS).
type ReceiptSet struct {
	RoomID   string `json:"room_id"`
	UserID   string `json:"user_id"`
	Type     string `json:"type"` // m.read or m.read.private
	EventID  string `json:"event_id"`
	ThreadID string `json:"thread_id,omitempty"`
	TS       int64  `json:"ts"`
}

// TypingSet starts (until ExpiresTS) or stops a user typing in a room
// (EPHEMERAL). A stop with ExpiresTS set is an expiry, written by the sync
// workers when a notice runs out: it ends only the notice that expired at
// that time, not a newer one.
type TypingSet struct {
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Typing    bool   `json:"typing"`
	ExpiresTS int64  `json:"expires_ts,omitempty"`
}

// PresenceSet is a user's presence as of LastActiveTS (EPHEMERAL).
type PresenceSet struct {
	UserID       string  `json:"user_id"`
	Presence     string  `json:"presence"` // online, unavailable, offline
	StatusMsg    *string `json:"status_msg,omitempty"`
	LastActiveTS int64   `json:"last_active_ts"`
}

// Presence decay: no activity for PresenceIdleAfter reads as
// unavailable, for PresenceOfflineAfter as offline.
const (
	PresenceIdleAfter    = 5 * time.Minute
	PresenceOfflineAfter = 30 * time.Minute
)

// Effective is the presence p reads as at now, after inactivity decay, with
// last_active_ago and currently_active. A nil p (no presence known) is
// offline.
func (p *PresenceSet) Effective(now time.Time) (presence string, lastActiveAgo int64, currentlyActive bool) {
	if p == nil {
		return "offline", 0, false
	}
	ago := max(0, now.UnixMilli()-p.LastActiveTS)
	idle := time.Duration(ago) * time.Millisecond
	presence = p.Presence
	switch {
	case presence != "offline" && idle > PresenceOfflineAfter:
		presence = "offline"
	case presence == "online" && idle > PresenceIdleAfter:
		presence = "unavailable"
	}
	return presence, ago, presence == "online" && idle < time.Minute
}

func (ReceiptSet) RecordType() string  { return "receipt.set" }
func (TypingSet) RecordType() string   { return "typing.set" }
func (PresenceSet) RecordType() string { return "presence.set" }

func (RoomEvents) RecordType() string    { return "room.events" }
func (RoomPublished) RecordType() string { return "room.published" }
func (AliasSet) RecordType() string      { return "alias.set" }
func (AliasDeleted) RecordType() string  { return "alias.deleted" }
func (RoomForgotten) RecordType() string { return "room.forgotten" }

func (UserRegistered) RecordType() string  { return "user.registered" }
func (DeviceCreated) RecordType() string   { return "device.created" }
func (TokenRefreshed) RecordType() string  { return "token.refreshed" }
func (TokenUsed) RecordType() string       { return "token.used" }
func (PusherSet) RecordType() string       { return "pusher.set" }
func (DeviceUpdated) RecordType() string   { return "device.updated" }
func (DevicesDeleted) RecordType() string  { return "devices.deleted" }
func (PasswordChanged) RecordType() string { return "password.changed" }
func (UserDeactivated) RecordType() string { return "user.deactivated" }
func (FilterCreated) RecordType() string   { return "filter.created" }
func (ContentReported) RecordType() string { return "content.reported" }
func (AccountDataSet) RecordType() string  { return "account_data.set" }
func (ProfileSet) RecordType() string      { return "profile.set" }

func (NonceUsed) RecordType() string { return "nonce.used" }

func (KeysUploaded) RecordType() string        { return "keys.uploaded" }
func (KeysClaimed) RecordType() string         { return "keys.claimed" }
func (ToDeviceSent) RecordType() string        { return "to_device.sent" }
func (ToDeviceAcked) RecordType() string       { return "to_device.acked" }
func (CrossSigningKeysSet) RecordType() string { return "cross_signing.set" }
func (SignaturesAdded) RecordType() string     { return "signatures.added" }

func (KeyBackupVersionSet) RecordType() string     { return "key_backup.version_set" }
func (KeyBackupVersionDeleted) RecordType() string { return "key_backup.version_deleted" }
func (RoomKeysPut) RecordType() string             { return "room_keys.put" }
func (RoomKeysDeleted) RecordType() string         { return "room_keys.deleted" }
