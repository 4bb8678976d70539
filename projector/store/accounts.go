package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"strand/eventlog"

	"github.com/jackc/pgx/v5"
)

// Accounts: users, their devices and access/refresh tokens, passwords,
// deactivation, profiles and the user directory; the projection of the
// account records and the reads the api needs.

// User is an account as the api needs it.
type User struct {
	UserID       string
	PasswordHash string
	Admin        bool
	Deactivated  bool
	Displayname  string
	AvatarURL    string
	CreatedTS    int64 // registration time, unix ms
}

// User returns one account, or ErrNotFound.
func (s *Store) User(ctx context.Context, userID string) (User, error) {
	var u User
	var dn, av *string
	err := s.pool.QueryRow(ctx, `SELECT user_id, password_hash, admin, deactivated, displayname, avatar_url, created_ts
		FROM users WHERE user_id = $1`, userID).Scan(&u.UserID, &u.PasswordHash, &u.Admin, &u.Deactivated, &dn, &av, &u.CreatedTS)
	if errors.Is(err, pgx.ErrNoRows) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("user %s: %w", userID, err)
	}
	if dn != nil {
		u.Displayname = *dn
	}
	if av != nil {
		u.AvatarURL = *av
	}
	return u, nil
}

// Session is who an access token belongs to.
type Session struct {
	UserID   string
	DeviceID string
	Admin    bool
	// ExpiresTS is when the token stops being valid (unix ms; 0: never).
	// Only tokens issued with a refresh token expire.
	ExpiresTS int64
	// RetiresPrevious: this is the device's token from a refresh and the
	// token it replaced is still valid; its first use revokes that one.
	RetiresPrevious bool
}

// TokenHash is how an access token is stored: its SHA-256. A fast hash
// suffices because tokens carry 256 random bits.
func TokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// SessionByToken resolves the SHA-256 of an access token, or ErrNotFound
// for an unknown, revoked or deactivated one. A device has one current
// token and, after a refresh, possibly its previous one: both resolve.
func (s *Store) SessionByToken(ctx context.Context, hash []byte) (Session, error) {
	var ss Session
	err := s.pool.QueryRow(ctx, `SELECT d.user_id, d.device_id, u.admin,
			COALESCE(CASE WHEN d.token_hash = $1 THEN d.expires_ts ELSE d.prev_expires_ts END, 0),
			d.token_hash = $1 AND d.prev_token_hash IS NOT NULL
		FROM devices d JOIN users u ON u.user_id = d.user_id
		WHERE (d.token_hash = $1 OR d.prev_token_hash = $1) AND NOT u.deactivated`, hash).
		Scan(&ss.UserID, &ss.DeviceID, &ss.Admin, &ss.ExpiresTS, &ss.RetiresPrevious)
	if errors.Is(err, pgx.ErrNoRows) {
		return ss, ErrNotFound
	}
	if err != nil {
		return ss, fmt.Errorf("session by token: %w", err)
	}
	return ss, nil
}

// RefreshSession is the device a refresh token belongs to.
type RefreshSession struct {
	UserID   string
	DeviceID string
}

// DeviceByRefreshToken resolves the SHA-256 of a refresh token to its
// device, or ErrNotFound for an unknown or already used one, or one of a
// deactivated account.
func (s *Store) DeviceByRefreshToken(ctx context.Context, hash []byte) (RefreshSession, error) {
	var rs RefreshSession
	err := s.pool.QueryRow(ctx, `SELECT d.user_id, d.device_id
		FROM devices d JOIN users u ON u.user_id = d.user_id
		WHERE d.refresh_hash = $1 AND NOT u.deactivated`, hash).Scan(&rs.UserID, &rs.DeviceID)
	if errors.Is(err, pgx.ErrNoRows) {
		return rs, ErrNotFound
	}
	if err != nil {
		return rs, fmt.Errorf("device by refresh token: %w", err)
	}
	return rs, nil
}

// Device is one of a user's devices.
type Device struct {
	DeviceID    string
	DisplayName string
	CreatedTS   int64
}

