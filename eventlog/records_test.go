package eventlog_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/eventlog/matrix"
)

// A room record the projector could never apply (no events, or more than
// MaxEventsPerRecord) is refused with M_TOO_LARGE before the append,
// whichever handler built it, and the log does not move.
func TestAppendRefusesRoomRecordsTheProjectionCannotHold(t *testing.T) {
	srv := logtest.Start(t)
	ctx := context.Background()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	l, err := eventlog.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.EnsureStreams(ctx, l.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	room := "!r:example.org"
	for _, n := range []int{0, eventlog.MaxEventsPerRecord + 1} {
		rec := &eventlog.RoomEvents{RoomID: room, RoomVersion: "10"}
		for range n {
			rec.Events = append(rec.Events, json.RawMessage(`{}`))
		}
		_, err := l.Append(ctx, eventlog.RoomSubject(room), rec, eventlog.AppendOptions{Room: room})
		if me, ok := matrix.AsError(err); !ok || me.Code != "M_TOO_LARGE" {
			t.Errorf("%d events: %v, want M_TOO_LARGE", n, err)
		}
	}
	if head, err := l.Head(ctx, eventlog.StreamRooms); err != nil || head != 0 {
		t.Fatalf("ROOMS head %d (%v): a refused record was appended", head, err)
	}
	rec := &eventlog.RoomEvents{RoomID: room, RoomVersion: "10", Events: []json.RawMessage{json.RawMessage(`{}`)}}
	if _, err := l.Append(ctx, eventlog.RoomSubject(room), rec, eventlog.AppendOptions{Room: room}); err != nil {
		t.Fatalf("one event: %v", err)
	}
}
