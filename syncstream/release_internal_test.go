package syncstream

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/eventlog/matrix"
	"strand/projector"
	"strand/projector/store/storetest"
)

// A long-poll woken by a room record finds the record applied and this
// worker's report of it already made, so the writer, who waits for both,
// is answered before the thousands of responses a busy room's record
// wakes are written, not after them. The projector starts only after the
// consumer has had time to read the record: a consumer that wakes polls
// when it reads a record wakes this one before either.
func TestRoomRecordReportedBeforeWake(t *testing.T) {
	ns := logtest.Start(t)
	l, err := eventlog.New(ns.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := eventlog.EnsureStreams(ctx, l.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	st, _ := storetest.Open(t)
	wm, err := eventlog.NewWatermark(l.Conn(), st.Position)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wm.Close() })
	readers, err := eventlog.NewReaders(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(readers.Close)
	n := NewNotifier(DefaultRecent)
	c := &Consumer{Log: l, Store: st, Notifier: n, Ephemeral: NewEphemeral(), Readers: readers, Watermark: wm}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	}()
	topic := ReadersTopic(eventlog.StreamRooms)
	for readers.Count(topic) == 0 {
		time.Sleep(10 * time.Millisecond) // the consumer's first report: it reads from here on
	}

	roomID, alice := "!held:example.org", "@alice:example.org"
	w, _ := n.Register(alice, []string{roomID}, map[string]uint64{eventlog.StreamRooms: 0})
	defer n.Unregister(w)
	var events []json.RawMessage
	prev := []string{}
	for i, e := range []map[string]any{
		{"type": "m.room.create", "state_key": "", "content": map[string]any{"room_version": "10"}},
		{"type": "m.room.member", "state_key": alice, "content": map[string]any{"membership": "join"}},
	} {
		e["room_id"], e["sender"], e["depth"], e["origin_server_ts"] = roomID, alice, i+1, 1000+i
		e["auth_events"], e["prev_events"], e["hashes"], e["signatures"] = []string{}, prev, map[string]string{"sha256": "x"}, map[string]any{}
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := matrix.ParseEvent("10", raw)
		if err != nil {
			t.Fatal(err)
		}
		events, prev = append(events, raw), []string{string(ev.ID())}
	}
	seq, err := l.Append(ctx, eventlog.RoomSubject(roomID), &eventlog.RoomEvents{RoomID: roomID, RoomVersion: "10", Events: events}, eventlog.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}

	woken := false
	select {
	case <-w.ch:
		woken = true
	case <-time.After(300 * time.Millisecond):
	}
	p := &projector.Projector{Log: l, Store: st}
	pctx, stop := context.WithCancel(ctx)
	pdone := make(chan error, 1)
	go func() { pdone <- p.Run(pctx) }()
	defer func() {
		stop()
		if err := <-pdone; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	}()
	if !woken {
		select {
		case <-w.ch:
		case <-time.After(30 * time.Second):
			t.Fatal("the long-poll was not woken after the projector applied the record")
		}
	}
	if g := wm.Applied(eventlog.StreamRooms); g < seq {
		t.Errorf("a long-poll was woken by seq %d while ROOMS was applied through %d", seq, g)
	}
	if err := readers.Await(ctx, topic, seq, 0); err != nil {
		t.Errorf("a long-poll was woken before the worker reported seq %d: %v", seq, err)
	}
}
