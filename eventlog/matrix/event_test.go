package matrix

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestBuildEventRoundTrip(t *testing.T) {
	for _, v := range allVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newTestRoom(t, v, nil)
			ev := r.mustSend(&ProtoEvent{Type: "m.room.message", Sender: bob,
				Content: json.RawMessage(` {"body": "<b>héllo</b>", "msgtype": "m.text", "n": 1e3} `)})

			checkEventIDForm(t, v, ev)
			if got := string(ev.Content()); got != `{"body":"<b>héllo</b>","msgtype":"m.text","n":1000}` {
				t.Fatalf("content not canonical: %s", got)
			}
			if canon, _ := CanonicalJSON(ev.JSON()); string(canon) != string(ev.JSON()) {
				t.Fatal("event JSON is not canonical")
			}
			if ev.RoomID() != r.roomID || ev.Sender() != bob || ev.Type() != "m.room.message" || ev.IsState() {
				t.Fatalf("fields: %s %s %s %v", ev.RoomID(), ev.Sender(), ev.Type(), ev.IsState())
			}
			if ev.Depth() != r.depth || len(ev.PrevEvents()) != 1 || len(ev.AuthEvents()) == 0 {
				t.Fatalf("depth %d prev %v auth %v", ev.Depth(), ev.PrevEvents(), ev.AuthEvents())
			}
			if err := ev.CheckContentHash(); err != nil {
				t.Fatal(err)
			}
			key := r.key("example.org")
			if err := ev.VerifySignature("example.org", key.ID(), key.Public()); err != nil {
				t.Fatal(err)
			}
			other, _ := GenerateKeyPair("t")
			if err := ev.VerifySignature("example.org", key.ID(), other.Public()); err == nil {
				t.Fatal("signature verified with the wrong key")
			}

			// Parsing the JSON gives the same event, ID included.
			back, err := ParseEvent(v, ev.JSON())
			if err != nil {
				t.Fatal(err)
			}
			if back.ID() != ev.ID() || string(back.JSON()) != string(ev.JSON()) {
				t.Fatalf("round trip: %s vs %s", back.ID(), ev.ID())
			}
			var sb strings.Builder
			enc := json.NewEncoder(&sb)
			enc.SetEscapeHTML(false) // else encoding/json rewrites "<" in the embedded bytes
			if err := enc.Encode(map[string]any{"e": ev}); err != nil || !strings.Contains(sb.String(), string(ev.JSON())) {
				t.Fatal("MarshalJSON does not embed the event")
			}

			// Changing the content breaks the hash but not the signature or
			// the ID, which cover only the redacted form.
			tampered := strings.Replace(string(ev.JSON()), "héllo", "bye", 1)
			tev, err := ParseEvent(v, []byte(tampered))
			if err != nil {
				t.Fatal(err)
			}
			if tev.CheckContentHash() == nil {
				t.Fatal("tampered content passed the hash check")
			}
			if tev.ID() != ev.ID() {
				t.Fatal("message content changed the event ID")
			}
			if err := tev.VerifySignature("example.org", key.ID(), key.Public()); err != nil {
				t.Fatalf("signature over the redacted form broke: %v", err)
			}

			// Redaction keeps ID and signature, strips content.
			red, err := ev.Redact()
			if err != nil {
				t.Fatal(err)
			}
			if red.ID() != ev.ID() || string(red.Content()) != "{}" {
				t.Fatalf("redacted: %s %s", red.ID(), red.Content())
			}
			if err := red.VerifySignature("example.org", key.ID(), key.Public()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBuildCreateV12DerivesRoomID(t *testing.T) {
	r := newEmptyRoom(t, RoomVersion12, nil)
	if r.create.RoomID() != RoomID("!"+string(r.create.ID())[1:]) {
		t.Fatalf("room %s, create %s", r.create.RoomID(), r.create.ID())
	}
	if lookup(r.create.JSON(), "room_id") != nil {
		t.Fatal("v12 create event carries room_id")
	}
	if !r.roomID.Hashed() {
		t.Fatal("v12 room ID not in hash form")
	}
	if _, err := ParseRoomID(string(r.roomID)); err != nil {
		t.Fatal(err)
	}
	back, err := ParseEvent(RoomVersion12, r.create.JSON())
	if err != nil || back.RoomID() != r.roomID {
		t.Fatalf("parsed create: %v %v", back, err)
	}
	// Other events carry it.
	j := r.mustSend(r.member(alice, alice, "join", nil))
	if s, _ := stringMember(j.JSON(), "room_id"); s != string(r.roomID) {
		t.Fatalf("join room_id %q", s)
	}
}

func TestBuildRedactionPlacesRedacts(t *testing.T) {
	for _, v := range allVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newTestRoom(t, v, nil)
			m := r.mustSend(r.msg(bob))
			// As /redact builds it (reason only), and as /send does, with
			// the client's content.redacts, which moves to the top level
			// before version 11.
			for _, c := range []string{`{"reason":"oops"}`, `{"reason":"oops","redacts":"` + string(m.ID()) + `"}`} {
				red := r.mustSend(&ProtoEvent{Type: TypeRedaction, Sender: bob, Redacts: m.ID(), Content: json.RawMessage(c)})
				if red.Redacts() != m.ID() {
					t.Fatalf("Redacts() = %q", red.Redacts())
				}
				top := lookup(red.JSON(), "redacts") != nil
				inContent := lookup(red.Content(), "redacts") != nil
				if wantTop := slices.Contains(allVersions[:10], v); top != wantTop || inContent == wantTop {
					t.Fatalf("content %s: top-level %v, in content %v for version %s", c, top, inContent, v)
				}
				if reason, _ := stringMember(red.Content(), "reason"); reason != "oops" {
					t.Fatalf("content %s: reason lost: %s", c, red.Content())
				}
			}
		})
	}
}

