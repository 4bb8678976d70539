package projector_test

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"strand/eventlog"
	"strand/projector"
)

// appendRaw puts data on the log as a record of type typ, bypassing every
// check the api makes: what a hand-edited log, a bug, or an older Strand
// may have left there.
func appendRaw(ctx context.Context, t *testing.T, l *eventlog.Log, subject, typ, data string) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	m.Header.Set(eventlog.HeaderType, typ)
	ack, err := l.JetStream().PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// Records that can never be applied, between good ones in one batch: the
// good ones are applied, each bad one is set aside with its error, the
// lane goes on, the metric counts them, and a replay sets aside exactly the
// same records (invariant 11).
func TestUnappliableRecordsAreSetAside(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, st, _ := testLogAndStore(ctx, t)
	subj := eventlog.UserSubject(testUser)
	adType := (eventlog.AccountDataSet{}).RecordType()

	appendAccountData(ctx, t, l, 1, 1)
	bad := map[uint64]string{ // seq → what the stored error must mention
		appendRaw(ctx, t, l, subj, adType, `{"user_id":"@a:example.org","type":"x.surrogate","content":{"k":"\ud800"}}`): "SQLSTATE 22",
		appendRaw(ctx, t, l, subj, adType, `not json at all`):                                                            "record cannot be applied",
		appendRaw(ctx, t, l, subj, "x.unknown.type", `{}`):                                                               "unknown record type",
		appendRaw(ctx, t, l, subj, (eventlog.DeviceCreated{}).RecordType(),
			`{"user_id":"@a:example.org","device_id":"`+incompressible(6000)+`","token_hash":"00ff"}`): "SQLSTATE 54000",
		appendRaw(ctx, t, l, subj, adType, `{"user_id":"@a:example.org","type":"x.big","content":{"k":1e200000}}`): "SQLSTATE 22",
	}
	good := appendRaw(ctx, t, l, subj, adType, `{"user_id":"@a:example.org","type":"x.after","content":{"ok":true}}`)

	reg := prometheus.NewRegistry()
	p := &projector.Projector{Log: l, Store: st, Logger: discardLogger()}
	if err := p.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	// A writer waiting for its record learns that it was set aside, so it
	// does not report success.
	wm, err := eventlog.NewWatermark(l.Conn(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	stop := runProjector(ctx, t, p)
	waitPosition(ctx, t, st, good)
	if err := wm.Wait(ctx, eventlog.StreamAccounts, good); err != nil {
		t.Fatal(err)
	}
	stop()
	for seq := range bad {
		if !wm.SetAside(eventlog.StreamAccounts, seq) {
			t.Errorf("the watermark was not told that seq %d was set aside", seq)
		}
	}
	if wm.SetAside(eventlog.StreamAccounts, good) || wm.SetAside(eventlog.StreamAccounts, 1) {
		t.Error("the watermark reports an applied record as set aside")
	}

	content, err := st.AccountData(ctx, testUser, "", "x.after")
	if err != nil || !strings.Contains(string(content), `"ok"`) {
		t.Fatalf("the record after the bad ones was not applied: %s %v", content, err)
	}
	recs, err := st.SetAsideRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(bad) {
		t.Fatalf("%d records set aside, want %d: %+v", len(recs), len(bad), recs)
	}
	for _, r := range recs {
		want, ok := bad[r.Seq]
		if !ok || r.Stream != eventlog.StreamAccounts || r.Subject != subj || !strings.Contains(r.Error, want) {
			t.Errorf("set aside %+v; want one of the bad records, with an error mentioning %q", r, want)
		}
	}
	if n := counterValue(t, reg, "strand_projector_set_aside_total", eventlog.StreamAccounts); n != float64(len(bad)) {
		t.Errorf("strand_projector_set_aside_total = %v, want %d", n, len(bad))
	}
	checkEqualsReplay(ctx, t, l, st)
}

// A room record that cannot be applied still moves the room's last
// sequence: the api appends the room's next event expecting it, so a room
// whose projection stayed behind its subject could never be written again.
func TestSetAsideRoomRecordKeepsRoomWritable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, st, _ := testLogAndStore(ctx, t)
	roomID := "!walls:example.org"
	subj := eventlog.RoomSubject(roomID)
	typ := (eventlog.RoomEvents{}).RecordType()
	// A create event is enough for the room row to exist.
	create := `{"room_id":"` + roomID + `","room_version":"10","events":[{"auth_events":[],"content":{"room_version":"10","creator":"@a:example.org"},"depth":1,"hashes":{"sha256":"x"},"origin_server_ts":1,"prev_events":[],"room_id":"` + roomID + `","sender":"@a:example.org","signatures":{},"state_key":"","type":"m.room.create"}]}`
	first := appendRawRoom(ctx, t, l, subj, roomID, typ, create)
	unparsable := appendRawRoom(ctx, t, l, subj, roomID, typ, `{"room_id":"`+roomID+`","room_version":"10","events":[{"no":"event"}]}`)
	// Events of another room on this room's subject: they would bypass
	// that room's order.
	foreign := strings.ReplaceAll(create, roomID, "!elsewhere:example.org")
	poison := appendRawRoom(ctx, t, l, subj, roomID, typ, foreign)

	p := &projector.Projector{Log: l, Store: st, Logger: discardLogger()}
	if err := p.Replay(ctx, nil); err != nil {
		t.Fatal(err)
	}
	recs, err := st.SetAsideRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Seq != unparsable || recs[1].Seq != poison || recs[1].RoomID != roomID ||
		!strings.Contains(recs[1].Error, "on subject") {
		t.Fatalf("set aside %+v, want the records at %d and %d of %s", recs, unparsable, poison, roomID)
	}
	if _, err := st.RoomHeadOf(ctx, "!elsewhere:example.org"); err == nil {
		t.Fatal("a room was created from a record on another room's subject")
	}
	head, err := st.RoomHeadOf(ctx, roomID)
	if err != nil {
		t.Fatalf("room row: %v (create at %d)", err, first)
	}
	if head.LastSeq != poison {
		t.Fatalf("room last_seq %d, want %d (the set-aside record)", head.LastSeq, poison)
	}
}

func appendRawRoom(ctx context.Context, t *testing.T, l *eventlog.Log, subject, roomID, typ, data string) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	m.Header.Set(eventlog.HeaderType, typ)
	m.Header.Set(eventlog.HeaderRoom, roomID)
	ack, err := l.JetStream().PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// counterValue reads a counter with the label stream=stream from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, stream string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "stream" && lp.GetValue() == stream {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// incompressible returns n letters that PostgreSQL's compression cannot
// shrink below an index row's limit.
func incompressible(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return string(b)
}
