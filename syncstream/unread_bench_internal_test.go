package syncstream

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// BenchmarkWindowUnread10k measures what a message to a room of 10,000
// members costs the sync window's counts: for every member syncing, one
// evaluation of their rules against the new event (the event is decoded
// once for all) and the copy of their room counting state it advances.
// It reports the cost per recipient and the memory of one parsed ruleset
// (what the worker's rules cache holds per user).
func BenchmarkWindowUnread10k(b *testing.B) {
	const members = 10000
	key, err := matrix.GenerateKeyPair("bench")
	if err != nil {
		b.Fatal(err)
	}
	empty := ""
	pl, err := matrix.BuildEvent(matrix.RoomVersion10, &matrix.ProtoEvent{
		Type: "m.room.power_levels", StateKey: &empty, Sender: "@alice:x", RoomID: "!r:x",
		Content: json.RawMessage(`{"users":{"@alice:x":100},"notifications":{"room":50}}`), Depth: 1, OriginServerTS: 1,
	}, "x", key)
	if err != nil {
		b.Fatal(err)
	}
	room := store.NewPushRoom("!r:x", members, nil, pl)
	rules := make([]*matrix.PushRuleset, members)
	bases := make([]*store.UnreadRoom, members)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range members {
		u := fmt.Sprintf("@user%d:x", i)
		if rules[i], err = matrix.ParsePushRules(u, nil); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	for i := range members {
		u := fmt.Sprintf("@user%d:x", i)
		bases[i] = &store.UnreadRoom{Room: room, UserID: u, DisplayName: fmt.Sprintf("User %d", i), JoinPos: 1024, Read: map[string]int64{"": 2048}}
	}
	ev := &windowEvent{StoredEvent: store.StoredEvent{Pos: 1 << 30, EventID: "$e", RoomID: "!r:x", Type: "m.room.message", Sender: "@alice:x",
		Client: json.RawMessage(`{"content":{"msgtype":"m.text","body":"Has anyone seen the release notes for the new version yet?"},"event_id":"$e","origin_server_ts":1,"room_id":"!r:x","sender":"@alice:x","type":"m.room.message"}`)},
		push: &lazyPushEvent{}}
	evs := []*windowEvent{ev}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i := range members {
			if u, ok := windowUnread(rules[i], bases[i], evs); !ok || u.Counts.Main.Notifications != 1 {
				b.Fatalf("recipient %d: %+v %v", i, u, ok)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*members), "ns/recipient")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/members, "B/ruleset")
}
