package projector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// freshRoom writes one room's records by hand: events need no valid
// signatures or hashes to be projected, only their shape.
type freshRoom struct {
	t     *testing.T
	l     *eventlog.Log
	id    string
	depth int
	prev  string
}

// event returns the PDU of an event of the room and its ID; it becomes
// the room's newest.
func (r *freshRoom) event(typ, sender string, stateKey *string, content any, extra map[string]any) (json.RawMessage, string) {
	r.t.Helper()
	r.depth++
	e := map[string]any{"auth_events": []string{}, "content": content, "depth": r.depth, "hashes": map[string]string{"sha256": "x"},
		"origin_server_ts": 1000 + r.depth, "prev_events": []string{}, "room_id": r.id, "sender": sender, "signatures": map[string]any{}, "type": typ}
	if r.prev != "" {
		e["prev_events"] = []string{r.prev}
	}
	if stateKey != nil {
		e["state_key"] = *stateKey
	}
	for k, v := range extra {
		e[k] = v
	}
	raw, err := json.Marshal(e)
	if err != nil {
		r.t.Fatal(err)
	}
	ev, err := matrix.ParseEvent("10", raw)
	if err != nil {
		r.t.Fatal(err)
	}
	r.prev = string(ev.ID())
	return raw, r.prev
}

