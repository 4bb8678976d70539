package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"strand/api/apitest"
	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/projector/store/storetest"
)

// Records that no projection can apply, written straight to the log (as a
// bug, an older Strand or a hand edit could leave them): strand serve goes
// on serving, including in the room whose subject holds one, "strand
// projection set-aside" lists them, /metrics counts them, a restart on the
// same log and database serves again, and "strand replay" sets aside the
// same records, so it still equals the live projection (invariants 2, 11).
func TestServeSetsAsidePoisonRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := logtest.Start(t)
	natsURL := ns.ClientURL()
	dbURL := storetest.NewURL(t)
	addr := freeAddr(t)
	args := []string{"--listen", addr, "--data-dir", t.TempDir(), "--database-url", dbURL, "--nats-url", natsURL, "--metrics-on-listen"}
	stop := startServe(t, args...)

	c := apitest.NewClient(t, "http://"+addr)
	c.Register("poisoned", "pw")
	userID := "@poisoned:localhost"
	roomID := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	send := func(body string) string {
		t.Helper()
		return c.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message",
			map[string]any{"msgtype": "m.text", "body": body}).Str("event_id")
	}
	send("before")
	since := c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil).Str("next_batch")

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	l, err := eventlog.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	put := func(subject, typ, room, data string) uint64 {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = []byte(data)
		m.Header.Set(eventlog.HeaderType, typ)
		if room != "" {
			m.Header.Set(eventlog.HeaderRoom, room)
		}
		ack, err := l.JetStream().PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	userSubj := eventlog.UserSubject(userID)
	adType := (eventlog.AccountDataSet{}).RecordType()
	poison := map[string][]uint64{}
	poison[eventlog.StreamAccounts] = append(poison[eventlog.StreamAccounts],
		put(userSubj, adType, "", `{"user_id":"`+userID+`","type":"x.s","content":{"k":"\ud800"}}`),
		put(userSubj, adType, "", `{"user_id":"`+userID+`","type":"x.n","content":{"k":1e200000}}`),
		put(userSubj, adType, "", `][`),
		put(userSubj, (eventlog.DeviceCreated{}).RecordType(), "", `{"user_id":"`+userID+`","device_id":"`+randomLetters(6000)+`","token_hash":"00ff"}`))
	roomType := (eventlog.RoomEvents{}).RecordType()
	poison[eventlog.StreamRooms] = append(poison[eventlog.StreamRooms],
		put(eventlog.RoomSubject(roomID), roomType, roomID, `{"room_id":"`+roomID+`","room_version":"10","events":[{"not":"an event"}]}`),
		put(eventlog.RoomSubject(roomID), roomType, roomID, `{"room_id":`))

	// The server goes on: the room with poison on its subject takes new
	// events, account data is written, and a sync since before the
	// poison sees the new message.
	after := send("after")
	c.MustDo("PUT", "/_matrix/client/v3/user/"+userID+"/account_data/x.fine", map[string]any{"ok": true})
	got := c.MustDo("GET", "/_matrix/client/v3/sync?timeout=5000&since="+since, nil)
	if !strings.Contains(string(got.Raw), after) {
		t.Fatalf("sync after the poison records lacks %s: %s", after, got.Raw)
	}

	recs := setAsideList(ctx, t, dbURL)
	for stream, seqs := range poison {
		for _, seq := range seqs {
			if _, ok := recs[stream+"/"+itoa(seq)]; !ok {
				t.Errorf("%s seq %d not listed as set aside: %v", stream, seq, recs)
			}
		}
	}
	if len(recs) != len(poison[eventlog.StreamAccounts])+len(poison[eventlog.StreamRooms]) {
		t.Errorf("listed %d records, want exactly the %d poison ones: %v", len(recs), len(poison[eventlog.StreamAccounts])+len(poison[eventlog.StreamRooms]), recs)
	}
	metrics := string(c.Do("GET", "/metrics", nil).Raw)
	for _, want := range []string{`strand_projector_set_aside_total{stream="ACCOUNTS"} 4`, `strand_projector_set_aside_total{stream="ROOMS"} 2`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !regexp.MustCompile(`strand_sync_set_aside_total [1-9]`).MatchString(metrics) {
		t.Errorf("/metrics: the sync worker counted no record it could not read")
	}
	if err := stop(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}

	// A restart reads past the set-aside records again and serves.
	stop = startServe(t, args...)
	c.MustDo("GET", "/_matrix/client/v3/account/whoami", nil)
	send("after restart")
	if err := stop(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}

	replayURL := storetest.NewURL(t)
	if err := run(ctx, []string{"replay", "--nats-url", natsURL, "--database-url", replayURL, "--log-level", "error"}); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if a := sameProjection(ctx, t, dbURL, replayURL); !strings.Contains(a, "SQLSTATE 54000") {
		t.Fatal("the dump holds no set-aside row for the oversized device ID")
	}
}

// setAsideList runs "strand projection set-aside --json" and returns its
// records by "stream/seq".
func setAsideList(ctx context.Context, t *testing.T, dbURL string) map[string]map[string]any {
	t.Helper()
	var out bytes.Buffer
	cmd := &projectionCommand{out: &out}
	if err := cmd.Run(ctx, []string{"set-aside", "--json", "--database-url", dbURL}); err != nil {
		t.Fatalf("projection set-aside: %v", err)
	}
	recs := map[string]map[string]any{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		recs[r["stream"].(string)+"/"+itoa(uint64(r["seq"].(float64)))] = r
	}
	return recs
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// randomLetters returns n letters that PostgreSQL's compression cannot
// shrink below an index row's limit.
func randomLetters(n int) string {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return string(b)
}
