package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"strand/eventlog"

	"github.com/jackc/pgx/v5"
)

// End-to-end encryption keys: device keys, one-time and fallback keys,
// cross-signing keys and signatures; their projection and reads. Readers
// take a querier so that the api (on the pool) and /sync (in its snapshot)
// share one query for each question. Map iteration is sorted wherever it
// decides row contents, so a replay writes the same rows. To-device
// messages are in todevice.go, device list changes in devicelists.go.

// KeysQuery is the answer to /keys/query, as the spec shapes it.
type KeysQuery struct {
	DeviceKeys      map[string]map[string]json.RawMessage
	MasterKeys      map[string]json.RawMessage
	SelfSigningKeys map[string]json.RawMessage
	UserSigningKeys map[string]json.RawMessage
}

// QueryKeys returns the device keys of the requested devices (an empty
// list: all of the user's devices) and the users' cross-signing keys.
// Signatures stored separately are merged in; of the signatures on
// another user's master key, only the requester's own are shown, and
// user-signing keys only to their owner.
func (s *Store) QueryKeys(ctx context.Context, requester string, want map[string][]string) (*KeysQuery, error) {
	out := &KeysQuery{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	users := make([]string, 0, len(want))
	for u := range want {
		users = append(users, u)
		out.DeviceKeys[u] = map[string]json.RawMessage{}
	}
	sigs, err := s.signaturesOf(ctx, users)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT k.user_id, k.device_id, k.keys, COALESCE(d.display_name, '')
		FROM device_keys k JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
		WHERE k.user_id = ANY($1) ORDER BY k.user_id, k.device_id`, users)
	if err != nil {
		return nil, fmt.Errorf("query device keys: %w", err)
	}
	type row struct {
		User, Device string
		Keys         []byte
		DisplayName  string
	}
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return nil, fmt.Errorf("query device keys: %w", err)
	}
	for _, k := range keys {
		if devs := want[k.User]; len(devs) > 0 && !slices.Contains(devs, k.Device) {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(k.Keys, &obj); err != nil {
			return nil, fmt.Errorf("stored device keys of %s %s: %w", k.User, k.Device, err)
		}
		mergeSignatures(obj, sigs[k.User][k.Device], func(string) bool { return true })
		unsigned, _ := obj["unsigned"].(map[string]any)
		if unsigned == nil {
			unsigned = map[string]any{}
		}
		if k.DisplayName != "" {
			unsigned["device_display_name"] = k.DisplayName
		}
		obj["unsigned"] = unsigned
		b, _ := json.Marshal(obj)
		out.DeviceKeys[k.User][k.Device] = b
	}

	rows, err = s.pool.Query(ctx, `SELECT user_id, key_type, key FROM cross_signing_keys WHERE user_id = ANY($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("query cross-signing keys: %w", err)
	}
	type csRow struct {
		User, Type string
		Key        []byte
	}
	cs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[csRow])
	if err != nil {
		return nil, fmt.Errorf("query cross-signing keys: %w", err)
	}
	for _, k := range cs {
		if k.Type == "user_signing" && k.User != requester {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(k.Key, &obj); err != nil {
			return nil, fmt.Errorf("stored %s key of %s: %w", k.Type, k.User, err)
		}
		if ks, ok := obj["keys"].(map[string]any); ok {
			for id := range ks {
				pub := id
				if _, after, ok := strings.Cut(id, ":"); ok {
					pub = after
				}
				mergeSignatures(obj, sigs[k.User][pub], func(signer string) bool {
					return k.Type != "master" || signer == k.User || signer == requester
				})
			}
		}
		b, _ := json.Marshal(obj)
		switch k.Type {
		case "master":
			out.MasterKeys[k.User] = b
		case "self_signing":
			out.SelfSigningKeys[k.User] = b
		case "user_signing":
			out.UserSigningKeys[k.User] = b
		}
	}
	return out, nil
}

// signature is one stored signature of a key.
type signature struct{ signer, signingKey, sig string }

// signaturesOf returns the stored signatures of users' keys, by user and
// target key.
func (s *Store) signaturesOf(ctx context.Context, users []string) (map[string]map[string][]signature, error) {
	rows, err := s.pool.Query(ctx, `SELECT target_user, target_key, signer, signing_key, signature FROM key_signatures
		WHERE target_user = ANY($1) ORDER BY target_user, target_key, signer, signing_key`, users)
	if err != nil {
		return nil, fmt.Errorf("query key signatures: %w", err)
	}
	out := map[string]map[string][]signature{}
	var user, key string
	var sg signature
	_, err = pgx.ForEachRow(rows, []any{&user, &key, &sg.signer, &sg.signingKey, &sg.sig}, func() error {
		if out[user] == nil {
			out[user] = map[string][]signature{}
		}
		out[user][key] = append(out[user][key], sg)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("query key signatures: %w", err)
	}
	return out, nil
}

// mergeSignatures adds sigs (those whose signer show allows) to a signed
// JSON object's "signatures".
func mergeSignatures(obj map[string]any, sigs []signature, show func(signer string) bool) {
	if len(sigs) == 0 {
		return
	}
	all, _ := obj["signatures"].(map[string]any)
	if all == nil {
		all = map[string]any{}
	}
	for _, sg := range sigs {
		if !show(sg.signer) {
			continue
		}
		by, _ := all[sg.signer].(map[string]any)
		if by == nil {
			by = map[string]any{}
		}
		by[sg.signingKey] = sg.sig
		all[sg.signer] = by
	}
	obj["signatures"] = all
}

// CrossSigningKey returns a user's stored cross-signing key of keyType
// (master, self_signing, user_signing), or ErrNotFound.
func (s *Store) CrossSigningKey(ctx context.Context, user, keyType string) (json.RawMessage, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, "SELECT key FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2", user, keyType).Scan(&b)
	if isNoRows(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("cross-signing key: %w", err)
	}
	return b, nil
}

// DeviceKeysOf returns one device's stored identity keys, or ErrNotFound.
func (s *Store) DeviceKeysOf(ctx context.Context, user, device string) (json.RawMessage, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, "SELECT keys FROM device_keys WHERE user_id = $1 AND device_id = $2", user, device).Scan(&b)
	if isNoRows(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("device keys: %w", err)
	}
	return b, nil
}

