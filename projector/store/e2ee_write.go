package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"strand/eventlog"
)

// Projection of the end-to-end encryption records. Map iteration is
// sorted wherever it decides row contents, so a replay writes the same
// rows.

// keyAlgorithm is the algorithm part of an "algorithm:key_id".
func keyAlgorithm(keyID string) string {
	alg, _, _ := strings.Cut(keyID, ":")
	return alg
}

// deviceListChanged records that user's device list changed at seq.
func (t *Tx) deviceListChanged(seq uint64, user string) {
	t.queue("INSERT INTO device_list_changes (user_id, pos) VALUES ($1, $2) ON CONFLICT DO NOTHING", user, int64(seq))
}

// dropDeviceData removes the keys and pending messages of user's devices
// that no longer exist (queued after the device rows were deleted).
func (t *Tx) dropDeviceData(seq uint64, user string) {
	for _, table := range []string{"device_keys", "one_time_keys", "fallback_keys", "to_device", "pushers"} {
		t.queue(`DELETE FROM `+table+` k WHERE k.user_id = $1
			AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = k.user_id AND d.device_id = k.device_id)`, user)
	}
	t.queue(`DELETE FROM key_signatures s WHERE s.target_user = $1
		AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = s.target_user AND d.device_id = s.target_key)
		AND NOT EXISTS (SELECT 1 FROM cross_signing_keys c WHERE c.user_id = s.target_user
			AND c.key->'keys' ?| array[s.target_key, 'ed25519:' || s.target_key])`, user)
	t.deviceListChanged(seq, user)
}

// UploadKeys stores a device's uploaded keys. Keys of a device that no
// longer exists are dropped.
func (t *Tx) UploadKeys(seq uint64, r *eventlog.KeysUploaded) {
	if len(r.DeviceKeys) > 0 {
		t.queue(`INSERT INTO device_keys (user_id, device_id, keys) SELECT $1::text, $2::text, $3::jsonb
		WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2)
		ON CONFLICT (user_id, device_id) DO UPDATE SET keys = EXCLUDED.keys`,
			r.UserID, r.DeviceID, []byte(r.DeviceKeys))
		t.deviceListChanged(seq, r.UserID)
	}
	for _, id := range slices.Sorted(maps.Keys(r.OneTimeKeys)) {
		t.queue(`INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key, stream_seq) SELECT $1::text, $2::text, $3::text, $4::text, $5::jsonb, $6::bigint
			WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2)
			ON CONFLICT DO NOTHING`, r.UserID, r.DeviceID, keyAlgorithm(id), id, []byte(r.OneTimeKeys[id]), int64(seq))
	}
	// Uploading the same fallback key again leaves whether it was used as
	// it is; a new one is unused.
	for _, id := range slices.Sorted(maps.Keys(r.FallbackKeys)) {
		t.queue(`INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key) SELECT $1::text, $2::text, $3::text, $4::text, $5::jsonb
			WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2)
			ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
				used = fallback_keys.used AND fallback_keys.key_id = EXCLUDED.key_id AND fallback_keys.key = EXCLUDED.key,
				key_id = EXCLUDED.key_id, key = EXCLUDED.key`,
			r.UserID, r.DeviceID, keyAlgorithm(id), id, []byte(r.FallbackKeys[id]))
	}
}

// ClaimKeys consumes claimed one-time keys and marks claimed fallback
// keys used.
func (t *Tx) ClaimKeys(r *eventlog.KeysClaimed) {
	for _, c := range r.Claims {
		if c.Fallback {
			t.queue("UPDATE fallback_keys SET used = true WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
				r.UserID, c.DeviceID, c.KeyID)
			continue
		}
		t.queue("DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3", r.UserID, c.DeviceID, c.KeyID)
	}
}

// SendToDevice queues to-device messages for the devices they name that
// exist ("*": all of the user's devices).
func (t *Tx) SendToDevice(seq uint64, r *eventlog.ToDeviceSent) {
	if r.TxnID != "" {
		t.queue("INSERT INTO to_device_txns (sender, device_id, txn_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
			r.Sender, r.SenderDevice, r.TxnID)
	}
	idx := 0
	for _, user := range slices.Sorted(maps.Keys(r.Messages)) {
		for _, device := range slices.Sorted(maps.Keys(r.Messages[user])) {
			content := []byte(r.Messages[user][device])
			if device == "*" {
				t.queue(`INSERT INTO to_device (user_id, device_id, pos, idx, sender, type, content)
					SELECT user_id, device_id, $2::bigint, $3::int, $4::text, $5::text, $6::jsonb FROM devices WHERE user_id = $1
					ON CONFLICT DO NOTHING`, user, int64(seq), idx, r.Sender, r.Type, content)
			} else {
				t.queue(`INSERT INTO to_device (user_id, device_id, pos, idx, sender, type, content)
					SELECT $1::text, $2::text, $3::bigint, $4::int, $5::text, $6::text, $7::jsonb
					WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2)
					ON CONFLICT DO NOTHING`, user, device, int64(seq), idx, r.Sender, r.Type, content)
			}
			idx++
		}
	}
}

// AckToDevice drops the messages a device has received.
func (t *Tx) AckToDevice(r *eventlog.ToDeviceAcked) {
	t.queue("DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND pos <= $3", r.UserID, r.DeviceID, int64(r.Through))
}

// SetCrossSigningKeys stores the cross-signing keys that are set.
func (t *Tx) SetCrossSigningKeys(seq uint64, r *eventlog.CrossSigningKeysSet) {
	for _, k := range []struct {
		typ string
		key json.RawMessage
	}{{"master", r.Master}, {"self_signing", r.SelfSigning}, {"user_signing", r.UserSigning}} {
		if len(k.key) == 0 {
			continue
		}
		t.queue(`INSERT INTO cross_signing_keys (user_id, key_type, key) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, key_type) DO UPDATE SET key = EXCLUDED.key`, r.UserID, k.typ, []byte(k.key))
	}
	t.deviceListChanged(seq, r.UserID)
}

// AddSignatures stores signatures of keys, each under its signer and
// signing key.
func (t *Tx) AddSignatures(seq uint64, r *eventlog.SignaturesAdded) error {
	for _, target := range slices.Sorted(maps.Keys(r.Signatures)) {
		for _, keyID := range slices.Sorted(maps.Keys(r.Signatures[target])) {
			var sigs map[string]map[string]string
			if err := json.Unmarshal(r.Signatures[target][keyID], &sigs); err != nil {
				return Unappliable(fmt.Errorf("signatures of %s %s: %w", target, keyID, err))
			}
			for _, signer := range slices.Sorted(maps.Keys(sigs)) {
				for _, signingKey := range slices.Sorted(maps.Keys(sigs[signer])) {
					t.queue(`INSERT INTO key_signatures (target_user, target_key, signer, signing_key, signature)
						VALUES ($1, $2, $3, $4, $5)
						ON CONFLICT (target_user, target_key, signer, signing_key) DO UPDATE SET signature = EXCLUDED.signature`,
						target, keyID, signer, signingKey, sigs[signer][signingKey])
				}
			}
		}
		t.deviceListChanged(seq, target)
	}
	return nil
}