func TestBuildEventRejects(t *testing.T) {
	key, _ := GenerateKeyPair("t")
	room, _ := NewRoomID("example.org")
	hashRoom := RoomID("!" + strings.Repeat("A", 43))
	prev := EventID("$" + strings.Repeat("A", 43))
	ok := func() *ProtoEvent {
		return &ProtoEvent{Type: "m.room.message", Sender: alice, RoomID: room, Content: json.RawMessage(`{}`),
			PrevEvents: []EventID{prev}, AuthEvents: []EventID{}, Depth: 2, OriginServerTS: 5}
	}
	if _, err := BuildEvent(RoomVersion11, ok(), "example.org", key); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	tests := []struct {
		name   string
		v      RoomVersion
		origin ServerName
		mod    func(p *ProtoEvent)
	}{
		{"unsupported version", "13", "example.org", nil},
		{"sender on another server", RoomVersion11, "other.org", nil},
		{"empty type", RoomVersion11, "example.org", func(p *ProtoEvent) { p.Type = "" }},
		{"long type", RoomVersion11, "example.org", func(p *ProtoEvent) { p.Type = strings.Repeat("t", 256) }},
		{"long state key", RoomVersion11, "example.org", func(p *ProtoEvent) { p.StateKey = sk(strings.Repeat("k", 256)) }},
		{"content array", RoomVersion11, "example.org", func(p *ProtoEvent) { p.Content = json.RawMessage(`[]`) }},
		{"content float", RoomVersion11, "example.org", func(p *ProtoEvent) { p.Content = json.RawMessage(`{"a":0.5}`) }},
		{"content not JSON", RoomVersion11, "example.org", func(p *ProtoEvent) { p.Content = json.RawMessage(`{`) }},
		{"hashed room ID in v11", RoomVersion11, "example.org", func(p *ProtoEvent) { p.RoomID = hashRoom }},
		{"classic room ID in v12", RoomVersion12, "example.org", nil},
		{"no room ID", RoomVersion11, "example.org", func(p *ProtoEvent) { p.RoomID = "" }},
		{"v12 create with room ID", RoomVersion12, "example.org", func(p *ProtoEvent) { p.Type, p.StateKey, p.RoomID = TypeCreate, sk(""), hashRoom }},
		{"legacy prev event ID", RoomVersion11, "example.org", func(p *ProtoEvent) { p.PrevEvents = []EventID{"$abc:example.org"} }},
		{"too many prev events", RoomVersion11, "example.org", func(p *ProtoEvent) { p.PrevEvents = make([]EventID, 21) }},
		{"too many auth events", RoomVersion11, "example.org", func(p *ProtoEvent) { p.AuthEvents = make([]EventID, 11) }},
		{"negative depth", RoomVersion11, "example.org", func(p *ProtoEvent) { p.Depth = -1 }},
		{"depth too big", RoomVersion11, "example.org", func(p *ProtoEvent) { p.Depth = MaxSafeInteger + 1 }},
		{"redacts on a message", RoomVersion11, "example.org", func(p *ProtoEvent) { p.Redacts = prev }},
		{"redacts mismatch", RoomVersion11, "example.org", func(p *ProtoEvent) {
			p.Type, p.Redacts, p.Content = TypeRedaction, prev, json.RawMessage(`{"redacts":"$other"}`)
		}},
		{"redacts mismatch before v11", RoomVersion10, "example.org", func(p *ProtoEvent) {
			p.RoomID, p.AuthEvents = room, []EventID{prev}
			p.Type, p.Redacts, p.Content = TypeRedaction, prev, json.RawMessage(`{"redacts":"$other"}`)
		}},
		{"too large", RoomVersion11, "example.org", func(p *ProtoEvent) {
			p.Content = json.RawMessage(`{"body":"` + strings.Repeat("x", MaxEventSize) + `"}`)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok()
			if tc.mod != nil {
				tc.mod(p)
			}
			ev, err := BuildEvent(tc.v, p, tc.origin, key)
			if err == nil {
				t.Fatalf("built %s", ev.JSON())
			}
			if _, isMatrix := AsError(err); !isMatrix {
				t.Fatalf("error %v is not a *matrix.Error", err)
			}
		})
	}
}

