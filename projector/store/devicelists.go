package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Device list changes: written whenever a user's keys or devices change,
// read by /keys/changes and /sync (with the membership moves that change
// whose lists a user follows).

// DeviceListChanges returns the users among user and those sharing a
// room with user whose device lists changed at ACCOUNTS positions in
// (from, to].
func (s *Store) DeviceListChanges(ctx context.Context, user string, from, to uint64) ([]string, error) {
	return deviceListChanges(ctx, s.pool, user, from, to)
}

func deviceListChanges(ctx context.Context, q querier, user string, from, to uint64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT c.user_id FROM device_list_changes c
		WHERE c.pos > $2 AND c.pos <= $3 AND (c.user_id = $1 OR EXISTS (
			SELECT 1 FROM room_state me JOIN room_state o ON o.room_id = me.room_id
			WHERE me.type = 'm.room.member' AND me.state_key = $1 AND me.to_pos IS NULL AND me.membership = 'join'
			  AND o.type = 'm.room.member' AND o.state_key = c.user_id AND o.to_pos IS NULL AND o.membership = 'join'))
		ORDER BY c.user_id`, user, int64(from), int64(to))
	if err != nil {
		return nil, fmt.Errorf("device list changes: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("device list changes: %w", err)
	}
	return out, nil
}

// DeviceListChanges is Store.DeviceListChanges in the snapshot.
func (t *SyncTx) DeviceListChanges(ctx context.Context, user string, from, to uint64) ([]string, error) {
	return deviceListChanges(ctx, t.tx, user, from, to)
}

// MembershipMoves returns, for the rooms user is or was joined to, the
// other users whose membership began in the rooms position range [lo,
// hi): those who joined, and those who stopped being joined.
func (t *SyncTx) MembershipMoves(ctx context.Context, user string, lo, hi int64) (joined, departed []string, err error) {
	rows, err := t.tx.Query(ctx, `SELECT DISTINCT o.state_key, o.membership = 'join' FROM room_state o
		JOIN room_state me ON me.room_id = o.room_id AND me.type = 'm.room.member' AND me.state_key = $1
			AND me.from_pos < $3 AND (me.to_pos IS NULL OR me.to_pos >= $2) AND me.membership = 'join'
		WHERE o.type = 'm.room.member' AND o.state_key <> $1 AND o.from_pos >= $2 AND o.from_pos < $3`, user, lo, hi)
	if err != nil {
		return nil, nil, fmt.Errorf("membership moves: %w", err)
	}
	var who string
	var isJoin bool
	_, err = pgx.ForEachRow(rows, []any{&who, &isJoin}, func() error {
		if isJoin {
			joined = append(joined, who)
		} else {
			departed = append(departed, who)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("membership moves: %w", err)
	}
	return joined, departed, nil
}

// deviceListChanged records that user's device list changed at seq.
func (t *Tx) deviceListChanged(seq uint64, user string) {
	t.queue("INSERT INTO device_list_changes (user_id, pos) VALUES ($1, $2) ON CONFLICT DO NOTHING", user, int64(seq))
}
