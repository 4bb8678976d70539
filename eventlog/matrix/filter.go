package matrix

import (
	"encoding/json"
	"strings"
	"sync"
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

	// compiled holds the lists as sets, built by the parsers so that
	// matching an event costs the same however long the lists are. A
	// filter built in code has none and matches through the lists.
	compiled *compiledFilter
}

// Bounds on what a filter may hold (400 M_INVALID_PARAM beyond): every
// entry is an event type (pattern), room ID or user ID, which the spec
// bounds at 255 bytes; the list lengths are far beyond what a client
// needs (Element's filters list a handful of types) and keep a filter's
// size and the work it makes small.
const (
	MaxFilterTypes     = 100  // types, not_types, event_fields
	MaxFilterIDs       = 1000 // rooms, not_rooms, senders, not_senders
	MaxFilterEntryLen  = 255  // bytes of one entry
	maxFilterTypeMemos = 1024 // pattern results remembered per list
)

// compiledFilter is an EventFilter's lists as sets.
type compiledFilter struct {
	types, notTypes                      *typeSet
	senders, notSenders, rooms, notRooms map[string]struct{}
}

// typeSet matches event types against a list of patterns: exact ones by
// a map lookup, those with "*" once per distinct type (a response holds
// few distinct types, however many events).
type typeSet struct {
	exact map[string]struct{}
	globs []string

	mu   sync.Mutex
	memo map[string]bool
}

func newTypeSet(patterns []string) *typeSet {
	if patterns == nil {
		return nil
	}
	t := &typeSet{exact: map[string]struct{}{}}
	for _, p := range patterns {
		if strings.Contains(p, "*") {
			t.globs = append(t.globs, p)
		} else {
			t.exact[p] = struct{}{}
		}
	}
	return t
}

func (t *typeSet) match(s string) bool {
	if _, ok := t.exact[s]; ok {
		return true
	}
	if len(t.globs) == 0 {
		return false
	}
	t.mu.Lock()
	v, ok := t.memo[s]
	t.mu.Unlock()
	if ok {
		return v
	}
	v = anyMatch(t.globs, s)
	t.mu.Lock()
	if t.memo == nil {
		t.memo = map[string]bool{}
	}
	if len(t.memo) < maxFilterTypeMemos {
		t.memo[s] = v
	}
	t.mu.Unlock()
	return v
}

func newIDSet(ids []string) map[string]struct{} {
	if ids == nil {
		return nil
	}
	m := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	return m
}

// check refuses a filter beyond the bounds, and compiles its lists.
func (f *EventFilter) check(where string) error {
	if f == nil {
		return nil
	}
	if f.Limit != nil && *f.Limit < 0 {
		return BadJSON("invalid filter: negative limit")
	}
	for _, l := range []struct {
		name string
		list []string
		max  int
	}{
		{"types", f.Types, MaxFilterTypes}, {"not_types", f.NotTypes, MaxFilterTypes},
		{"senders", f.Senders, MaxFilterIDs}, {"not_senders", f.NotSenders, MaxFilterIDs},
		{"rooms", f.Rooms, MaxFilterIDs}, {"not_rooms", f.NotRooms, MaxFilterIDs},
	} {
		if err := checkFilterList(where+l.name, l.list, l.max); err != nil {
			return err
		}
	}
	f.compiled = &compiledFilter{
		types: newTypeSet(f.Types), notTypes: newTypeSet(f.NotTypes),
		senders: newIDSet(f.Senders), notSenders: newIDSet(f.NotSenders),
		rooms: newIDSet(f.Rooms), notRooms: newIDSet(f.NotRooms),
	}
	return nil
}

func checkFilterList(name string, list []string, max int) error {
	if len(list) > max {
		return InvalidParam("invalid filter: %s has %d entries; at most %d are allowed", name, len(list), max)
	}
	for _, s := range list {
		if len(s) > MaxFilterEntryLen {
			return InvalidParam("invalid filter: an entry of %s is longer than %d bytes", name, MaxFilterEntryLen)
		}
	}
	return nil
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
	if err := f.check(""); err != nil {
		return nil, err
	}
	if err := f.checkIDs(""); err != nil {
		return nil, err
	}
	return f, nil
}

// checkIDs refuses a filter whose rooms or senders lists hold something
// that is not a room ID or user ID: such an entry can never match, so it
// is a client's mistake (a room alias, a display name) that silently
// filtering everything out would hide.
func (f *EventFilter) checkIDs(where string) error {
	if f == nil {
		return nil
	}
	if err := checkRoomIDList(where+"rooms", f.Rooms); err != nil {
		return err
	}
	if err := checkRoomIDList(where+"not_rooms", f.NotRooms); err != nil {
		return err
	}
	for _, l := range []struct {
		name string
		list []string
	}{{"senders", f.Senders}, {"not_senders", f.NotSenders}} {
		for _, id := range l.list {
			if _, err := ParseUserID(id); err != nil {
				return InvalidParam("invalid filter: %s%s: %v", where, l.name, err)
			}
		}
	}
	return nil
}

