package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

// Pusher is one of a user's pushers, as GET /pushers lists it.
type Pusher struct {
	AppID             string          `json:"app_id"`
	Pushkey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
	DeviceID          string          `json:"-"`
}

// SetPusher applies a pusher.set record, written at ts (the record's log
// time, in milliseconds). A pusher set by a device that no
// longer exists (deleted between the request and this record) is not
// kept, as it would have been deleted with the device; nor is a new one
// past matrix.MaxPushersPerUser (POST /pushers/set refuses it, but two
// concurrent requests can both pass that check).
func (t *Tx) SetPusher(seq uint64, ts int64, r *eventlog.PusherSet) {
	if r.Kind == "" {
		t.queue("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3", r.UserID, r.AppID, r.Pushkey)
		return
	}
	if !r.Append {
		t.queue("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3", r.AppID, r.Pushkey, r.UserID)
	}
	data := []byte(r.Data)
	if len(data) == 0 {
		data = []byte("{}")
	}
	t.queue(`INSERT INTO pushers (user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name, profile_tag, lang, data, stream_seq, ts)
		SELECT $1::text, $2::text, $3::text, $4::text, $5, $6, $7, $8, $9, $10::jsonb, $11, $12
		WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $4)
			AND ((SELECT count(*) FROM pushers WHERE user_id = $1) < $13
				OR EXISTS (SELECT 1 FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3))
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id = EXCLUDED.device_id, kind = EXCLUDED.kind,
			app_display_name = EXCLUDED.app_display_name, device_display_name = EXCLUDED.device_display_name,
			profile_tag = EXCLUDED.profile_tag, lang = EXCLUDED.lang, data = EXCLUDED.data, stream_seq = EXCLUDED.stream_seq, ts = EXCLUDED.ts`,
		r.UserID, r.AppID, r.Pushkey, r.DeviceID, r.Kind, r.AppDisplayName, r.DeviceDisplayName, r.ProfileTag, r.Lang, data, int64(seq), ts, matrix.MaxPushersPerUser)
}

// Pushers returns a user's pushers, oldest first.
func (s *Store) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	rows, err := s.pool.Query(ctx, `SELECT app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id
		FROM pushers WHERE user_id = $1 ORDER BY stream_seq, app_id, pushkey`, userID)
	if err != nil {
		return nil, fmt.Errorf("pushers of %s: %w", userID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Pusher, error) {
		var p Pusher
		var data []byte
		err := row.Scan(&p.AppID, &p.Pushkey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.DeviceID)
		p.Data = data
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("pushers of %s: %w", userID, err)
	}
	return out, nil
}

// PusherExists reports whether the user still has the pusher.
func (s *Store) PusherExists(ctx context.Context, userID, appID, pushkey string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3)`,
		userID, appID, pushkey).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("pusher of %s: %w", userID, err)
	}
	return ok, nil
}
