package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// Sync filters: their projection and reads.

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

// AddFilter stores a sync filter.
func (t *Tx) AddFilter(r *eventlog.FilterCreated) {
	t.queue(`INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, r.UserID, r.FilterID, []byte(r.Filter))
}

// Filter returns a stored filter (see Store.Filter) inside the snapshot.
func (t *SyncTx) Filter(ctx context.Context, userID, filterID string) (json.RawMessage, error) {
	var f []byte
	err := t.tx.QueryRow(ctx, "SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2", userID, filterID).Scan(&f)
	if isNoRows(err) {
		return nil, ErrNotFound
	}
	return f, err
}
