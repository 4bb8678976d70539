package api_test

import (
	"context"
	"encoding/json"
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

// laneSync is one /sync response of a chain: the ROOMS positions it went
// from and to, and the message events it carried.
type laneSync struct {
	from, to uint64
	events   []string
}

// syncChain follows one user's /sync chain across workers, in turn, until
// stop is closed and every event of want (read when stop closes) has been
// seen, or the deadline passes.
func syncChain(t *testing.T, c *apitest.Client, workers []string, stop <-chan struct{}, want func() map[string]bool) []laneSync {
	t.Helper()
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":1000}}}`)
	since, pos := "", uint64(0)
	var out []laneSync
	seen := map[string]bool{}
	stopped := false
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; ; i++ {
		if !stopped {
			select {
			case <-stop:
				stopped = true
			default:
			}
		}
		if stopped {
			missing := 0
			for id := range want() {
				if !seen[id] {
					missing++
				}
			}
			if missing == 0 {
				return out
			}
			if time.Now().After(deadline) {
				t.Errorf("%d acknowledged events never reached the sync chain", missing)
				return out
			}
		}
		// Two requests on each worker in turn: the second may be answered
		// from the worker's window (its own token), the first is built.
		w := c.As(c.Token)
		w.Base = workers[(i/2)%len(workers)]
		q := "/sync?set_presence=offline&timeout=500&filter=" + filter
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		r := w.Do("GET", v3(q), nil)
		if r.Status != 200 {
			t.Errorf("sync: %d %s", r.Status, r.Raw)
			return out
		}
		tok, err := eventlog.ParseSyncToken(r.Str("next_batch"))
		if err != nil {
			t.Fatal(err)
		}
		s := laneSync{from: pos, to: tok.Rooms}
		var body struct {
			Rooms struct {
				Join map[string]struct {
					Timeline struct {
						Limited bool `json:"limited"`
						Events  []struct {
							Type    string `json:"type"`
							EventID string `json:"event_id"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(r.Raw, &body); err != nil {
			t.Fatal(err)
		}
		for roomID, jr := range body.Rooms.Join {
			if jr.Timeline.Limited && since != "" {
				t.Errorf("a limited timeline in %s: the chain can no longer tell a gap", roomID)
			}
			for _, e := range jr.Timeline.Events {
				if e.Type == "m.room.message" {
					s.events = append(s.events, e.EventID)
					seen[e.EventID] = true
				}
			}
		}
		out = append(out, s)
		since, pos = r.Str("next_batch"), tok.Rooms
	}
}

// eventSeqs maps every event ID on ROOMS to the sequence of its record.
func eventSeqs(t *testing.T, l *eventlog.Log) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	head, err := l.Head(ctx, eventlog.StreamRooms)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	err = l.Read(ctx, eventlog.StreamRooms, eventlog.ReadOptions{From: 1, StopAt: head}, func(_ context.Context, batch []eventlog.Msg) error {
		for _, m := range batch {
			rec, err := m.Decode()
			if err != nil {
				return err
			}
			re, ok := rec.(*eventlog.RoomEvents)
			if !ok {
				continue
			}
			for _, raw := range re.Events {
				ev, err := matrix.ParseEvent(matrix.RoomVersion(re.RoomVersion), raw)
				if err != nil {
					return err
				}
				out[string(ev.ID())] = m.Seq
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Three projector processes share the ROOMS lanes while two api processes
// take writes to rooms in many partitions and a /sync chain alternates
// between two sync workers. Every acknowledged message reaches the chain
// exactly once, each response carries only events at or below its token's
// ROOMS position and above the previous one's, and every event at or
// below a token's position has been delivered by then (no gaps). Midway
// one projector is killed and the others take its lanes over. The live
// projection then equals a replay.
func TestRoomLanesAcrossProjectors(t *testing.T) {
	if testing.Short() {
		t.Skip("long concurrency test")
	}
	env := apitest.New(t)
	p1, stop1 := env.ProjectorProcess()
	p2, _ := env.ProjectorProcess()
	p3, _ := env.ProjectorProcess()
	bases := []string{env.API(apitest.DefaultConfig()).URL, env.API(apitest.DefaultConfig()).URL}
	w1, _ := env.SyncWorker()
	w2, _ := env.SyncWorker()

	owner := apitest.NewClient(t, bases[0])
	owner.Register("owner", "pw")
	reader := apitest.NewClient(t, bases[1])
	reader.Register("reader", "pw")
	const nRooms, writers, perWriter = 12, 6, 20
	var rooms []string
	lanes := map[string]bool{}
	for range nRooms {
		id := createRoom(t, owner, map[string]any{"preset": "public_chat"})
		rooms = append(rooms, id)
		lanes[eventlog.RoomLaneOf(id)] = true
		reader.MustDo("POST", v3("/rooms/"+esc(id)+"/join"), nil)
	}
	if len(lanes) < 3 {
		t.Fatalf("%d rooms fell in only %d lanes", nRooms, len(lanes))
	}
	clients := make([]*apitest.Client, writers)
	for i := range clients {
		c := apitest.NewClient(t, bases[i%2])
		c.Register(fmt.Sprintf("w%d", i), "pw")
		for _, id := range rooms {
			c.MustDo("POST", v3("/rooms/"+esc(id)+"/join"), nil)
		}
		clients[i] = c
	}
	waitFor(t, "three projectors share the lanes", func() bool {
		return len(p1.Lanes()) > 0 && len(p2.Lanes()) > 0 && len(p3.Lanes()) > 0 &&
			len(p1.Lanes())+len(p2.Lanes())+len(p3.Lanes()) == len(projector.Lanes)
	})

	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var chain []laneSync
	chainDone := make(chan struct{})
	go func() {
		defer close(chainDone)
		chain = syncChain(t, reader, []string{w1.URL, w2.URL}, stop, func() map[string]bool {
			mu.Lock()
			defer mu.Unlock()
			return copySet(acked)
		})
	}()
	var wg sync.WaitGroup
	var half sync.WaitGroup
	half.Add(writers)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for j := range perWriter {
				if j == perWriter/2 {
					half.Done()
				}
				room := rooms[rng.IntN(len(rooms))]
				r := c.Do("PUT", v3(fmt.Sprintf("/rooms/%s/send/m.room.message/t%d", esc(room), j)), map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i, "-", j)})
				if r.Status != 200 {
					t.Errorf("send: %d %s", r.Status, r.Raw)
					continue
				}
				mu.Lock()
				acked[r.Str("event_id")] = true
				mu.Unlock()
			}
		}()
	}
	half.Wait()
	applied := []uint64{p1.RoomsApplied(), p2.RoomsApplied(), p3.RoomsApplied()}
	stop1() // a projector dies mid-traffic: its lanes are handed over
	wg.Wait()
	close(stop)
	<-chainDone
	for i, n := range applied {
		if n == 0 {
			t.Errorf("projector %d applied no ROOMS record: the lanes were not shared", i+1)
		}
	}
	waitFor(t, "the survivors hold every lane", func() bool {
		return len(p2.Lanes())+len(p3.Lanes()) == len(projector.Lanes)
	})

	checkChain(t, env, chain, rooms, acked)
	projectionReplays(t, env, 0)
}

// checkChain holds a /sync chain to the log: each event once, inside its
// response's range, and nothing at or below a token missing.
func checkChain(t *testing.T, env *apitest.Env, chain []laneSync, rooms []string, acked map[string]bool) {
	t.Helper()
	seqs := eventSeqs(t, env.Conn())
	got := map[string]int{}
	for _, s := range chain {
		for _, id := range s.events {
			got[id]++
			seq, ok := seqs[id]
			if !ok {
				t.Fatalf("event %s is not on the log", id)
			}
			if s.from > 0 && seq <= s.from || seq > s.to {
				t.Errorf("event %s at %d in a response from %d to %d", id, seq, s.from, s.to)
			}
		}
		// Every acknowledged message at or below this token has been
		// delivered by this response.
		for id := range acked {
			if seqs[id] <= s.to && got[id] == 0 {
				t.Errorf("event %s at %d missing from the chain through %d", id, seqs[id], s.to)
			}
		}
	}
	for id := range acked {
		if got[id] != 1 {
			t.Errorf("acknowledged event %s delivered %d times", id, got[id])
		}
	}
	t.Logf("%d responses, %d events in %d rooms", len(chain), len(acked), len(rooms))
}

func copySet(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// A sync response shows ROOMS as of its token's position G even when one
// lane has applied records beyond G that another lane's record before
// them holds back: here a message in one room's lane is on the log but
// not applied, and an invite after it, in another lane, is applied. The
// response must not show the invite (current-state reads would), and
// once the first lane catches up the next response has both, once.
func TestSyncShowsRoomsAsOfG(t *testing.T) {
	env := apitest.New(t)
	stopProjector := env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.ApplyTimeout = 300 * time.Millisecond
	alice := apitest.NewClient(t, env.API(cfg).URL)
	alice.Register("alice", "pw")
	bob := apitest.NewClient(t, env.API(cfg).URL)
	bob.Register("bob", "pw")
	w, _ := env.SyncWorker()
	bob.Base = w.URL

	r1 := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	bob.As(bob.Token).Do("GET", v3("/sync?timeout=0"), nil)
	joiner := apitest.NewClient(t, env.API(cfg).URL).As(bob.Token)
	joiner.MustDo("POST", v3("/rooms/"+esc(r1)+"/join"), nil)
	var r3 string
	for r3 == "" || eventlog.RoomLaneOf(r3) == eventlog.RoomLaneOf(r1) {
		r3 = createRoom(t, alice, map[string]any{"preset": "private_chat"})
	}
	first := bob.MustDo("GET", v3("/sync?timeout=0&set_presence=offline"), nil)
	if _, ok := first.Body["rooms"].(map[string]any)["join"].(map[string]any)[r1]; !ok {
		t.Fatalf("bob is not in the room: %s", first.Raw)
	}

	stopProjector()
	if r := alice.Do("PUT", v3("/rooms/"+esc(r1)+"/send/m.room.message/m1"), map[string]any{"msgtype": "m.text", "body": "held back"}); r.Status != 503 {
		t.Fatalf("send without a projector: %d %s", r.Status, r.Raw)
	}
	if r := alice.Do("POST", v3("/rooms/"+esc(r3)+"/invite"), map[string]any{"user_id": bob.UserID}); r.Status != 503 {
		t.Fatalf("invite without a projector: %d %s", r.Status, r.Raw)
	}
	ctx := context.Background()
	head, err := env.Conn().Head(ctx, eventlog.StreamRooms)
	if err != nil {
		t.Fatal(err)
	}
	// The invite's lane alone is applied.
	p := &projector.Projector{Log: env.Conn(), Store: env.Store()}
	if err := p.ReplayTo(ctx, map[string]uint64{eventlog.RoomLaneOf(r3): head}, nil); err != nil {
		t.Fatal(err)
	}

	shows := func(r apitest.Response) (invited, message bool) {
		rooms := r.Body["rooms"].(map[string]any)
		_, invited = rooms["invite"].(map[string]any)[r3]
		if jr, ok := rooms["join"].(map[string]any)[r1].(map[string]any); ok {
			for _, e := range jr["timeline"].(map[string]any)["events"].([]any) {
				message = message || e.(map[string]any)["type"] == "m.room.message"
			}
		}
		return invited, message
	}
	initial := bob.MustDo("GET", v3("/sync?timeout=0&set_presence=offline"), nil)
	if invited, message := shows(initial); invited || message {
		t.Fatalf("a response shows records its token does not cover (invite %v, message %v): %s", invited, message, initial.Raw)
	}
	tok, err := eventlog.ParseSyncToken(initial.Str("next_batch"))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Rooms >= head-1 {
		t.Fatalf("token at %d covers the held-back message (head %d)", tok.Rooms, head)
	}

	env.Projector()
	var invited, message bool
	since := initial.Str("next_batch")
	for deadline := time.Now().Add(20 * time.Second); !(invited && message); {
		if time.Now().After(deadline) {
			t.Fatalf("never shown: invite %v, message %v", invited, message)
		}
		r := bob.MustDo("GET", v3("/sync?timeout=1000&set_presence=offline&since="+url.QueryEscape(since)), nil)
		i, m := shows(r)
		if (i && invited) || (m && message) {
			t.Fatalf("shown twice: %s", r.Raw)
		}
		invited, message = invited || i, message || m
		since = r.Str("next_batch")
	}
}
