package api_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector"
)

// Two api processes and two projectors on one log and one database; 50
// senders plus joins, leaves, kicks and power-level changes in one room.
// Afterwards the room's log must be a valid chain by the auth rules alone,
// every acknowledged event must be on it exactly once, no transaction may
// appear twice, and the projection must equal a fresh replay.
func TestRoomConcurrencyTwoAPIs(t *testing.T) {
	if testing.Short() {
		t.Skip("long concurrency test")
	}
	env := apitest.New(t)
	env.Projector()
	env.Projector()
	bases := []string{env.API(apitest.DefaultConfig()).URL, env.API(apitest.DefaultConfig()).URL}

	owner := apitest.NewClient(t, bases[0])
	owner.Register("owner", "pw")
	roomID := createRoom(t, owner, map[string]any{"preset": "public_chat"})
	rp := func(p string) string { return v3("/rooms/" + esc(roomID) + p) }

	const senders, perSender = 50, 8
	clients := make([]*apitest.Client, senders)
	for i := range clients {
		c := apitest.NewClient(t, bases[i%2])
		c.Register(fmt.Sprintf("s%02d", i), "pw")
		c.MustDo("POST", rp("/join"), nil)
		clients[i] = c
	}

	var mu sync.Mutex
	acked := map[string]int{} // event ID -> times acknowledged
	ack := func(id string) {
		mu.Lock()
		acked[id]++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perSender {
				path := rp(fmt.Sprintf("/send/m.room.message/m%d", j))
				r := c.Do("PUT", path, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%d-%d", i, j)})
				if r.Status == 200 {
					ack(r.Str("event_id"))
					// A retry of the same transaction, through the other
					// process, must name the same event and add nothing.
					if j%3 == 0 {
						other := apitest.NewClient(t, bases[(i+1)%2]).As(c.Token)
						if r2 := other.Do("PUT", path, map[string]any{"msgtype": "m.text", "body": "retry"}); r2.Status == 200 && r2.Str("event_id") != r.Str("event_id") {
							t.Errorf("retry of %s gave %s, first %s", path, r2.Str("event_id"), r.Str("event_id"))
						}
					}
				} else if r.Status != 403 {
					t.Errorf("send: %d %s", r.Status, r.Raw)
				}
			}
		}()
	}
	// Membership and power churn alongside.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		mod := apitest.NewClient(t, bases[1]).As(owner.Token)
		for k := 0; k < 40; k++ {
			victim := clients[rng.IntN(senders)]
			switch k % 4 {
			case 0:
				if r := mod.Do("POST", rp("/kick"), map[string]any{"user_id": victim.UserID}); r.Status == 200 {
					ack("") // counted separately below
				}
			case 1:
				victim.Do("POST", rp("/join"), nil)
			case 2:
				pl := mod.MustDo("GET", rp("/state/m.room.power_levels/"), nil).Body
				pl["users"].(map[string]any)[victim.UserID] = float64(rng.IntN(60))
				mod.Do("PUT", rp("/state/m.room.power_levels/"), pl)
			case 3:
				victim.Do("POST", rp("/leave"), nil)
				victim.Do("POST", rp("/join"), nil)
			}
		}
	}()
	wg.Wait()
	delete(acked, "")

	// Read the room's log alone and check it.
	ctx := context.Background()
	l := env.Conn()
	head, err := l.Head(ctx, eventlog.StreamRooms)
	if err != nil {
		t.Fatal(err)
	}
	subject := eventlog.RoomSubject(roomID)
	state := matrix.State{}
	onLog := map[string]int{}
	txns := map[string]bool{}
	var prev matrix.EventID
	var depth int64
	readCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = l.Read(readCtx, eventlog.StreamRooms, eventlog.ReadOptions{From: 1, StopAt: head, Subjects: []string{subject}}, func(_ context.Context, batch []eventlog.Msg) error {
		for _, m := range batch {
			rec, err := m.Decode()
			if err != nil {
				return err
			}
			re, ok := rec.(*eventlog.RoomEvents)
			if !ok {
				continue
			}
			if re.TxnID != "" {
				k := re.Sender + "|" + re.DeviceID + "|" + re.TxnID
				if txns[k] {
					t.Errorf("transaction %s appended twice", k)
				}
				txns[k] = true
			}
			for _, raw := range re.Events {
				ev, err := matrix.ParseEvent(matrix.RoomVersion(re.RoomVersion), raw)
				if err != nil {
					return err
				}
				if err := matrix.Authorize(ev, state); err != nil {
					t.Errorf("event %s (%s by %s) fails the auth rules against the state before it: %v", ev.ID(), ev.Type(), ev.Sender(), err)
				}
				if prev != "" && (len(ev.PrevEvents()) != 1 || ev.PrevEvents()[0] != prev || ev.Depth() != depth+1) {
					t.Errorf("event %s does not follow %s (prev %v, depth %d after %d)", ev.ID(), prev, ev.PrevEvents(), ev.Depth(), depth)
				}
				prev, depth = ev.ID(), ev.Depth()
				state = matrix.Apply(state, ev)
				onLog[string(ev.ID())]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id := range acked {
		if onLog[id] != 1 {
			t.Errorf("acknowledged event %s is on the log %d times", id, onLog[id])
		}
	}
	if len(acked) < senders*perSender/2 {
		t.Fatalf("only %d sends acknowledged", len(acked))
	}
	t.Logf("%d events on the log, %d acknowledged sends", len(onLog), len(acked))

	// The projection equals a fresh replay.
	live := env.Store()
	waitCaughtUp(t, env, live)
	liveDump, err := live.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	replayed := env.StoreAt(newDBURL(t))
	if err := (&projector.Projector{Log: l, Store: replayed}).Replay(ctx, nil); err != nil {
		t.Fatal(err)
	}
	replayDump, err := replayed.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if liveDump != replayDump {
		t.Fatal("live projection differs from replay")
	}
}

// Projector processes share the streams: two divide them, a third gets
// its share, and when processes stop the rest take their lanes over,
// while writes go on and stay readable.
func TestProjectorsShareLanes(t *testing.T) {
	env := apitest.New(t)
	p1, stop1 := env.ProjectorProcess()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	c.Register("laner", "pw")
	roomID := createRoom(t, c, map[string]any{})
	waitLanes := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("lanes never settled: %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitLanes("one projector holds all", func() bool { return len(p1.Lanes()) == len(projector.Lanes) })
	p2, stop2 := env.ProjectorProcess()
	waitLanes("two share", func() bool {
		a, b := len(p1.Lanes()), len(p2.Lanes())
		return a >= 1 && b >= 1 && a+b == len(projector.Lanes)
	})
	c.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/send/m.room.message/a"), map[string]any{"msgtype": "m.text", "body": "shared"})
	c.MustDo("PUT", v3("/user/"+esc(c.UserID)+"/account_data/org.example.x"), map[string]any{"x": 1})
	stop1()
	waitLanes("the survivor takes over", func() bool { return len(p2.Lanes()) == len(projector.Lanes) })
	c.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/send/m.room.message/b"), map[string]any{"msgtype": "m.text", "body": "after"})
	c.MustDo("PUT", v3("/user/"+esc(c.UserID)+"/account_data/org.example.y"), map[string]any{"y": 1})
	stop2()
	_ = p2
}

// Lanes are per database: projectors of another Strand database on the
// same PostgreSQL server do not count towards this one's fair share.
func TestProjectorLanesPerDatabase(t *testing.T) {
	other := apitest.New(t)
	other.Projector()
	other.Projector()
	env := apitest.New(t)
	p, _ := env.ProjectorProcess()
	deadline := time.Now().Add(20 * time.Second)
	for len(p.Lanes()) != len(projector.Lanes) {
		if time.Now().After(deadline) {
			t.Fatalf("a lone projector holds %v", p.Lanes())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A write answers only once every sync worker has read it (they answer
// some syncs from what they have read): a worker that reports being behind
// holds the answer back until it reports having read the write.
func TestWriteWaitsForSyncWorkers(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	c.Register("zed", "pw")
	room := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")

	worker, err := eventlog.NewReaders(env.Conn().Conn())
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close()
	topic := eventlog.SyncReadersTopic(eventlog.StreamRooms)
	worker.Report(topic, 1) // a live worker that has read almost nothing
	answered := make(chan apitest.Response, 1)
	go func() {
		answered <- c.Do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/w1", map[string]any{"msgtype": "m.text", "body": "x"})
	}()
	select {
	case r := <-answered:
		t.Fatalf("the send answered (%d) while a sync worker had not read it", r.Status)
	case <-time.After(500 * time.Millisecond):
	}
	worker.Report(topic, eventlog.HoldsNothing) // caught up (or gone)
	select {
	case r := <-answered:
		if r.Status != 200 {
			t.Fatalf("send: %d %s", r.Status, r.Raw)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the send still waits after the worker caught up")
	}
}