func checkRoomIDList(name string, list []string) error {
	for _, id := range list {
		if _, err := ParseRoomID(id); err != nil {
			return InvalidParam("invalid filter: %s: %v", name, err)
		}
	}
	return nil
}

// CheckIDs refuses a sync filter whose rooms or senders lists hold
// something that is not a room ID or user ID (see checkIDs). It is not
// part of ParseFilter so that filters stored before this check still load.
func (f *Filter) CheckIDs() error {
	for _, ef := range []struct {
		name string
		f    *EventFilter
	}{
		{"presence.", f.Presence}, {"account_data.", f.AccountData}, {"room.timeline.", f.Room.Timeline},
		{"room.state.", f.Room.State}, {"room.ephemeral.", f.Room.Ephemeral}, {"room.account_data.", f.Room.AccountData},
	} {
		if err := ef.f.checkIDs(ef.name); err != nil {
			return err
		}
	}
	if err := checkRoomIDList("room.rooms", f.Room.Rooms); err != nil {
		return err
	}
	return checkRoomIDList("room.not_rooms", f.Room.NotRooms)
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

// inSet reports whether s is in set, or in list when the filter was not
// compiled.
func inSet(set map[string]struct{}, list []string, s string, compiled bool) bool {
	if compiled {
		_, ok := set[s]
		return ok
	}
	return contains(list, s)
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
	c, compiled := f.sets()
	return allowsID(roomID, f.Rooms, f.NotRooms, c.rooms, c.notRooms, compiled)
}

// sets returns the compiled sets (empty ones for a filter built in code)
// and whether there are any.
func (f *EventFilter) sets() (*compiledFilter, bool) {
	if f.compiled == nil {
		return &compiledFilter{}, false
	}
	return f.compiled, true
}

// allowsID applies an allow list and a deny list (nil allow: anything) to
// id, through their sets when compiled.
func allowsID(id string, allow, deny []string, allowSet, denySet map[string]struct{}, compiled bool) bool {
	if inSet(denySet, deny, id, compiled) {
		return false
	}
	return allow == nil || inSet(allowSet, allow, id, compiled)
}

// matchTypes reports whether typ matches one of the patterns of set (or of
// list, for a filter that was not compiled).
func matchTypes(set *typeSet, list []string, typ string) bool {
	if set != nil {
		return set.match(typ)
	}
	return anyMatch(list, typ)
}

// Allows reports whether the filter admits an event of type typ from
// sender in roomID; content is consulted only for contains_url.
func (f *EventFilter) Allows(typ, sender, roomID string, content func() json.RawMessage) bool {
	if f == nil {
		return true
	}
	c, compiled := f.sets()
	if matchTypes(c.notTypes, f.NotTypes, typ) || !allowsID(sender, f.Senders, f.NotSenders, c.senders, c.notSenders, compiled) ||
		!f.AllowsRoom(roomID) {
		return false
	}
	if f.Types != nil && !matchTypes(c.types, f.Types, typ) {
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

	rooms, notRooms map[string]struct{} // Rooms and NotRooms as sets, from ParseFilter
}

// AllowsRoom reports whether the room filter admits roomID.
func (f *RoomFilter) AllowsRoom(roomID string) bool {
	return allowsID(roomID, f.Rooms, f.NotRooms, f.rooms, f.notRooms, f.rooms != nil || f.notRooms != nil)
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
	for _, ef := range []struct {
		name string
		f    *EventFilter
	}{
		{"presence.", f.Presence}, {"account_data.", f.AccountData}, {"room.timeline.", f.Room.Timeline},
		{"room.state.", f.Room.State}, {"room.ephemeral.", f.Room.Ephemeral}, {"room.account_data.", f.Room.AccountData},
	} {
		if err := ef.f.check(ef.name); err != nil {
			return nil, err
		}
	}
	if err := checkFilterList("event_fields", f.EventFields, MaxFilterTypes); err != nil {
		return nil, err
	}
	if err := checkFilterList("room.rooms", f.Room.Rooms, MaxFilterIDs); err != nil {
		return nil, err
	}
	if err := checkFilterList("room.not_rooms", f.Room.NotRooms, MaxFilterIDs); err != nil {
		return nil, err
	}
	f.Room.rooms, f.Room.notRooms = newIDSet(f.Room.Rooms), newIDSet(f.Room.NotRooms)
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, BadJSON("invalid filter: event_format must be client or federation")
	}
	return f, nil
}