// Devices lists a user's devices.
func (s *Store) Devices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := s.pool.Query(ctx, `SELECT device_id, COALESCE(display_name, ''), created_ts
		FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("devices of %s: %w", userID, err)
	}
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Device])
	if err != nil {
		return nil, fmt.Errorf("devices of %s: %w", userID, err)
	}
	return ds, nil
}

// Device returns one device, or ErrNotFound.
func (s *Store) Device(ctx context.Context, userID, deviceID string) (Device, error) {
	var d Device
	err := s.pool.QueryRow(ctx, `SELECT device_id, COALESCE(display_name, ''), created_ts
		FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&d.DeviceID, &d.DisplayName, &d.CreatedTS)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("device %s of %s: %w", deviceID, userID, err)
	}
	return d, nil
}

// DirectoryUser is one result of a user directory search.
type DirectoryUser struct {
	UserID      string
	Displayname string
	AvatarURL   string
}

// SearchUsers finds up to limit active users whose ID or display name
// contains term (case-insensitively) and whom searcher may discover: users
// sharing a room with them, or joined to a room in the public directory,
// never the searcher: the directory is for finding other people to talk
// to, and a user is no one's result for themselves. It also reports
// whether more matched.
func (s *Store) SearchUsers(ctx context.Context, searcher, term string, limit int) ([]DirectoryUser, bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT u.user_id, COALESCE(u.displayname, ''), COALESCE(u.avatar_url, '')
		FROM users u
		WHERE NOT u.deactivated
		  AND (strpos(lower(u.user_id), lower($2)) > 0 OR strpos(lower(COALESCE(u.displayname, '')), lower($2)) > 0)
		  AND u.user_id <> $1 AND (EXISTS (
			SELECT 1 FROM room_state o
			WHERE o.type = 'm.room.member' AND o.state_key = u.user_id AND o.to_pos IS NULL AND o.membership = 'join'
			  AND (EXISTS (SELECT 1 FROM room_state me WHERE me.room_id = o.room_id AND me.type = 'm.room.member'
					AND me.state_key = $1 AND me.to_pos IS NULL AND me.membership = 'join')
			    OR EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = o.room_id AND r.published))))
		ORDER BY (lower(COALESCE(u.displayname, '')) = lower($2) OR lower(u.user_id) = lower($2)) DESC, u.user_id
		LIMIT $3`, searcher, term, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("search users: %w", err)
	}
	us, err := pgx.CollectRows(rows, pgx.RowToStructByPos[DirectoryUser])
	if err != nil {
		return nil, false, fmt.Errorf("search users: %w", err)
	}
	if len(us) > limit {
		return us[:limit], true, nil
	}
	return us, false, nil
}

func tokenHash(h string) ([]byte, error) {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) == 0 {
		return nil, Unappliable(errors.New("bad token hash"))
	}
	return b, nil
}

// AddUser inserts a registered account.
func (t *Tx) AddUser(r *eventlog.UserRegistered) error {
	var dn *string
	if r.Displayname != "" {
		dn = &r.Displayname
	}
	t.queue(`INSERT INTO users (user_id, password_hash, admin, displayname, created_ts)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO NOTHING`,
		r.UserID, r.PasswordHash, r.Admin, dn, r.TS)
	if r.Device != nil {
		return t.PutDevice(r.Device)
	}
	return nil
}

// PutDevice adds a device or gives an existing one a new token.
func (t *Tx) PutDevice(d *eventlog.DeviceCreated) error {
	h, err := tokenHash(d.TokenHash)
	if err != nil {
		return err
	}
	var dn *string
	if d.DisplayName != "" {
		dn = &d.DisplayName
	}
	var refresh []byte
	if d.RefreshHash != "" {
		if refresh, err = tokenHash(d.RefreshHash); err != nil {
			return err
		}
	}
	// A new token for an existing device replaces everything that
	// authenticated it: the access token, the refresh token and a previous
	// token left valid by a refresh.
	t.queue(`INSERT INTO devices (user_id, device_id, display_name, token_hash, created_ts, expires_ts, refresh_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id, device_id) DO UPDATE SET
			token_hash = EXCLUDED.token_hash,
			display_name = COALESCE(EXCLUDED.display_name, devices.display_name),
			expires_ts = EXCLUDED.expires_ts,
			refresh_hash = EXCLUDED.refresh_hash,
			prev_token_hash = NULL,
			prev_expires_ts = NULL`,
		d.UserID, d.DeviceID, dn, h, d.TS, nullTS(d.ExpiresTS), refresh)
	return nil
}

// nullTS maps the log's "0: never" to NULL.
func nullTS(ts int64) *int64 {
	if ts == 0 {
		return nil
	}
	return &ts
}

// RefreshToken applies a refresh: only if r.RefreshHash is still the
// device's refresh token (the api's append was a compare-and-set on the
// user's subject, so this holds for every record it wrote; the condition
// keeps the projection right for any log). The current access token
// becomes the previous one, still valid until the new one is used.
func (t *Tx) RefreshToken(r *eventlog.TokenRefreshed) error {
	old, err := tokenHash(r.RefreshHash)
	if err != nil {
		return err
	}
	tok, err := tokenHash(r.NewTokenHash)
	if err != nil {
		return err
	}
	refresh, err := tokenHash(r.NewRefreshHash)
	if err != nil {
		return err
	}
	t.queue(`UPDATE devices SET prev_token_hash = token_hash, prev_expires_ts = expires_ts,
			token_hash = $4, expires_ts = $5, refresh_hash = $6
		WHERE user_id = $1 AND device_id = $2 AND refresh_hash = $3`,
		r.UserID, r.DeviceID, old, tok, nullTS(r.ExpiresTS), refresh)
	return nil
}

// UseToken applies the first use of a refreshed token: the device's
// previous token is revoked, if r.TokenHash is still its current one.
func (t *Tx) UseToken(r *eventlog.TokenUsed) error {
	h, err := tokenHash(r.TokenHash)
	if err != nil {
		return err
	}
	t.queue(`UPDATE devices SET prev_token_hash = NULL, prev_expires_ts = NULL
		WHERE user_id = $1 AND device_id = $2 AND token_hash = $3`, r.UserID, r.DeviceID, h)
	return nil
}

// RenameDevice sets a device's display name.
func (t *Tx) RenameDevice(r *eventlog.DeviceUpdated) {
	t.queue("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
		r.UserID, r.DeviceID, r.DisplayName)
}

// DeleteDevices removes devices (and so their tokens and keys).
func (t *Tx) DeleteDevices(seq uint64, r *eventlog.DevicesDeleted) {
	if r.All {
		t.queue("DELETE FROM devices WHERE user_id = $1 AND device_id <> $2", r.UserID, r.Keep)
	} else {
		t.queue("DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2)", r.UserID, r.DeviceIDs)
	}
	t.dropDeviceData(seq, r.UserID)
}

// SetPassword changes a password hash, optionally logging out the other
// devices.
func (t *Tx) SetPassword(seq uint64, r *eventlog.PasswordChanged) {
	t.queue("UPDATE users SET password_hash = $2 WHERE user_id = $1", r.UserID, r.PasswordHash)
	// Pushers of the other devices go even when the devices stay: after
	// a password change (perhaps because the account was taken over) no
	// notification should go where the user did not just ask for it.
	t.queue("DELETE FROM pushers WHERE user_id = $1 AND device_id <> $2", r.UserID, r.KeepDevice)
	if r.LogoutDevices {
		t.queue("DELETE FROM devices WHERE user_id = $1 AND device_id <> $2", r.UserID, r.KeepDevice)
		t.dropDeviceData(seq, r.UserID)
	}
}

// Deactivate disables an account, clears its profile (a deactivated user
// shows no name or avatar anywhere, as in Synapse) and removes its devices.
func (t *Tx) Deactivate(seq uint64, r *eventlog.UserDeactivated) {
	t.queue("UPDATE users SET deactivated = true, password_hash = '', displayname = NULL, avatar_url = NULL WHERE user_id = $1", r.UserID)
	t.queue("DELETE FROM devices WHERE user_id = $1", r.UserID)
	t.queue("DELETE FROM cross_signing_keys WHERE user_id = $1", r.UserID)
	t.dropDeviceData(seq, r.UserID)
}

// SetProfile updates the profile fields that are set.
func (t *Tx) SetProfile(r *eventlog.ProfileSet) {
	if r.Displayname != nil {
		t.queue("UPDATE users SET displayname = NULLIF($2, '') WHERE user_id = $1", r.UserID, *r.Displayname)
	}
	if r.AvatarURL != nil {
		t.queue("UPDATE users SET avatar_url = NULLIF($2, '') WHERE user_id = $1", r.UserID, *r.AvatarURL)
	}
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
