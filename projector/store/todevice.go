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

// To-device messages: their projection (sent, acknowledged), the
// transaction check of the api, and what /sync delivers.

// ToDeviceTxn reports whether a sendToDevice transaction was applied.
func (s *Store) ToDeviceTxn(ctx context.Context, sender, device, txn string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM to_device_txns WHERE sender = $1 AND device_id = $2 AND txn_id = $3)",
		sender, device, txn).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("to-device transaction: %w", err)
	}
	return ok, nil
}

// ToDeviceMessage is a pending to-device message.
type ToDeviceMessage struct {
	Pos     uint64
	Sender  string
	Type    string
	Content json.RawMessage
}

// PendingToDevice returns a device's undelivered to-device messages up
// to ACCOUNTS position through, oldest first.
func (t *SyncTx) PendingToDevice(ctx context.Context, user, device string, through uint64) ([]ToDeviceMessage, error) {
	rows, err := t.tx.Query(ctx, `SELECT pos, sender, type, content FROM to_device
		WHERE user_id = $1 AND device_id = $2 AND pos <= $3 ORDER BY pos, idx`, user, device, int64(through))
	if err != nil {
		return nil, fmt.Errorf("pending to-device: %w", err)
	}
	var out []ToDeviceMessage
	var m ToDeviceMessage
	var pos int64
	var content []byte
	_, err = pgx.ForEachRow(rows, []any{&pos, &m.Sender, &m.Type, &content}, func() error {
		m.Pos = uint64(pos)
		m.Content = append(json.RawMessage(nil), content...)
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pending to-device: %w", err)
	}
	return out, nil
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
