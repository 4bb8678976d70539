package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

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

// Filter returns a stored sync filter, or ErrNotFound.
func (s *Store) Filter(ctx context.Context, userID, filterID string) (json.RawMessage, error) {
	var f []byte
	err := s.pool.QueryRow(ctx, "SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2", userID, filterID).Scan(&f)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("filter %s of %s: %w", filterID, userID, err)
	}
	return f, nil
}

// AccountData returns one global (roomID "") or room account data item.
func (s *Store) AccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error) {
	var c []byte
	err := s.pool.QueryRow(ctx, "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
		userID, roomID, typ).Scan(&c)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("account data %s of %s: %w", typ, userID, err)
	}
	return c, nil
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
