package store

import (
	"context"
	"fmt"
)

// The public room directory: which rooms are published, and the listing.

// PublicRoom is one entry of the public room directory.
type PublicRoom struct {
	RoomID            string
	Name              *string
	Topic             *string
	AvatarURL         *string
	CanonicalAlias    *string
	JoinRule          *string
	HistoryVisibility *string
	GuestAccess       *string
	RoomType          *string
	JoinedMembers     int
}

// PublicRooms lists published rooms, most members first, skipping offset,
// optionally filtered by a search term over name, topic and alias. It also
// returns the total number of matching rooms.
func (s *Store) PublicRooms(ctx context.Context, offset, limit int, search string) ([]PublicRoom, int, error) {
	rows, err := s.pool.Query(ctx, `SELECT room_id, name, topic, avatar_url, canonical_alias, join_rule, history_visibility,
			guest_access, room_type, joined_members, count(*) OVER ()
		FROM rooms WHERE published AND ($3 = '' OR
			strpos(lower(coalesce(name, '')), lower($3)) > 0 OR strpos(lower(coalesce(topic, '')), lower($3)) > 0 OR
			strpos(lower(coalesce(canonical_alias, '')), lower($3)) > 0)
		ORDER BY joined_members DESC, room_id OFFSET $1 LIMIT $2`, offset, limit, search)
	if err != nil {
		return nil, 0, fmt.Errorf("public rooms: %w", err)
	}
	defer rows.Close()
	var out []PublicRoom
	total := 0
	for rows.Next() {
		var r PublicRoom
		if err := rows.Scan(&r.RoomID, &r.Name, &r.Topic, &r.AvatarURL, &r.CanonicalAlias, &r.JoinRule, &r.HistoryVisibility,
			&r.GuestAccess, &r.RoomType, &r.JoinedMembers, &total); err != nil {
			return nil, 0, fmt.Errorf("public rooms: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	if len(out) == 0 && offset == 0 {
		total = 0
	} else if len(out) == 0 {
		// Past the end: count separately so the estimate stays right.
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM rooms WHERE published`).Scan(&total); err != nil {
			return nil, 0, err
		}
	}
	return out, total, nil
}

// SetPublished sets a room's directory visibility.
func (t *Tx) SetPublished(roomID string, published bool) {
	t.queue("UPDATE rooms SET published = $2 WHERE room_id = $1", roomID, published)
}