func TestParseEventRejects(t *testing.T) {
	r := newTestRoom(t, RoomVersion11, nil)
	good := r.mustSend(r.msg(bob)).JSON()
	var base map[string]any
	if err := json.Unmarshal(good, &base); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(m map[string]any)
	}{
		{"no type", func(m map[string]any) { delete(m, "type") }},
		{"no sender", func(m map[string]any) { delete(m, "sender") }},
		{"no room_id", func(m map[string]any) { delete(m, "room_id") }},
		{"no content", func(m map[string]any) { delete(m, "content") }},
		{"no depth", func(m map[string]any) { delete(m, "depth") }},
		{"no origin_server_ts", func(m map[string]any) { delete(m, "origin_server_ts") }},
		{"no prev_events", func(m map[string]any) { delete(m, "prev_events") }},
		{"no auth_events", func(m map[string]any) { delete(m, "auth_events") }},
		{"no hashes", func(m map[string]any) { delete(m, "hashes") }},
		{"no signatures", func(m map[string]any) { delete(m, "signatures") }},
		{"type not string", func(m map[string]any) { m["type"] = 5 }},
		{"state_key not string", func(m map[string]any) { m["state_key"] = false }},
		{"bad sender", func(m map[string]any) { m["sender"] = "alice" }},
		{"hashed room ID in v11", func(m map[string]any) { m["room_id"] = "!" + strings.Repeat("A", 43) }},
		{"content not object", func(m map[string]any) { m["content"] = "x" }},
		{"depth negative", func(m map[string]any) { m["depth"] = -1 }},
		{"depth string", func(m map[string]any) { m["depth"] = "1" }},
		{"prev_events not IDs", func(m map[string]any) { m["prev_events"] = []any{1} }},
		{"legacy event ID", func(m map[string]any) { m["auth_events"] = []any{"$abc:example.org"} }},
		{"unsigned not object", func(m map[string]any) { m["unsigned"] = 1 }},
		{"too large", func(m map[string]any) { m["content"] = map[string]any{"x": strings.Repeat("y", MaxEventSize)} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]any{}
			for k, v := range base {
				m[k] = v
			}
			tc.edit(m)
			raw, _ := json.Marshal(m)
			if ev, err := ParseEvent(RoomVersion11, raw); err == nil {
				t.Fatalf("parsed %s", ev.JSON())
			}
		})
	}
	if _, err := ParseEvent(RoomVersion11, []byte(`{"a":1.5}`)); err == nil {
		t.Error("parsed a float")
	}
	if _, err := ParseEvent("13", good); err == nil {
		t.Error("parsed an unsupported version")
	}
	// v12: a non-create event needs a hashed room ID.
	if _, err := ParseEvent(RoomVersion12, good); err == nil {
		t.Error("v12 accepted a classic room ID")
	}
}

