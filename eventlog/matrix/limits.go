package matrix

// What may be appended. Whatever reaches the log is permanent (the streams
// refuse deletion), and a projector must be able to apply every record. So
// every string a client chooses that becomes an ID, a key or an indexed
// column of a projection is bounded here, before the append, and every JSON
// value that will be stored is checked (CheckStoredJSON). A PostgreSQL
// btree index entry holds at most about 2,700 bytes (SQLSTATE 54000 beyond);
// the bounds keep even the widest composite key (key_signatures: four
// 255-byte columns) well under that.
//
// The bounds are bytes of UTF-8, not characters.
const (
	// MaxEventTypeBytes and MaxStateKeyBytes are the spec's limits on an
	// event's type and state_key ("Size limits"). Account data types,
	// to-device event types and relation types are event types too.
	MaxEventTypeBytes = 255
	MaxStateKeyBytes  = 255

	// MaxTxnIDBytes bounds client transaction IDs (send, redact,
	// sendToDevice). The spec sets none; they are keyed in events_txn and
	// to_device_txns and carried in a Nats-Msg-Id, and clients use short
	// random strings or counters.
	MaxTxnIDBytes = 255

	// MaxDeviceIDBytes bounds client-chosen device IDs (register, login,
	// to-device recipients, device deletions). The spec sets none; a device
	// ID is half of the devices primary key and of every e2ee key's.
	MaxDeviceIDBytes = 255

	// MaxKeyIDBytes bounds key IDs ("algorithm:key_id") in /keys/upload,
	// /keys/signatures/upload and cross-signing: the spec leaves them
	// open, real ones are under 60 bytes, and they are keyed in
	// one_time_keys, fallback_keys and key_signatures.
	MaxKeyIDBytes = 255

	// MaxThreadIDBytes bounds a receipt's thread_id, which is "main" or
	// the event ID of a thread root, so an ID's limit applies.
	MaxThreadIDBytes = MaxIDLength

	// MaxPusherAppIDChars and MaxPushkeyBytes are the spec's bounds on a
	// pusher's app_id and pushkey (POST /pushers/set), which key the
	// pushers table; MaxPusherFieldBytes bounds its display strings,
	// profile tag and language, and MaxPusherDataBytes its data object.
	MaxPusherAppIDChars = 64
	MaxPushkeyBytes     = 512
	MaxPusherFieldBytes = 255
	MaxPusherDataBytes  = 4096

	// MaxPushersPerUser bounds a user's pushers. Each is sent its own
	// request for every event that notifies the user: without a bound,
	// one account could have every message in its rooms become as many
	// POSTs to any public address as it registered pushers. Clients set
	// one per device.
	MaxPushersPerUser = 64

	// MaxTagBytes bounds room tags (a key of m.tag). The spec sets no
	// limit; a tag is a name a client shows.
	MaxTagBytes = 255

	// MaxDisplayNameBytes bounds display names: a profile's, a device's
	// (initial_device_display_name, PUT /devices/{id}) and the one of a
	// shared-secret registration. 1,024 bytes hold 256 characters of any
	// script, which is what Synapse allows; a name is repeated in every
	// membership event and /sync that shows it.
	MaxDisplayNameBytes = 1024

	// MaxAvatarURLBytes bounds a profile's avatar_url (an mxc:// URI of
	// this or another server: well under 300 bytes in practice).
	MaxAvatarURLBytes = 1024

	// MaxStatusMsgBytes bounds a presence status message, which every
	// user sharing a room receives in /sync.
	MaxStatusMsgBytes = 1024

	// MaxReportReasonBytes bounds the reason of a content report
	// (/rooms/{roomId}/report, /users/{userId}/report): every report is a
	// record kept for good, and a reason is a sentence or a paragraph.
	MaxReportReasonBytes = 4096

	// MaxBackupIDBytes bounds key backup algorithm names and session IDs
	// (/room_keys); session IDs are keyed in room_keys.
	MaxBackupIDBytes = 255

	// MaxPushRuleIDBytes bounds push rule IDs; MaxPushPatternBytes a
	// content rule's glob. Both are stored in the m.push_rules account
	// data, which every rule change rewrites whole.
	MaxPushRuleIDBytes  = 255
	MaxPushPatternBytes = 1024

	// MaxMediaIDBytes bounds media IDs of a download path and uploaded
	// file names; MaxContentTypeBytes an upload's Content-Type. Both ride
	// in the media object's metadata (NATS headers).
	MaxMediaIDBytes     = 255
	MaxFileNameBytes    = 255
	MaxContentTypeBytes = 255

	// MaxJSONDepth bounds how deeply arrays and objects nest in any JSON a
	// client sends. The spec sets no limit; this one stops hostile input
	// from costing deep recursion in the decoders and in PostgreSQL's
	// jsonb parser. Real content is a handful of levels deep.
	MaxJSONDepth = 512

	// MaxJSONNumberBytes bounds the literal of a JSON number. No float64
	// or int64 needs more than 24 characters; PostgreSQL's numeric would
	// keep every digit of a longer one.
	MaxJSONNumberBytes = 64

	// MaxJSONExponent bounds a JSON number's decimal exponent. A float64
	// lies between about 4.9e-324 and 1.8e308, so with at most 64 digits no
	// number a client means needs more; PostgreSQL's numeric (which jsonb
	// stores numbers as) refuses magnitudes beyond about 1e131071 and
	// 1e-16383 ("value overflows numeric format").
	MaxJSONExponent = 400
)

// CheckLength returns an M_INVALID_PARAM error naming what unless s is 1
// to max bytes long.
func CheckLength(what, s string, limit int) error {
	if s == "" {
		return InvalidParam("%s must not be empty", what)
	}
	return CheckMaxLength(what, s, limit)
}

// CheckMaxLength is CheckLength for values that may be empty.
func CheckMaxLength(what, s string, limit int) error {
	if len(s) > limit {
		return InvalidParam("%s is longer than %d bytes", what, limit)
	}
	return nil
}
