package syncstream

import (
	"fmt"
	"testing"

	"strand/eventlog"
	"strand/projector/store"
)

func memberAt(room, user string, seq uint64) store.StoredEvent {
	return store.StoredEvent{Pos: eventlog.EventPos(seq, 0), RoomID: room, Type: "m.room.member", StateKey: &user, Sender: user}
}

func learned(evs ...store.StoredEvent) map[string]map[string]store.StoredEvent {
	var b windowBase
	for _, e := range evs {
		b.learnMember(e)
	}
	return b.members
}

// The shared member events are exact as of the position asked for: none
// before the consumer started, none from a snapshot older than a member
// change the consumer read, none newer than the position, and a member
// event or a redaction read by the consumer drops what it supersedes.
func TestMemberCacheExact(t *testing.T) {
	const r, u, v = "!r:x", "@u:x", "@v:x"
	var c memberCache
	c.learn(5, learned(memberAt(r, u, 3)))
	if _, ok := c.get(r, u, 5); ok {
		t.Fatal("learned before the consumer started: changes before then are unknown")
	}
	c.start(10)
	c.learn(9, learned(memberAt(r, u, 3)))
	if _, ok := c.get(r, u, 12); ok {
		t.Fatal("learned from a snapshot older than where the consumer started")
	}
	c.learn(12, learned(memberAt(r, u, 3), memberAt(r, v, 11)))
	if e, ok := c.get(r, u, 12); !ok || e.Pos != eventlog.EventPos(3, 0) {
		t.Fatalf("u's member event: %v %v", e.Pos, ok)
	}
	if _, ok := c.get(r, v, 10); ok {
		t.Fatal("a member event newer than the position asked for was given")
	}

	// u's membership changes at 13: dropped, and the snapshot at 12 (which
	// still shows the old one) is not learned from again.
	newer := memberAt(r, u, 13)
	c.changed(change{stream: eventlog.StreamRooms, seq: 13, rooms: []string{r}, events: []windowEvent{{StoredEvent: newer}}})
	if _, ok := c.get(r, u, 13); ok {
		t.Fatal("a superseded member event was kept")
	}
	if _, ok := c.get(r, v, 13); !ok {
		t.Fatal("another user's member event was dropped by u's change")
	}
	c.learn(12, learned(memberAt(r, u, 3)))
	if _, ok := c.get(r, u, 13); ok {
		t.Fatal("learned from a snapshot older than a change the consumer read")
	}
	c.learn(13, learned(newer))
	if e, ok := c.get(r, u, 13); !ok || e.Pos != newer.Pos {
		t.Fatalf("u's new member event: %v %v", e.Pos, ok)
	}

	// A redaction in the room drops all of the room's; so does a record
	// the worker could not parse.
	c.changed(change{stream: eventlog.StreamRooms, seq: 14, rooms: []string{r}, events: []windowEvent{{StoredEvent: store.StoredEvent{RoomID: r, Type: "m.room.redaction"}}}})
	if _, ok := c.get(r, v, 14); ok {
		t.Fatal("a redaction left the room's member events")
	}
	c.learn(14, learned(memberAt(r, v, 11)))
	c.changed(change{stream: eventlog.StreamRooms, seq: 15, rooms: []string{r}})
	if _, ok := c.get(r, v, 15); ok {
		t.Fatal("an unparsed record left the room's member events")
	}
	// A message changes nothing.
	c.learn(15, learned(memberAt(r, v, 11)))
	c.changed(change{stream: eventlog.StreamRooms, seq: 16, rooms: []string{r}, events: []windowEvent{{StoredEvent: store.StoredEvent{RoomID: r, Type: "m.room.message"}}}})
	if _, ok := c.get(r, v, 16); !ok {
		t.Fatal("a message dropped a member event")
	}
}

// The cache is bounded, and a clear forgets the rooms' changes only
// together with raising the floor: a snapshot from before a change it
// forgot is not learned from.
func TestMemberCacheBounded(t *testing.T) {
	var c memberCache
	c.start(1)
	c.changed(change{stream: eventlog.StreamRooms, seq: 5, rooms: []string{"!changed:x"}, events: []windowEvent{{StoredEvent: memberAt("!changed:x", "@u:x", 5)}}})
	for i := range memberCacheMax + 10 {
		c.learn(6, learned(memberAt(fmt.Sprintf("!r%d:x", i), "@u:x", 2)))
	}
	if c.entries > memberCacheMax || c.entries == 0 {
		t.Fatalf("%d entries, bound %d", c.entries, memberCacheMax)
	}
	c.learn(4, learned(memberAt("!changed:x", "@u:x", 3)))
	if _, ok := c.get("!changed:x", "@u:x", 6); ok {
		t.Fatal("after a clear, learned from a snapshot older than a change it forgot")
	}
	// Rooms whose members change are bounded too.
	for i := range memberCacheMax + 10 {
		c.changed(change{stream: eventlog.StreamRooms, seq: uint64(10 + i), rooms: []string{fmt.Sprintf("!m%d:x", i)}, events: []windowEvent{{StoredEvent: memberAt(fmt.Sprintf("!m%d:x", i), "@u:x", uint64(10+i))}}})
	}
	if len(c.rooms) > memberCacheMax || c.floor < 10 {
		t.Fatalf("%d rooms remembered (bound %d), floor %d", len(c.rooms), memberCacheMax, c.floor)
	}
}
