package eventlog

import (
	"encoding/json"
	"fmt"
)

// RecordKind describes one record type: the log's schema in one table.
type RecordKind struct {
	// Type is the record's Strand-Type header (its RecordType).
	Type string
	// New returns an empty record of the type, to decode into.
	New func() Record
	// Stream is the stream its subjects belong to.
	Stream string
	// Revokes tells whether the record can end a session (a device
	// deleted or given a new token, a logout, a deactivation): session
	// caches drop the cached sessions of its user_id when they read one.
	Revokes bool
}

// Whether a record type can end sessions; every table entry says which.
const (
	keepsSessions = false
	endsSessions  = true
)

// kind is one entry of recordKinds, named by R's RecordType.
func kind[R any, P interface {
	*R
	Record
}](stream string, revokes bool) RecordKind {
	return RecordKind{Type: P(new(R)).RecordType(), New: func() Record { return P(new(R)) }, Stream: stream, Revokes: revokes}
}

// recordKinds is every record type Strand writes. Adding a type takes its
// struct and RecordType method (records.go), one line here, and a handler
// in each reader, which the tests of those readers hold to this table:
// projector.apply (what the projection does with it, for the streams it
// projects), syncstream's wakes (whom it wakes) and, through Revokes, the
// session caches. docs/ARCHITECTURE.md ("Record types") has the list.
var recordKinds = []RecordKind{
	kind[UserRegistered](StreamAccounts, keepsSessions),
	kind[DeviceCreated](StreamAccounts, endsSessions), // a new token for a device ends its old one
	kind[TokenRefreshed](StreamAccounts, endsSessions),
	kind[TokenUsed](StreamAccounts, endsSessions),
	kind[DeviceUpdated](StreamAccounts, keepsSessions),
	kind[PusherSet](StreamAccounts, keepsSessions),
	kind[DevicesDeleted](StreamAccounts, endsSessions),
	kind[PasswordChanged](StreamAccounts, endsSessions),
	kind[UserDeactivated](StreamAccounts, endsSessions),
	kind[FilterCreated](StreamAccounts, keepsSessions),
	kind[ContentReported](StreamAccounts, keepsSessions),
	kind[AccountDataSet](StreamAccounts, keepsSessions),
	kind[ProfileSet](StreamAccounts, keepsSessions),
	kind[KeysUploaded](StreamAccounts, keepsSessions),
	kind[KeysClaimed](StreamAccounts, keepsSessions),
	kind[ToDeviceSent](StreamAccounts, keepsSessions),
	kind[ToDeviceAcked](StreamAccounts, keepsSessions),
	kind[CrossSigningKeysSet](StreamAccounts, keepsSessions),
	kind[SignaturesAdded](StreamAccounts, keepsSessions),
	kind[KeyBackupVersionSet](StreamAccounts, keepsSessions),
	kind[KeyBackupVersionDeleted](StreamAccounts, keepsSessions),
	kind[RoomKeysPut](StreamAccounts, keepsSessions),
	kind[RoomKeysDeleted](StreamAccounts, keepsSessions),

	kind[RoomEvents](StreamRooms, keepsSessions),
	kind[RoomPublished](StreamRooms, keepsSessions),
	kind[AliasSet](StreamRooms, keepsSessions),
	kind[AliasDeleted](StreamRooms, keepsSessions),
	kind[RoomForgotten](StreamRooms, keepsSessions),

	kind[ReceiptSet](StreamReceipts, keepsSessions),

	kind[TypingSet](StreamEphemeral, keepsSessions),
	kind[PresenceSet](StreamEphemeral, keepsSessions),

	kind[NonceUsed](StreamNonces, keepsSessions),
}

// recordKindByType indexes recordKinds.
var recordKindByType = func() map[string]RecordKind {
	m := make(map[string]RecordKind, len(recordKinds))
	for _, k := range recordKinds {
		m[k.Type] = k
	}
	return m
}()

// RecordKinds returns every record type, in the table's order.
func RecordKinds() []RecordKind { return append([]RecordKind(nil), recordKinds...) }

// KindOf returns the description of a record type; ok is false for a type
// this version does not know.
func KindOf(typ string) (k RecordKind, ok bool) {
	k, ok = recordKindByType[typ]
	return k, ok
}

// Revokes reports whether a record of this type can end a session.
// Unknown types count as revoking: a type written by a newer Strand, or
// by hand, fails safe (a cache forgets rather than keeps).
func Revokes(typ string) bool {
	k, ok := recordKindByType[typ]
	return !ok || k.Revokes
}

// Decode parses a record body given its type header. An unknown type is an
// error: a projector must never skip a fact silently.
func Decode(typ string, data []byte) (Record, error) {
	k, ok := recordKindByType[typ]
	if !ok {
		return nil, fmt.Errorf("unknown record type %q", typ)
	}
	r := k.New()
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("decode %s record: %w", typ, err)
	}
	return r, nil
}
