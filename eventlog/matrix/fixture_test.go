package matrix

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// Users of the test rooms. alice creates every room; mod gets power 50;
// bob joins with the default 0; carol and dave (on another server) start
// outside.
const (
	alice UserID = "@alice:example.org"
	mod   UserID = "@mod:example.org"
	bob   UserID = "@bob:example.org"
	carol UserID = "@carol:example.org"
	dave  UserID = "@dave:other.org"
)

// allVersions are the versions every version-independent test runs in.
var allVersions = []RoomVersion{RoomVersion1, RoomVersion2, RoomVersion3, RoomVersion4, RoomVersion5, RoomVersion6,
	RoomVersion7, RoomVersion8, RoomVersion9, RoomVersion10, RoomVersion11, RoomVersion12}

// preV11 are the versions whose create event names the creator in content.
var preV11 = allVersions[:10]

// preV12 are the versions whose creator is an ordinary user in power levels.
var preV12 = allVersions[:11]

// bogusEventID is a well-formed event ID of version v that names no event.
func bogusEventID(v RoomVersion) EventID {
	switch v {
	case RoomVersion1, RoomVersion2:
		return "$bogus:example.org"
	case RoomVersion3:
		return EventID("$" + strings.Repeat("A", 41) + "/A") // '/' makes it standard base64 only
	}
	return EventID("$" + strings.Repeat("A", 43))
}

// versionsFrom returns the versions from v on.
func versionsFrom(v RoomVersion) []RoomVersion {
	for i, w := range allVersions {
		if w == v {
			return allVersions[i:]
		}
	}
	return nil
}

// testRoom builds, authorises and applies events in order, like the api
// will: auth_events from AuthEventsFor, prev_events the last event.
type testRoom struct {
	t      testing.TB
	v      RoomVersion
	keys   map[ServerName]*KeyPair
	state  State
	roomID RoomID
	create *Event
	last   *Event
	depth  int64
	ts     int64
}

func (r *testRoom) key(s ServerName) *KeyPair {
	if k, ok := r.keys[s]; ok {
		return k
	}
	k, err := GenerateKeyPair("t")
	if err != nil {
		r.t.Fatal(err)
	}
	r.keys[s] = k
	return k
}

func sk(s string) *string { return &s }

func jsonOf(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newEmptyRoom builds and applies only the create event.
func newEmptyRoom(t testing.TB, v RoomVersion, createContent map[string]any) *testRoom {
	t.Helper()
	r := &testRoom{t: t, v: v, keys: map[ServerName]*KeyPair{}}
	content := map[string]any{"room_version": string(v)}
	if v.CreatorInContent() {
		content["creator"] = string(alice)
	}
	for k, val := range createContent {
		if val == nil {
			delete(content, k)
		} else {
			content[k] = val
		}
	}
	p := &ProtoEvent{Type: TypeCreate, StateKey: sk(""), Sender: alice, Content: jsonOf(t, content), Depth: 1, OriginServerTS: 1000}
	if v != RoomVersion12 {
		id, err := NewRoomID("example.org")
		if err != nil {
			t.Fatal(err)
		}
		p.RoomID = id
	}
	ev, err := BuildEvent(v, p, "example.org", r.key("example.org"))
	if err != nil {
		t.Fatalf("build create: %v", err)
	}
	if err := Authorize(ev, r.state); err != nil {
		t.Fatalf("authorise create: %v", err)
	}
	r.state = Apply(r.state, ev)
	r.roomID, r.create, r.last, r.depth, r.ts = ev.RoomID(), ev, ev, 1, 1000
	return r
}

// newTestRoom builds the room most tests start from: alice creates it and
// joins, sets power levels (alice 100 before v12, where she is creator
// anyway; mod 50), makes it public, and mod and bob join. createContent is
// merged into the create event's content; rooms that must differ need
// different content, since a v12 room ID is a hash of the create event.
func newTestRoom(t testing.TB, v RoomVersion, createContent map[string]any) *testRoom {
	t.Helper()
	r := newEmptyRoom(t, v, createContent)
	r.mustSend(r.member(alice, alice, "join", nil))
	users := map[string]any{string(mod): 50}
	if v != RoomVersion12 {
		users[string(alice)] = 100
	}
	r.mustSend(r.stateEv(alice, TypePowerLevels, "", map[string]any{"users": users}))
	r.mustSend(r.stateEv(alice, TypeJoinRules, "", map[string]any{"join_rule": "public"}))
	r.mustSend(r.member(mod, mod, "join", nil))
	r.mustSend(r.member(bob, bob, "join", nil))
	return r
}

func (r *testRoom) member(sender, target UserID, membership string, extra map[string]any) *ProtoEvent {
	c := map[string]any{"membership": membership}
	for k, v := range extra {
		c[k] = v
	}
	return &ProtoEvent{Type: TypeMember, StateKey: sk(string(target)), Sender: sender, Content: jsonOf(r.t, c)}
}

func (r *testRoom) stateEv(sender UserID, typ, stateKey string, content any) *ProtoEvent {
	return &ProtoEvent{Type: typ, StateKey: sk(stateKey), Sender: sender, Content: jsonOf(r.t, content)}
}

func (r *testRoom) msg(sender UserID) *ProtoEvent {
	return &ProtoEvent{Type: "m.room.message", Sender: sender, Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)}
}