// OneTimeKeyIDs returns which of ids a device already holds, with their
// keys.
func (s *Store) OneTimeKeyIDs(ctx context.Context, user, device string, ids []string) (map[string]json.RawMessage, error) {
	rows, err := s.pool.Query(ctx, "SELECT key_id, key FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = ANY($3)",
		user, device, ids)
	if err != nil {
		return nil, fmt.Errorf("one-time keys: %w", err)
	}
	out := map[string]json.RawMessage{}
	var id string
	var key []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &key}, func() error {
		out[id] = append(json.RawMessage(nil), key...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("one-time keys: %w", err)
	}
	return out, nil
}

// OneTimeKeyCounts counts a device's one-time keys by algorithm.
func (s *Store) OneTimeKeyCounts(ctx context.Context, user, device string) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, "SELECT algorithm, count(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
		user, device)
	if err != nil {
		return nil, fmt.Errorf("one-time key counts: %w", err)
	}
	out := map[string]int{}
	var alg string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&alg, &n}, func() error {
		out[alg] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("one-time key counts: %w", err)
	}
	return out, nil
}

// ClaimedKey is a key /keys/claim hands out.
type ClaimedKey struct {
	KeyID    string
	Key      json.RawMessage
	Fallback bool
}

// ChooseClaims picks, for each of user's devices in want (device ID to
// algorithm), the one-time key uploaded first (MSC4225: clients expect the
// oldest keys to go first; keys of one upload by ID), or the device's
// fallback key of that algorithm when none is left. Devices with neither
// are absent.
func (s *Store) ChooseClaims(ctx context.Context, user string, want map[string]string) (map[string]ClaimedKey, error) {
	devices := make([]string, 0, len(want))
	algs := make([]string, 0, len(want))
	for d, a := range want {
		devices = append(devices, d)
		algs = append(algs, a)
	}
	rows, err := s.pool.Query(ctx, `SELECT w.device_id, k.key_id, k.key, k.fallback
		FROM unnest($2::text[], $3::text[]) AS w(device_id, algorithm)
		CROSS JOIN LATERAL (
			(SELECT key_id, key, false AS fallback, 0 AS pref FROM one_time_keys o
			  WHERE o.user_id = $1 AND o.device_id = w.device_id AND o.algorithm = w.algorithm
			  ORDER BY o.stream_seq, o.key_id LIMIT 1)
			UNION ALL
			(SELECT key_id, key, true, 1 FROM fallback_keys f
			  WHERE f.user_id = $1 AND f.device_id = w.device_id AND f.algorithm = w.algorithm)
			ORDER BY pref LIMIT 1) k`, user, devices, algs)
	if err != nil {
		return nil, fmt.Errorf("choose claims: %w", err)
	}
	out := map[string]ClaimedKey{}
	var device string
	var c ClaimedKey
	var key []byte
	_, err = pgx.ForEachRow(rows, []any{&device, &c.KeyID, &key, &c.Fallback}, func() error {
		c.Key = append(json.RawMessage(nil), key...)
		out[device] = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("choose claims: %w", err)
	}
	return out, nil
}

// DeviceKeyCounts returns a device's one-time key counts by algorithm
// and the algorithms of its unused fallback keys, in one query.
func (t *SyncTx) DeviceKeyCounts(ctx context.Context, user, device string) (counts map[string]int, unusedFallbacks []string, err error) {
	rows, err := t.tx.Query(ctx, `SELECT algorithm, count(*)::int, false FROM one_time_keys
			WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL
		SELECT algorithm, 0, true FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used
		ORDER BY 3, 1`, user, device)
	if err != nil {
		return nil, nil, fmt.Errorf("device key counts: %w", err)
	}
	counts, unusedFallbacks = map[string]int{}, []string{}
	var alg string
	var n int
	var fallback bool
	_, err = pgx.ForEachRow(rows, []any{&alg, &n, &fallback}, func() error {
		if fallback {
			unusedFallbacks = append(unusedFallbacks, alg)
		} else {
			counts[alg] = n
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("device key counts: %w", err)
	}
	return counts, unusedFallbacks, nil
}

// keyAlgorithm is the algorithm part of an "algorithm:key_id".
func keyAlgorithm(keyID string) string {
	alg, _, _ := strings.Cut(keyID, ":")
	return alg
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
