package matrix

import (
	"encoding/json"
	"strings"
)

// EventFilter is the spec's EventFilter / RoomEventFilter: which events a
// client wants. A nil list means "no constraint"; "*" in a type pattern
// matches any run of characters.
type EventFilter struct {
	Limit                   *int     `json:"limit,omitempty"`
	Types                   []string `json:"types,omitempty"`
	NotTypes                []string `json:"not_types,omitempty"`
	Senders                 []string `json:"senders,omitempty"`
	NotSenders              []string `json:"not_senders,omitempty"`
	Rooms                   []string `json:"rooms,omitempty"`
	NotRooms                []string `json:"not_rooms,omitempty"`
	ContainsURL             *bool    `json:"contains_url,omitempty"`
	LazyLoadMembers         bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool     `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifs      bool     `json:"unread_thread_notifications,omitempty"`
}

// ParseEventFilter parses a filter object; empty input is the empty filter.
func ParseEventFilter(raw []byte) (*EventFilter, error) {
	f := &EventFilter{}
	if len(raw) == 0 {
		return f, nil
	}
	if err := json.Unmarshal(raw, f); err != nil {
		return nil, BadJSON("invalid filter: %v", err)
	}
	if f.Limit != nil && *f.Limit < 0 {
		return nil, BadJSON("invalid filter: negative limit")
	}
	return f, nil
}

func globMatch(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, p)
		}
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return true
}

func anyMatch(patterns []string, s string) bool {
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// AllowsRoom reports whether the filter admits events of roomID.
func (f *EventFilter) AllowsRoom(roomID string) bool {
	if f == nil {
		return true
	}
	if contains(f.NotRooms, roomID) {
		return false
	}
	return f.Rooms == nil || contains(f.Rooms, roomID)
}

// Allows reports whether the filter admits an event of type typ from
// sender in roomID; content is consulted only for contains_url.
func (f *EventFilter) Allows(typ, sender, roomID string, content func() json.RawMessage) bool {
	if f == nil {
		return true
	}
	if anyMatch(f.NotTypes, typ) || contains(f.NotSenders, sender) || !f.AllowsRoom(roomID) {
		return false
	}
	if f.Types != nil && !anyMatch(f.Types, typ) {
		return false
	}
	if f.Senders != nil && !contains(f.Senders, sender) {
		return false
	}
	if f.ContainsURL != nil && content != nil {
		var c struct {
			URL *string `json:"url"`
		}
		_ = json.Unmarshal(content(), &c)
		if (c.URL != nil) != *f.ContainsURL {
			return false
		}
	}
	return true
}

// RoomFilter is the "room" part of a sync Filter.
type RoomFilter struct {
	Rooms        []string     `json:"rooms,omitempty"`
	NotRooms     []string     `json:"not_rooms,omitempty"`
	IncludeLeave bool         `json:"include_leave,omitempty"`
	Timeline     *EventFilter `json:"timeline,omitempty"`
	State        *EventFilter `json:"state,omitempty"`
	Ephemeral    *EventFilter `json:"ephemeral,omitempty"`
	AccountData  *EventFilter `json:"account_data,omitempty"`
}

// Filter is the spec's sync filter (POST /user/{userId}/filter, and the
// filter parameter of /sync).
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        RoomFilter   `json:"room"`
}

// ParseFilter parses and checks a sync filter: a stored filter must be one
// that /sync can use, or every sync with it would fail.
func ParseFilter(raw []byte) (*Filter, error) {
	f := &Filter{}
	if err := json.Unmarshal(raw, f); err != nil {
		return nil, BadJSON("invalid filter: %v", err)
	}
	for _, ef := range []*EventFilter{f.Presence, f.AccountData, f.Room.Timeline, f.Room.State, f.Room.Ephemeral, f.Room.AccountData} {
		if ef != nil && ef.Limit != nil && *ef.Limit < 0 {
			return nil, BadJSON("invalid filter: negative limit")
		}
	}
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, BadJSON("invalid filter: event_format must be client or federation")
	}
	return f, nil
}
