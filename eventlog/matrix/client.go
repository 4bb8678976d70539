package matrix

import (
	"encoding/json"
	"strings"
)

// clientEvent is the client-server API's ClientEvent, minus unsigned
// (which depends on who reads it and when).
type clientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Redacts        string          `json:"redacts,omitempty"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
}

// ClientEvent renders ev in the client-server format, without unsigned.
// The projector stores this form and sync workers render recent events
// from the log with it, so both give clients the same bytes.
func ClientEvent(ev *Event) []byte {
	content := ev.Content()
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	b, _ := json.Marshal(clientEvent{
		Content: content, EventID: string(ev.ID()), OriginServerTS: ev.OriginServerTS(), Redacts: string(ev.Redacts()),
		RoomID: string(ev.RoomID()), Sender: string(ev.Sender()), StateKey: ev.StateKey(), Type: ev.Type(),
	})
	return b
}

// Mentions returns the users a message mentions (content."m.mentions".
// user_ids), which counting unread messages past its bound looks up (see
// projector/store/pushcounts.go); nil for anything but a message.
func Mentions(ev *Event) []string {
	if ev.Type() != "m.room.message" && ev.Type() != "m.room.encrypted" {
		return nil
	}
	var c struct {
		Mentions struct {
			UserIDs []any `json:"user_ids"`
		} `json:"m.mentions"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	// Only user IDs are kept: the strings are the sender's, and anything
	// else mentions nobody, while a long one would not fit the
	// events_mentions index (about 2,700 bytes an entry), so the record
	// could never be applied. ParseUserID bounds them to MaxIDLength.
	var mentions []string
	for _, u := range c.Mentions.UserIDs {
		if s, ok := u.(string); ok && !strings.ContainsRune(s, '\n') {
			if _, err := ParseUserID(s); err == nil {
				mentions = append(mentions, s)
			}
		}
	}
	return mentions
}

// Relation returns the event this event relates to and how
// (content."m.relates_to" with an event_id and a rel_type), if it does.
// A bare m.in_reply_to is a reply, not a relation.
func Relation(e *Event) (parent EventID, relType string, ok bool) {
	return ContentRelation(e.Content())
}

// ContentRelation is Relation of an event's content.
func ContentRelation(content []byte) (parent EventID, relType string, ok bool) {
	var c struct {
		RelatesTo *struct {
			EventID any `json:"event_id"`
			RelType any `json:"rel_type"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil {
		return "", "", false
	}
	id, ok1 := c.RelatesTo.EventID.(string)
	rt, ok2 := c.RelatesTo.RelType.(string)
	if !ok1 || !ok2 || rt == "" || len(rt) > 255 {
		return "", "", false
	}
	if _, err := ParseEventID(id); err != nil {
		return "", "", false
	}
	return EventID(id), rt, true
}

// SearchText returns the text /search finds an event by, and under which
// key: a message's body, a room name, a room topic.
func SearchText(e *Event) (key, text string, ok bool) {
	var field string
	switch e.Type() {
	case "m.room.message":
		key, field = "content.body", "body"
	case "m.room.name":
		key, field = "content.name", "name"
	case "m.room.topic":
		key, field = "content.topic", "topic"
	default:
		return "", "", false
	}
	var c map[string]any
	if json.Unmarshal(e.Content(), &c) != nil {
		return "", "", false
	}
	text, ok = c[field].(string)
	if !ok || strings.TrimSpace(text) == "" {
		return "", "", false
	}
	return key, text, true
}
