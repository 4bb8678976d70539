package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// Projection and reads of server-side key backup.

// SetKeyBackupVersion creates a version or replaces its auth data.
func (t *Tx) SetKeyBackupVersion(seq uint64, r *eventlog.KeyBackupVersionSet) {
	if r.Create {
		t.queue(`INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data, etag) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT DO NOTHING`, r.UserID, r.Version, r.Algorithm, []byte(r.AuthData), int64(seq))
		return
	}
	t.queue(`UPDATE key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND NOT deleted`,
		r.UserID, r.Version, []byte(r.AuthData))
}

// DeleteKeyBackupVersion marks a version deleted (its number is never
// reused) and drops its keys.
func (t *Tx) DeleteKeyBackupVersion(r *eventlog.KeyBackupVersionDeleted) {
	t.queue("UPDATE key_backup_versions SET deleted = true WHERE user_id = $1 AND version = $2", r.UserID, r.Version)
	t.queue("DELETE FROM room_keys WHERE user_id = $1 AND version = $2", r.UserID, r.Version)
}

// keyBackupData is the part of a KeyBackupData object the replacement
// rule reads.
type keyBackupData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// PutRoomKeys stores backed-up keys, each replacing the stored one only
// if it is better: verified over unverified, then a lower first message
// index, then a lower forwarded count.
func (t *Tx) PutRoomKeys(seq uint64, r *eventlog.RoomKeysPut) error {
	for _, room := range slices.Sorted(maps.Keys(r.Keys)) {
		for _, session := range slices.Sorted(maps.Keys(r.Keys[room])) {
			var k keyBackupData
			if err := json.Unmarshal(r.Keys[room][session], &k); err != nil {
				return Unappliable(fmt.Errorf("room key %s %s: %w", room, session, err))
			}
			t.queue(`INSERT INTO room_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
				SELECT $1::text, $2::bigint, $3::text, $4::text, $5::bigint, $6::bigint, $7::boolean, $8::jsonb
				WHERE EXISTS (SELECT 1 FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted)
				ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
					first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,
					is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data
				WHERE (EXCLUDED.is_verified AND NOT room_keys.is_verified)
				   OR (EXCLUDED.is_verified = room_keys.is_verified AND (EXCLUDED.first_message_index < room_keys.first_message_index
				       OR (EXCLUDED.first_message_index = room_keys.first_message_index AND EXCLUDED.forwarded_count < room_keys.forwarded_count)))`,
				r.UserID, r.Version, room, session, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, []byte(k.SessionData))
		}
	}
	t.queue("UPDATE key_backup_versions SET etag = $3 WHERE user_id = $1 AND version = $2", r.UserID, r.Version, int64(seq))
	return nil
}

// DeleteRoomKeys drops backed-up keys of a version.
func (t *Tx) DeleteRoomKeys(seq uint64, r *eventlog.RoomKeysDeleted) {
	t.queue(`DELETE FROM room_keys WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)`,
		r.UserID, r.Version, r.RoomID, r.SessionID)
	t.queue("UPDATE key_backup_versions SET etag = $3 WHERE user_id = $1 AND version = $2", r.UserID, r.Version, int64(seq))
}

// KeyBackupVersion is a backup version as /room_keys/version shows it.
type KeyBackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	Etag      int64
	Count     int64
}

// KeyBackupVersionOf returns a live version (0: the newest), or
// ErrNotFound.
func (s *Store) KeyBackupVersionOf(ctx context.Context, user string, version int64) (KeyBackupVersion, error) {
	var v KeyBackupVersion
	var auth []byte
	err := s.pool.QueryRow(ctx, `SELECT v.version, v.algorithm, v.auth_data, v.etag,
			(SELECT count(*) FROM room_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
		FROM key_backup_versions v WHERE v.user_id = $1 AND NOT v.deleted AND ($2 = 0 OR v.version = $2)
		ORDER BY v.version DESC LIMIT 1`, user, version).Scan(&v.Version, &v.Algorithm, &auth, &v.Etag, &v.Count)
	if isNoRows(err) {
		return v, ErrNotFound
	}
	if err != nil {
		return v, fmt.Errorf("key backup version: %w", err)
	}
	v.AuthData = auth
	return v, nil
}

// MaxKeyBackupVersion is the highest version number the user ever had
// (deleted ones included: numbers are not reused).
func (s *Store) MaxKeyBackupVersion(ctx context.Context, user string) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM key_backup_versions WHERE user_id = $1", user).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("key backup versions: %w", err)
	}
	return n, nil
}

// BackedUpKey is one stored key.
type BackedUpKey struct {
	RoomID, SessionID string
	Data              json.RawMessage // the KeyBackupData object
}

// RoomKeys returns a version's keys, of one room or session when given.
func (s *Store) RoomKeys(ctx context.Context, user string, version int64, roomID, sessionID string) ([]BackedUpKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM room_keys WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)
		ORDER BY room_id, session_id`, user, version, roomID, sessionID)
	if err != nil {
		return nil, fmt.Errorf("room keys: %w", err)
	}
	var out []BackedUpKey
	var room, session string
	var k keyBackupData
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&room, &session, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data}, func() error {
		k.SessionData = data
		b, err := json.Marshal(k)
		if err != nil {
			return err
		}
		out = append(out, BackedUpKey{RoomID: room, SessionID: session, Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("room keys: %w", err)
	}
	return out, nil
}