func TestRoomAndEventIDs(t *testing.T) {
	hash := strings.Repeat("A", 42) + "Q"
	tests := []struct {
		in     string
		room   bool // valid room ID
		event  bool // valid event ID
		hashed bool
	}{
		{"!abc:example.org", true, false, false},
		{"!abc:example.org:8448", true, false, false},
		{"!a\u00e9:[::1]", true, false, false},
		{"!" + hash, true, false, true},
		{"$" + hash, false, true, false},
		{"$" + strings.Repeat("A", 42) + "B", false, false, false}, // non-zero padding bits
		{"$" + strings.Repeat("A", 42), false, false, false},       // too short
		{"$abc:example.org", false, true, false},
		{"!abc", false, false, false},
		{"!:example.org", false, false, false},
		{"!abc:bad_server", false, false, false},
		{"!a\x00b:example.org", false, false, false},
		{"!a\xffb:example.org", false, false, false},
		{"abc:example.org", false, false, false},
		{"!" + strings.Repeat("a", 250) + ":example.org", false, false, false},
		{"", false, false, false},
	}
	for _, tc := range tests {
		rid, err := ParseRoomID(tc.in)
		if (err == nil) != tc.room {
			t.Errorf("ParseRoomID(%q) error %v, want valid=%v", tc.in, err, tc.room)
		}
		if err == nil && rid.Hashed() != tc.hashed {
			t.Errorf("%q Hashed() = %v", tc.in, rid.Hashed())
		}
		if _, err := ParseEventID(tc.in); (err == nil) != tc.event {
			t.Errorf("ParseEventID(%q) error %v, want valid=%v", tc.in, err, tc.event)
		}
	}
	if s, ok := RoomID("!abc:example.org:8448").Server(); !ok || s != "example.org:8448" {
		t.Errorf("Server() = %q %v", s, ok)
	}
	if _, ok := RoomID("!" + hash).Server(); ok {
		t.Error("hashed room ID has a server")
	}
	seen := map[RoomID]bool{}
	for range 100 {
		id, err := NewRoomID("example.org")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseRoomID(string(id)); err != nil || id.Hashed() || seen[id] || len(id) != len("!:example.org")+18 {
			t.Fatalf("NewRoomID gave %q (%v)", id, err)
		}
		seen[id] = true
	}
	if _, err := NewRoomID("bad server"); err == nil {
		t.Error("NewRoomID accepted a bad server name")
	}
}

func TestRoomVersions(t *testing.T) {
	if DefaultRoomVersion != "10" {
		t.Fatalf("default %s", DefaultRoomVersion)
	}
	got := SupportedRoomVersions()
	if len(got) != 12 {
		t.Fatalf("SupportedRoomVersions() = %v", got)
	}
	for i := 1; i <= 12; i++ {
		if got[RoomVersion(strconv.Itoa(i))] != "stable" {
			t.Fatalf("SupportedRoomVersions() = %v, lacks %d", got, i)
		}
	}
	if !DefaultRoomVersion.Supported() {
		t.Fatal("default version unsupported")
	}
	for _, v := range []string{"0", "01", "13", "", "org.example.v"} {
		_, err := ParseRoomVersion(v)
		me, ok := AsError(err)
		if !ok || me.Code != "M_UNSUPPORTED_ROOM_VERSION" {
			t.Errorf("ParseRoomVersion(%q) = %v", v, err)
		}
	}
	if v, err := ParseRoomVersion("11"); err != nil || v != RoomVersion11 {
		t.Errorf("ParseRoomVersion(11) = %v %v", v, err)
	}
}