// build fills in room, prev_events, depth, timestamps and auth_events and
// signs as the sender's server.
func (r *testRoom) build(p *ProtoEvent) *Event {
	r.t.Helper()
	if p.RoomID == "" {
		p.RoomID = r.roomID
	}
	if p.PrevEvents == nil {
		p.PrevEvents = []EventID{r.last.ID()}
	}
	if p.Depth == 0 {
		p.Depth = r.depth + 1
	}
	if p.OriginServerTS == 0 {
		p.OriginServerTS = r.ts + 1
	}
	if p.AuthEvents == nil {
		ids, err := AuthEventsFor(r.state, p)
		if err != nil {
			r.t.Fatalf("AuthEventsFor: %v", err)
		}
		p.AuthEvents = ids
	}
	server := p.Sender.Server()
	ev, err := BuildEvent(r.v, p, server, r.key(server))
	if err != nil {
		r.t.Fatalf("BuildEvent: %v", err)
	}
	return ev
}

// send authorises ev against the state and applies it if allowed.
func (r *testRoom) sendEvent(ev *Event) error {
	if err := Authorize(ev, r.state); err != nil {
		return err
	}
	r.state = Apply(r.state, ev)
	r.last, r.depth, r.ts = ev, ev.Depth(), ev.OriginServerTS()
	return nil
}

func (r *testRoom) send(p *ProtoEvent) error { return r.sendEvent(r.build(p)) }

func (r *testRoom) mustSend(p *ProtoEvent) *Event {
	r.t.Helper()
	ev := r.build(p)
	if err := r.sendEvent(ev); err != nil {
		r.t.Fatalf("send %s from %s: %v", ev.Type(), ev.Sender(), err)
	}
	return ev
}

// cosign adds server's signature to ev, as the resident server does for a
// restricted join.
func (r *testRoom) cosign(ev *Event, server ServerName) *Event {
	r.t.Helper()
	raw, err := SignEventJSON(r.v, ev.JSON(), server, r.key(server))
	if err != nil {
		r.t.Fatal(err)
	}
	out, err := ParseEvent(r.v, raw)
	if err != nil {
		r.t.Fatal(err)
	}
	if out.ID() != ev.ID() {
		r.t.Fatal("co-signing changed the event ID")
	}
	return out
}

// checkEventIDForm fails t unless ev's ID has the form of version v: the
// event's own event_id "$opaque:server" in v1–v2, the reference hash in
// standard unpadded base64 in v3 and URL-safe unpadded base64 from v4.
func checkEventIDForm(t testing.TB, v RoomVersion, ev *Event) {
	t.Helper()
	id := string(ev.ID())
	switch v {
	case RoomVersion1, RoomVersion2:
		own, _ := stringMember(ev.JSON(), "event_id")
		if own != id || !strings.HasSuffix(id, ":example.org") || !strings.HasPrefix(id, "$") {
			t.Fatalf("v%s event ID %q, event_id %q", v, id, own)
		}
		return
	}
	if lookup(ev.JSON(), "event_id") != nil {
		t.Fatalf("v%s event carries an event_id", v)
	}
	sum, err := ReferenceHash(v, ev.JSON())
	if err != nil {
		t.Fatal(err)
	}
	want := "$" + base64.RawURLEncoding.EncodeToString(sum[:])
	if v == RoomVersion3 {
		want = "$" + base64.RawStdEncoding.EncodeToString(sum[:])
	}
	if id != want {
		t.Fatalf("v%s event ID %s, want %s", v, id, want)
	}
}
