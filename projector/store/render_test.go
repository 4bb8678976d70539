package store

import "testing"

// Membership reads content.membership of member events only, and by
// decoding, not by looking for text: a member event whose content carries
// "membership":"join" in another field is still a leave.
func TestStoredEventMembership(t *testing.T) {
	key := "@u:x"
	for _, c := range []struct {
		name     string
		typ      string
		stateKey *string
		client   string
		want     string
	}{
		{"join", "m.room.member", &key, `{"content":{"membership":"join"},"type":"m.room.member"}`, "join"},
		{"leave quoting a join", "m.room.member", &key, `{"content":{"membership":"leave","reason":{"membership":"join"}},"type":"m.room.member"}`, "leave"},
		{"redacted ban", "m.room.member", &key, `{"content":{"membership":"ban"},"type":"m.room.member"}`, "ban"},
		{"not a member event", "m.room.message", nil, `{"content":{"membership":"join"},"type":"m.room.message"}`, ""},
		{"member type without state key", "m.room.member", nil, `{"content":{"membership":"join"},"type":"m.room.member"}`, ""},
	} {
		e := StoredEvent{Type: c.typ, StateKey: c.stateKey, Client: []byte(c.client)}
		if got := e.Membership(); got != c.want {
			t.Errorf("%s: Membership() = %q, want %q", c.name, got, c.want)
		}
	}
}