// send appends one record of events on the room's subject.
func (r *freshRoom) send(ctx context.Context, rec *eventlog.RoomEvents, events ...json.RawMessage) {
	r.t.Helper()
	if rec == nil {
		rec = &eventlog.RoomEvents{}
	}
	rec.RoomID, rec.RoomVersion, rec.Events = r.id, "10", events
	if _, err := r.l.Append(ctx, eventlog.RoomSubject(r.id), rec, eventlog.AppendOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

func strp(s string) *string { return &s }

// writeEveryRecordKind fills the log with records of every projected type,
// spread over rooms of every partition: room creation, members coming and
// going, state, messages with mentions and transactions, relations,
// redactions (effective, refused, and aimed at another room's event), the
// directory, aliases, forgetting, receipts, account records, and records
// that must be set aside (one that does not parse, one that repeats a
// client transaction).
func writeEveryRecordKind(ctx context.Context, t *testing.T, l *eventlog.Log) {
	t.Helper()
	appendRec := func(subject string, rec eventlog.Record) {
		t.Helper()
		if _, err := l.Append(ctx, subject, rec, eventlog.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	users := []string{"@a:example.org", "@b:example.org", "@c:example.org"}
	for i, u := range users {
		appendRec(eventlog.UserSubject(u), &eventlog.UserRegistered{UserID: u, TS: int64(i + 1),
			Device: &eventlog.DeviceCreated{UserID: u, DeviceID: "D", TokenHash: fmt.Sprintf("%064x", i+1), TS: int64(i + 1)}})
		appendRec(eventlog.UserSubject(u), &eventlog.ProfileSet{UserID: u, Displayname: strp("User " + u[1:2])})
		appendRec(eventlog.UserSubject(u), &eventlog.AccountDataSet{UserID: u, Type: "org.example.k", Content: json.RawMessage(`{"i":1}`)})
		appendRec(eventlog.UserSubject(u), &eventlog.FilterCreated{UserID: u, FilterID: "0", Filter: json.RawMessage(`{}`)})
	}
	// Every other projected type, empty: whatever it does (apply, or be
	// set aside), both builds must do the same.
	for _, k := range eventlog.RecordKinds() {
		if k.Stream == eventlog.StreamAccounts {
			appendRaw(ctx, t, l, eventlog.UserSubject(users[0]), k.Type, `{}`)
		}
	}
	var rooms []*freshRoom
	var messages [][]string // per room, the message IDs
	for i := range 24 {
		r := &freshRoom{t: t, l: l, id: fmt.Sprintf("!room%02d:example.org", i)}
		rooms = append(rooms, r)
		create, _ := r.event("m.room.create", users[0], strp(""), map[string]any{"room_version": "10"}, nil)
		member, _ := r.event("m.room.member", users[0], strp(users[0]), map[string]any{"membership": "join"}, nil)
		power, _ := r.event("m.room.power_levels", users[0], strp(""), map[string]any{"users": map[string]int{users[0]: 100}}, nil)
		rules, _ := r.event("m.room.join_rules", users[0], strp(""), map[string]any{"join_rule": "public"}, nil)
		name, _ := r.event("m.room.name", users[0], strp(""), map[string]any{"name": fmt.Sprintf("Room %d", i)}, nil)
		pub := i%3 == 0
		r.send(ctx, &eventlog.RoomEvents{Published: &pub}, create, member, power, rules, name)
		var ids []string
		for j, u := range users[1:] {
			join, _ := r.event("m.room.member", u, strp(u), map[string]any{"membership": "join"}, nil)
			r.send(ctx, nil, join)
			body := fmt.Sprintf("hello %d from %s", j, u)
			msg, id := r.event("m.room.message", u, nil, map[string]any{"msgtype": "m.text", "body": body,
				"m.mentions": map[string]any{"user_ids": []string{users[0], "not an ID"}}}, nil)
			r.send(ctx, &eventlog.RoomEvents{Sender: u, DeviceID: "D", TxnID: fmt.Sprintf("t%d", j)}, msg)
			ids = append(ids, id)
		}
		messages = append(messages, ids)
	}
	for i, r := range rooms {
		ids := messages[i]
		other := messages[(i+1)%len(rooms)]
		react, _ := r.event("m.reaction", users[1], nil, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": ids[0], "key": "x"}}, nil)
		thread, _ := r.event("m.room.message", users[2], nil, map[string]any{"msgtype": "m.text", "body": "in a thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": ids[1]}}, nil)
		foreign, _ := r.event("m.reaction", users[1], nil, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": other[0], "key": "y"}}, nil)
		r.send(ctx, nil, react, thread, foreign)
		topic, topicID := r.event("m.room.topic", users[0], strp(""), map[string]any{"topic": "a topic"}, nil)
		r.send(ctx, nil, topic)
		// Effective (own message, and state by the room's admin), refused
		// (another's message without power), across rooms (no effect).
		own, _ := r.event("m.room.redaction", users[1], nil, map[string]any{}, map[string]any{"redacts": ids[0]})
		state, _ := r.event("m.room.redaction", users[0], nil, map[string]any{}, map[string]any{"redacts": topicID})
		refused, _ := r.event("m.room.redaction", users[2], nil, map[string]any{}, map[string]any{"redacts": ids[0]})
		across, _ := r.event("m.room.redaction", users[0], nil, map[string]any{}, map[string]any{"redacts": other[1]})
		r.send(ctx, nil, own)
		r.send(ctx, nil, state, refused, across)
		leave, _ := r.event("m.room.member", users[2], strp(users[2]), map[string]any{"membership": "leave"}, nil)
		r.send(ctx, nil, leave)
		appendRec(eventlog.RoomSubject(r.id), &eventlog.RoomForgotten{UserID: users[2], RoomID: r.id})
		if i%4 == 0 {
			invite, _ := r.event("m.room.member", users[0], strp(users[2]), map[string]any{"membership": "invite"}, nil)
			r.send(ctx, nil, invite)
			appendRec(eventlog.RoomSubject(r.id), &eventlog.RoomPublished{RoomID: r.id, Published: i%8 == 0})
		}
		alias := fmt.Sprintf("#r%d:example.org", i)
		appendRec(eventlog.AliasSubject(alias), &eventlog.AliasSet{Alias: alias, RoomID: r.id, Creator: users[0]})
		if i%5 == 0 {
			appendRec(eventlog.AliasSubject(alias), &eventlog.AliasDeleted{Alias: alias, RoomID: r.id})
		}
		for _, u := range users[:2] {
			appendRec(eventlog.ReceiptSubject(r.id), &eventlog.ReceiptSet{RoomID: r.id, UserID: u, Type: "m.read", EventID: ids[1], TS: 5})
		}
		if i%6 == 0 {
			// Set aside by both: a record that does not parse, and one that
			// repeats a client transaction of the room (events_txn).
			appendRawRoom(ctx, t, l, eventlog.RoomSubject(r.id), r.id, (eventlog.RoomEvents{}).RecordType(),
				`{"room_id":"`+r.id+`","room_version":"10","events":[{"no":"event"}]}`)
			again, _ := r.event("m.room.message", users[1], nil, map[string]any{"msgtype": "m.text", "body": "again"}, nil)
			r.send(ctx, &eventlog.RoomEvents{Sender: users[1], DeviceID: "D", TxnID: "t0"}, again)
		}
	}
}

// The fresh build (several ROOMS transactions at once, COPY, indexes
// built at the end) produces exactly what applying the log batch by batch
// produces, for a log with every projected record type; and the two are
// compared row by row, so a row the fresh build dropped or changed fails
// the test.
func TestFreshBuildEqualsBatchByBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	l, batchByBatch, _ := testLogAndStore(ctx, t)
	writeEveryRecordKind(ctx, t, l)
	to := map[string]uint64{}
	for _, s := range projector.Streams {
		head, err := l.Head(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		to[s] = head
	}
	if err := (&projector.Projector{Log: l, Store: batchByBatch, Logger: discardLogger(), MaxBatch: 5}).ReplayTo(ctx, to, nil); err != nil {
		t.Fatal(err)
	}
	want, err := batchByBatch.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What the log holds reaches every table it should, so that the
	// comparison below compares something.
	for _, table := range []string{"events", "room_state", "rooms", "event_relations", "event_search", "receipts", "room_aliases",
		"forgotten_rooms", "set_aside", "users", "devices", "account_data", "filters"} {
		var n int
		if err := batchByBatch.Pool().QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("the batch-by-batch projection has no %s rows", table)
		}
	}
	var redacted int
	if err := batchByBatch.Pool().QueryRow(ctx, "SELECT count(*) FROM events WHERE redacted_because IS NOT NULL").Scan(&redacted); err != nil {
		t.Fatal(err)
	}
	if redacted == 0 {
		t.Error("no redaction took effect")
	}
	var setAside int
	if err := batchByBatch.Pool().QueryRow(ctx, "SELECT count(*) FROM set_aside WHERE stream = 'ROOMS'").Scan(&setAside); err != nil {
		t.Fatal(err)
	}
	if setAside < 8 {
		t.Errorf("%d ROOMS records set aside, want the 8 unappliable ones", setAside)
	}
	// The fresh path itself, not Replay (which would take the batch-by-batch
	// path for a database it did not find empty).
	heads := map[string]uint64{}
	for _, st := range projector.Streams {
		h, err := l.Head(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		heads[st] = h
	}
	defaultWorkers := projector.FreshWorkers
	t.Cleanup(func() { projector.FreshWorkers = defaultWorkers })
	for _, workers := range []int{1, 3} {
		for _, batch := range []int{1, 7, 2048} {
			projector.FreshWorkers = workers
			fresh, err := store.Open(ctx, storetest.NewURL(t))
			if err != nil {
				t.Fatal(err)
			}
			p := &projector.Projector{Log: l, Store: fresh, Logger: discardLogger(), MaxBatch: batch}
			if err := p.ReplayFresh(ctx, heads, nil); err != nil {
				t.Fatal(err)
			}
			got, err := fresh.Dump(ctx)
			fresh.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("fresh build with %d workers, batches of %d, differs from batch by batch:\n%s", workers, batch, firstDifference(want, got))
			}
		}
	}
}

// firstDifference shows the first line where two dumps differ.
func firstDifference(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("%d lines against %d", len(al), len(bl))
}

// A fresh build that stopped half way (its ROOMS rows have no position,
// some indexes are missing) is refused by replay and by the projector,
// instead of being applied twice over.
func TestInterruptedFreshBuildIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, st, _ := testLogAndStore(ctx, t)
	appendAccountData(ctx, t, l, 1, 3)
	p := &projector.Projector{Log: l, Store: st, Logger: discardLogger()}
	// ACCOUNTS applied, ROOMS under way: what DropDeferredIndexes leaves
	// until the build ends.
	if err := p.ReplayTo(ctx, map[string]uint64{eventlog.StreamAccounts: 2}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DropDeferredIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Replay(ctx, nil); !errors.Is(err, store.ErrInterruptedBuild) {
		t.Errorf("replay: %v, want ErrInterruptedBuild", err)
	}
	if err := p.Run(ctx); !errors.Is(err, store.ErrInterruptedBuild) {
		t.Errorf("projector: %v, want ErrInterruptedBuild", err)
	}
	if _, err := st.DropDeferredIndexes(ctx); !errors.Is(err, store.ErrInterruptedBuild) {
		t.Errorf("a second build: %v, want ErrInterruptedBuild", err)
	}
}
