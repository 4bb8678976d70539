package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// Account data, global and per room: its projection, and its reads on the
// pool and in a sync snapshot (including the ignored users list).

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

// SetAccountData upserts one account data item.
func (t *Tx) SetAccountData(seq uint64, r *eventlog.AccountDataSet) {
	t.queue(`INSERT INTO account_data (user_id, room_id, type, content, stream_seq) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = EXCLUDED.content, stream_seq = EXCLUDED.stream_seq`,
		r.UserID, r.RoomID, r.Type, []byte(r.Content), int64(seq))
}

// AccountDataItem is one account data entry.
type AccountDataItem struct {
	RoomID  string
	Type    string
	Content json.RawMessage
}

// IgnoredUsers returns the users in the user's m.ignored_user_list
// account data (empty when there is none or it is malformed).
func (t *SyncTx) IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	var c []byte
	err := t.tx.QueryRow(ctx, `SELECT content FROM account_data
		WHERE user_id = $1 AND room_id = '' AND type = 'm.ignored_user_list'`, userID).Scan(&c)
	if isNoRows(err) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sync ignored users: %w", err)
	}
	var l struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	_ = json.Unmarshal(c, &l) // a malformed list ignores nobody
	out := make(map[string]bool, len(l.IgnoredUsers))
	for u := range l.IgnoredUsers {
		out[u] = true
	}
	return out, nil
}

// AccountDataSince returns the account data set after accounts position
// since (all of it for since 0).
func (t *SyncTx) AccountDataSince(ctx context.Context, userID string, since uint64) ([]AccountDataItem, error) {
	rows, err := t.tx.Query(ctx, `SELECT room_id, type, content FROM account_data
		WHERE user_id = $1 AND stream_seq > $2 AND stream_seq <= $3 ORDER BY stream_seq`, userID, int64(since), int64(t.Pos.Accounts))
	if err != nil {
		return nil, fmt.Errorf("sync account data: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[AccountDataItem])
}
