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
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// heldWorker is a sync worker's consumer on a real log and database, with
// no projector running yet.
type heldWorker struct {
	l       *eventlog.Log
	st      *store.Store
	wm      *eventlog.Watermark
	readers *eventlog.Readers
	n       *Notifier
}

func startHeldWorker(ctx context.Context, t *testing.T) *heldWorker {
	t.Helper()
	ns := logtest.Start(t)
	l, err := eventlog.New(ns.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
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
	hw := &heldWorker{l: l, st: st, wm: wm, readers: readers, n: NewNotifier(DefaultRecent)}
	c := &Consumer{Log: l, Store: st, Notifier: hw.n, Ephemeral: NewEphemeral(), Readers: readers, Watermark: wm}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	})
	for readers.Count(ReadersTopic(eventlog.StreamRooms)) == 0 {
		time.Sleep(10 * time.Millisecond) // the consumer's first report: it reads from here on
	}
	return hw
}

// createRoom appends a room's creation, and returns its sequence.
func (hw *heldWorker) createRoom(ctx context.Context, t *testing.T, roomID, creator string) uint64 {
	t.Helper()
	var events []json.RawMessage
	prev := []string{}
	for i, e := range []map[string]any{
		{"type": "m.room.create", "state_key": "", "content": map[string]any{"room_version": "10"}},
		{"type": "m.room.member", "state_key": creator, "content": map[string]any{"membership": "join"}},
	} {
		e["room_id"], e["sender"], e["depth"], e["origin_server_ts"] = roomID, creator, i+1, 1000+i
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
	seq, err := hw.l.Append(ctx, eventlog.RoomSubject(roomID), &eventlog.RoomEvents{RoomID: roomID, RoomVersion: "10", Events: events}, eventlog.AppendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// startProjector runs a projector until the test ends.
func (hw *heldWorker) startProjector(ctx context.Context, t *testing.T) {
	t.Helper()
	p := &projector.Projector{Log: hw.l, Store: hw.st}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	})
}

// A long-poll woken by a room record finds the record applied and this
// worker's report of it already made, so the writer, who waits for both,
// is answered before the thousands of responses a busy room's record
// wakes are written, not after them. The projector starts only after the
// consumer has had time to read the record: a consumer that wakes polls
// when it reads a record wakes this one before either.
func TestRoomRecordReportedBeforeWake(t *testing.T) {
	ctx := t.Context()
	hw := startHeldWorker(ctx, t)
	roomID, alice := "!held:example.org", "@alice:example.org"
	w, _ := hw.n.Register(alice, []string{roomID}, map[string]uint64{eventlog.StreamRooms: 0})
	defer hw.n.Unregister(w)
	seq := hw.createRoom(ctx, t, roomID, alice)

	woken := false
	select {
	case <-w.ch:
		woken = true
	case <-time.After(300 * time.Millisecond):
	}
	hw.startProjector(ctx, t)
	if !woken {
		select {
		case <-w.ch:
		case <-time.After(30 * time.Second):
			t.Fatal("the long-poll was not woken after the projector applied the record")
		}
	}
	if g := hw.wm.Applied(eventlog.StreamRooms); g < seq {
		t.Errorf("a long-poll was woken by seq %d while ROOMS was applied through %d", seq, g)
	}
	if err := hw.readers.Await(ctx, ReadersTopic(eventlog.StreamRooms), seq, 0); err != nil {
		t.Errorf("a long-poll was woken before the worker reported seq %d: %v", seq, err)
	}
}

// A held record is released even when the projector's applied
// notification never arrives (core NATS, at most once): the consumer reads
// the lanes' positions itself while it holds something.
func TestHeldRecordReleasedWithoutNotification(t *testing.T) {
	ctx := t.Context()
	hw := startHeldWorker(ctx, t)
	hw.wm.RefreshEvery = 50 * time.Millisecond
	if err := hw.wm.Close(); err != nil { // hears no notification from here on
		t.Fatal(err)
	}
	roomID, alice := "!unheard:example.org", "@alice:example.org"
	w, _ := hw.n.Register(alice, []string{roomID}, map[string]uint64{eventlog.StreamRooms: 0})
	defer hw.n.Unregister(w)
	hw.startProjector(ctx, t)
	seq := hw.createRoom(ctx, t, roomID, alice)
	select {
	case <-w.ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("seq %d, applied by the projector, never woke its long-poll", seq)
	}
}
