package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Room aliases: their projection and resolution.

// AliasRoom resolves an alias, or ErrNotFound.
func (s *Store) AliasRoom(ctx context.Context, alias string) (roomID, creator string, err error) {
	// Only aliases of rooms that exist: an alias whose room creation never
	// completed resolves to nothing.
	err = s.pool.QueryRow(ctx, `SELECT a.room_id, a.creator FROM room_aliases a JOIN rooms r ON r.room_id = a.room_id
		WHERE a.alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("alias %s: %w", alias, err)
	}
	return roomID, creator, nil
}

// RoomAliases lists a room's aliases.
func (s *Store) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias", roomID)
	if err != nil {
		return nil, fmt.Errorf("aliases of %s: %w", roomID, err)
	}
	as, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("aliases of %s: %w", roomID, err)
	}
	return as, nil
}

// SetAlias maps an alias to a room.
func (t *Tx) SetAlias(alias, roomID, creator string) {
	t.queue(`INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)
		ON CONFLICT (alias) DO UPDATE SET room_id = EXCLUDED.room_id, creator = EXCLUDED.creator`, alias, roomID, creator)
}

// DeleteAlias frees an alias.
func (t *Tx) DeleteAlias(alias string) {
	t.queue("DELETE FROM room_aliases WHERE alias = $1", alias)
}
