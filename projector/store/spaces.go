package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SpaceRoom is what the space hierarchy shows of one room and needs to
// decide whether the user may see it: its summary, the user's membership,
// its join rules (for a restricted room's allow list) and, for a space,
// its m.space.child events.
type SpaceRoom struct {
	PublicRoom
	RoomVersion string
	Encryption  *string // the m.room.encryption algorithm, if any
	Membership  string  // the user's current membership, "" for none
	JoinRules   []byte  // client form of m.room.join_rules, nil if none
	Children    []StoredEvent
}

// SpaceRooms reads what the hierarchy needs of the rooms in ids, as seen
// by userID, in one round trip whatever their number (rooms this server
// does not know are left out). Children are read only for rooms whose
// type is m.space.
func (s *Store) SpaceRooms(ctx context.Context, userID string, ids []string) (map[string]*SpaceRoom, error) {
	var b pgx.Batch
	b.Queue(`SELECT r.room_id, r.name, r.topic, r.avatar_url, r.canonical_alias, r.join_rule, r.history_visibility,
			r.guest_access, r.room_type, r.joined_members, r.room_version,
			(SELECT ee.client FROM room_state es JOIN events ee ON ee.event_id = es.event_id
				WHERE es.room_id = r.room_id AND es.type = 'm.room.encryption' AND es.state_key = '' AND es.to_pos IS NULL),
			COALESCE((SELECT m.membership FROM room_state m
				WHERE m.room_id = r.room_id AND m.type = 'm.room.member' AND m.state_key = $2 AND m.to_pos IS NULL), ''),
			(SELECT je.client FROM room_state js JOIN events je ON je.event_id = js.event_id
				WHERE js.room_id = r.room_id AND js.type = 'm.room.join_rules' AND js.state_key = '' AND js.to_pos IS NULL)
		FROM rooms r WHERE r.room_id = ANY($1)`, ids, userID)
	b.Queue(`SELECT `+storedEventCols+` FROM rooms r
		JOIN room_state s ON s.room_id = r.room_id AND s.type = 'm.space.child' AND s.to_pos IS NULL
		JOIN events e ON e.event_id = s.event_id AND e.room_id = s.room_id
		WHERE r.room_id = ANY($1) AND r.room_type = 'm.space'
		ORDER BY e.pos`, ids)
	res := s.pool.SendBatch(ctx, &b)
	defer res.Close()
	out := make(map[string]*SpaceRoom, len(ids))
	rows, err := res.Query()
	if err != nil {
		return nil, fmt.Errorf("space rooms: %w", err)
	}
	for rows.Next() {
		var r SpaceRoom
		var enc []byte
		if err := rows.Scan(&r.RoomID, &r.Name, &r.Topic, &r.AvatarURL, &r.CanonicalAlias, &r.JoinRule, &r.HistoryVisibility,
			&r.GuestAccess, &r.RoomType, &r.JoinedMembers, &r.RoomVersion, &enc, &r.Membership, &r.JoinRules); err != nil {
			rows.Close()
			return nil, fmt.Errorf("space rooms: %w", err)
		}
		if alg := contentString(enc, "algorithm"); alg != "" {
			r.Encryption = &alg
		}
		out[r.RoomID] = &r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("space rooms: %w", err)
	}
	rows, err = res.Query()
	if err != nil {
		return nil, fmt.Errorf("space children: %w", err)
	}
	children, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("space children: %w", err)
	}
	for _, c := range children {
		if r := out[c.RoomID]; r != nil {
			r.Children = append(r.Children, c)
		}
	}
	return out, nil
}

// contentString is the string field key of a client event's content, or
// "" (also for nil or malformed JSON).
func contentString(client []byte, key string) string {
	if client == nil {
		return ""
	}
	var ev struct {
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal(client, &ev); err != nil {
		return ""
	}
	v, _ := ev.Content[key].(string)
	return v
}