func TestStatePersistence(t *testing.T) {
	r := newTestRoom(t, RoomVersion12, nil)
	ev := r.last
	var s State
	if s.Get(StateKey{Type: TypeCreate}) != nil || s.Len() != 0 {
		t.Fatal("zero State not empty")
	}
	const n = 5000
	states := make([]State, 0, n+1)
	states = append(states, s)
	for i := range n {
		s = s.With(StateKey{Type: TypeMember, StateKey: fmt.Sprintf("@u%d:x", i)}, ev)
		states = append(states, s)
	}
	if s.Len() != n {
		t.Fatalf("Len %d", s.Len())
	}
	// Every earlier version still sees exactly its own entries.
	for _, i := range []int{0, 1, 31, 32, 33, 1000, n} {
		st := states[i]
		if st.Len() != i {
			t.Fatalf("state %d has Len %d", i, st.Len())
		}
		for _, j := range []int{0, i - 1, i, n - 1} {
			got := st.Get(StateKey{Type: TypeMember, StateKey: fmt.Sprintf("@u%d:x", j)})
			if (got != nil) != (j >= 0 && j < i) {
				t.Fatalf("state %d, key %d: %v", i, j, got)
			}
		}
	}
	seen := map[StateKey]bool{}
	for k, v := range s.All() {
		if seen[k] || v != ev {
			t.Fatalf("All: duplicate or wrong %v", k)
		}
		seen[k] = true
	}
	if len(seen) != n {
		t.Fatalf("All yielded %d", len(seen))
	}
	// Replacing keeps Len and leaves the old state alone.
	k := StateKey{Type: TypeMember, StateKey: "@u7:x"}
	s2 := s.With(k, r.create)
	if s2.Len() != n || s2.Get(k) != r.create || s.Get(k) != ev {
		t.Fatal("replace")
	}
	// A message does not change state.
	if m := r.build(r.msg(bob)); Apply(s, m).Len() != n {
		t.Fatal("message changed state")
	}
}

// TestStateCollisions drives the trie below its last level with forged
// hashes, which maphash will practically never produce.
func TestStateCollisions(t *testing.T) {
	n := &stateNode{}
	entries := []*stateEntry{
		{hash: 42, key: StateKey{"a", "1"}},
		{hash: 42, key: StateKey{"a", "2"}},
		{hash: 42, key: StateKey{"a", "3"}},
		{hash: 42 | 1<<63, key: StateKey{"a", "4"}},
		{hash: 7, key: StateKey{"a", "5"}},
	}
	for _, e := range entries {
		e.ev = &Event{typ: e.key.StateKey}
		var added bool
		n, added = n.insert(e, 0)
		if !added {
			t.Fatalf("%v not added", e.key)
		}
	}
	for _, e := range entries {
		if got := n.get(e.hash, e.key); got != e.ev {
			t.Fatalf("get %v = %v", e.key, got)
		}
	}
	repl := &stateEntry{hash: 42, key: StateKey{"a", "2"}, ev: &Event{typ: "new"}}
	n2, added := n.insert(repl, 0)
	if added || n2.get(42, repl.key).typ != "new" || n.get(42, repl.key).typ != "2" {
		t.Fatal("collision replace")
	}
	if n.get(42, StateKey{"a", "9"}) != nil {
		t.Fatal("found a missing key")
	}
	count := 0
	n2.each(func(StateKey, *Event) bool { count++; return true })
	if count != len(entries) {
		t.Fatalf("each visited %d", count)
	}
}

func FuzzParseEvent(f *testing.F) {
	r := newTestRoom(f, RoomVersion12, nil)
	f.Add([]byte(r.build(r.msg(bob)).JSON()))
	f.Add([]byte(r.create.JSON()))
	f.Add([]byte(r.state.Get(StateKey{Type: TypePowerLevels}).JSON()))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, v := range allVersions {
			ev, err := ParseEvent(v, raw)
			if err != nil {
				continue
			}
			// Whatever parses must survive everything else without panicking.
			_ = ev.CheckContentHash()
			if red, err := ev.Redact(); err == nil && red.ID() != ev.ID() {
				t.Fatalf("redaction changed the ID")
			}
			_ = Authorize(ev, r.state)
			_ = Authorize(ev, State{})
			_, _ = AuthEventsFor(r.state, &ProtoEvent{Type: ev.Type(), StateKey: ev.StateKey(), Sender: ev.Sender(), Content: ev.Content()})
			_ = Apply(r.state, ev)
		}
	})
}
