package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// queryer is what a projection transaction reads and writes through.
type queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Tx is one projection transaction. Writes are queued and sent to Postgres
// in a single pipelined batch at commit, so applying a batch of records
// costs one round trip, not one per record.
type Tx struct {
	tx    queryer
	batch pgx.Batch

	// Coalesced writes, sent by pending(): room events go in one
	// multi-row insert, and each room's head is written once per batch.
	events []*RoomEventRow
	heads  map[string]roomHead
	order  []string // rooms in the order their heads were first set
}

type roomHead struct {
	seq     uint64
	eventID string
	pos     int64
	depth   int64
}

// ErrPositionBehind means the stored position of a stream is lower than
// the position its reader had applied: the projection was replaced under
// the reader (a schema swap by "strand replay --swap", a restore), and
// applying the reader's next records would leave a gap. The reader must
// start again from the stored position.
var ErrPositionBehind = errors.New("stored position is behind the reader")

// Project applies msgs, all from stream and in order, in one transaction
// that also advances the stream's position. expect is the position the
// reader believes is stored: where it started reading, or what its last
// Project returned. Records at or below the stored position were applied
// before (redelivery, or a second projector) and are skipped, which makes
// applying exactly-once in effect (invariant 4). A stored position below
// expect returns ErrPositionBehind and applies nothing. Project returns the
// position after the batch.
func (s *Store) Project(ctx context.Context, stream string, expect uint64, msgs []eventlog.Msg, apply func(ctx context.Context, tx *Tx, m eventlog.Msg) error) (uint64, error) {
	pos, err := s.project(ctx, stream, expect, msgs, apply)
	if err != nil {
		return 0, fmt.Errorf("project %s: %w", stream, err)
	}
	return pos, nil
}

// project runs the transaction in two round trips, whatever the batch
// holds (reads made by apply, such as a redaction's target, add theirs):
// the first opens it and locks the position row, the second carries every
// write, the new position and the commit. This is on every write's path.
func (s *Store) project(ctx context.Context, stream string, expect uint64, msgs []eventlog.Msg, apply func(ctx context.Context, tx *Tx, m eventlog.Msg) error) (pos uint64, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	// A connection released inside a transaction (an error below) is
	// closed by the pool rather than reused, so no half transaction
	// survives.
	defer conn.Release()
	c := conn.Conn()

	open := &pgx.Batch{}
	open.Queue("BEGIN")
	// The projection is derived from the log and its position commits
	// with its rows, so a commit lost in a Postgres crash is applied
	// again from the log: waiting for the WAL flush buys nothing but
	// latency on every write's path (the log's append was the durable
	// step). Other sessions see the commit at once either way.
	open.Queue("SET LOCAL synchronous_commit TO OFF")
	open.Queue("INSERT INTO projector_positions (stream, seq) VALUES ($1, 0) ON CONFLICT DO NOTHING", stream)
	// FOR UPDATE serialises projectors of the same stream: the second one
	// waits here, then sees the first one's position and skips.
	var cur int64
	open.Queue("SELECT seq FROM projector_positions WHERE stream = $1 FOR UPDATE", stream).QueryRow(func(row pgx.Row) error {
		return row.Scan(&cur)
	})
	if err := c.SendBatch(ctx, open).Close(); err != nil {
		return 0, err
	}
	rollback := func(err error) (uint64, error) {
		_, _ = c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return 0, err
	}
	if uint64(cur) < expect {
		return rollback(fmt.Errorf("%w: %s is stored at %d, the reader applied up to %d", ErrPositionBehind, stream, cur, expect))
	}
	pos = uint64(cur)
	tx := &Tx{tx: c}
	for _, m := range msgs {
		if m.Seq <= pos {
			continue
		}
		if err := apply(ctx, tx, m); err != nil {
			return rollback(fmt.Errorf("apply %s seq %d (%s): %w", stream, m.Seq, m.Type, err))
		}
		pos = m.Seq
	}
	if pos == uint64(cur) {
		if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
			return 0, err
		}
		return pos, nil
	}
	tx.pending()
	tx.batch.Queue("UPDATE projector_positions SET seq = $2 WHERE stream = $1", stream, int64(pos))
	tx.batch.Queue("COMMIT")
	if err := c.SendBatch(ctx, &tx.batch).Close(); err != nil {
		return rollback(err)
	}
	// A COMMIT of a transaction that failed is answered as a rollback,
	// not an error: make sure this one committed.
	if c.PgConn().TxStatus() != 'I' {
		return rollback(errors.New("transaction did not commit"))
	}
	return pos, nil
}

func (t *Tx) queue(sql string, args ...any) { t.batch.Queue(sql, args...) }

func pgxBatch() pgx.Batch { return pgx.Batch{} }

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

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

// AddFilter stores a sync filter.
func (t *Tx) AddFilter(r *eventlog.FilterCreated) {
	t.queue(`INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, r.UserID, r.FilterID, []byte(r.Filter))
}

// SetAccountData upserts one account data item.
func (t *Tx) SetAccountData(seq uint64, r *eventlog.AccountDataSet) {
	t.queue(`INSERT INTO account_data (user_id, room_id, type, content, stream_seq) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = EXCLUDED.content, stream_seq = EXCLUDED.stream_seq`,
		r.UserID, r.RoomID, r.Type, []byte(r.Content), int64(seq))
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
