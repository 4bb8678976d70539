package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/projector"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// "strand replay --swap" against the database and log of a running
// "strand serve" while a client keeps writing (messages, new rooms) and
// reading (a /sync chain, /messages, /joined_rooms): no request fails
// across the swap, every acknowledged event is in the projection exactly
// once, the sync chain that started before the swap sees every later
// event exactly once, and the projection equals a replay into an empty
// database.
func TestReplaySwapWhileServing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server under traffic and a full rebuild")
	}
	ctx := context.Background()
	ns := logtest.Start(t)
	natsURL := ns.ClientURL()
	dbURL := storetest.NewURL(t)
	addr := freeAddr(t)
	stop := startServe(t, "--listen", addr, "--nats-url", natsURL, "--data-dir", t.TempDir(), "--database-url", dbURL)
	c := apitest.NewClient(t, "http://"+addr)
	c.Register("swapper", "pw")
	roomID := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	var a acked
	sendBurst(t, c, roomID, 400, 8, &a) // history for the rebuild to work through
	// A receipt: its projection reads its event's position, so a rebuild
	// that applied RECEIPTS before ROOMS would differ from the live
	// projection (the dump comparison at the end).
	topicID := c.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.topic/", map[string]any{"topic": "receipts"}).Str("event_id")
	c.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(topicID), map[string]any{})
	filter := url.QueryEscape(`{"room":{"rooms":["` + roomID + `"],"timeline":{"limit":1000}}}`)
	pre := c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&filter="+filter, nil).Str("next_batch")

	live, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	schemaOID := func() (oid uint32) {
		t.Helper()
		if err := live.Pool().QueryRow(ctx, "SELECT oid FROM pg_namespace WHERE nspname = 'public'").Scan(&oid); err != nil {
			t.Fatal(err)
		}
		return oid
	}
	before := schemaOID()

	tr := &swapTraffic{c: c, roomID: roomID, acked: &a, since: pre, filter: filter, seen: map[string]int{}}
	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); tr.write(tctx) }()
	go func() { defer wg.Done(); tr.read(tctx) }()
	time.Sleep(500 * time.Millisecond)
	swapStart := time.Now()
	if err := run(ctx, []string{"replay", "--swap", "--nats-url", natsURL, "--database-url", dbURL, "--log-level", "warn"}); err != nil {
		t.Fatalf("replay --swap: %v", err)
	}
	tr.markSwapped()
	t.Logf("replay --swap took %s", time.Since(swapStart).Round(time.Millisecond))
	time.Sleep(time.Second)
	stopTraffic()
	wg.Wait()

	tr.mu.Lock()
	t.Logf("%d requests during the test, %d writes acknowledged after the swap, %d sync responses", tr.requests, len(tr.postSwap), tr.syncs)
	for _, f := range tr.failures {
		t.Errorf("request failed: %s", f)
	}
	if len(tr.postSwap) == 0 || tr.syncsAfterSwap == 0 {
		t.Errorf("traffic did not go on after the swap (%d writes, %d syncs)", len(tr.postSwap), tr.syncsAfterSwap)
	}
	tr.mu.Unlock()
	if schemaOID() == before {
		t.Fatal("the public schema was not replaced")
	}
	var leftovers []string
	rows, err := live.Pool().Query(ctx, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'strand\\_%'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		leftovers = append(leftovers, n)
	}
	if rows.Err() != nil || len(leftovers) > 0 {
		t.Errorf("schemas left after the swap: %v %v", leftovers, rows.Err())
	}

	// The projector caught up with the whole log.
	l, err := eventlog.New(ns.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, s := range projector.Streams {
			pos, err := live.Position(ctx, s) // ROOMS: its lowest lane
			if err != nil {
				t.Fatal(err)
			}
			if head, err := l.Head(ctx, s); err != nil || pos != head {
				return false
			}
		}
		return true
	})

	// Every acknowledged message is in the room once; every created room
	// is there.
	checkAllOnce(t, &a, roomMessageIDs(t, c, roomID))
	joined := map[string]bool{}
	for _, r := range c.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil).Body["joined_rooms"].([]any) {
		joined[r.(string)] = true
	}
	for _, r := range tr.rooms {
		if !joined[r] {
			t.Errorf("created room %s is missing", r)
		}
	}

	// The sync chain begun before the swap: every message acknowledged
	// after its first token, exactly once.
	tr.read(tctx) // tctx has ended: follow the chain to its end
	for id, n := range tr.seen {
		if n != 1 {
			t.Errorf("sync chain delivered %s %d times", id, n)
		}
	}
	if !tr.limited {
		for _, id := range tr.live {
			if tr.seen[id] != 1 {
				t.Errorf("sync chain delivered acknowledged %s %d times", id, tr.seen[id])
			}
		}
	}
	// The pre-swap token alone, asked now, still returns the later events.
	r := c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(pre)+"&filter="+filter, nil)
	got := timelineIDs(r.Body, roomID)
	for _, id := range tr.postSwap {
		if !got[id] {
			t.Errorf("/sync since the pre-swap token lacks %s, sent after the swap", id)
		}
	}

	// The projection equals a replay into an empty database.
	replayURL := storetest.NewURL(t)
	if err := run(ctx, []string{"replay", "--nats-url", natsURL, "--database-url", replayURL, "--log-level", "warn"}); err != nil {
		t.Fatalf("replay: %v", err)
	}
	replayed, err := store.Open(ctx, replayURL)
	if err != nil {
		t.Fatal(err)
	}
	defer replayed.Close()
	da, err := live.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := replayed.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("the swapped-in projection differs from a replay (%d and %d bytes)", len(da), len(db))
	}
	if err := stop(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}
}

// swapTraffic is a client that keeps writing and reading; it records every
// request that did not succeed.
type swapTraffic struct {
	c      *apitest.Client
	roomID string
	acked  *acked
	filter string

	mu             sync.Mutex
	swapped        bool
	requests       int
	failures       []string
	rooms          []string       // rooms created
	live           []string       // messages acknowledged during the traffic
	postSwap       []string       // the part of live acknowledged after the swap
	since          string         // the sync chain's token
	seen           map[string]int // messages the sync chain delivered
	limited        bool
	syncs          int
	syncsAfterSwap int
}

func (tr *swapTraffic) markSwapped() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.swapped = true
}

// do sends one request and records it; it returns the body when the
// status is 200.
func (tr *swapTraffic) do(method, path string, body any) map[string]any {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, tr.c.Base+path, rd)
	if err != nil {
		tr.fail("%s %s: %v", method, path, err)
		return nil
	}
	req.Header.Set("Authorization", "Bearer "+tr.c.Token)
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	tr.mu.Lock()
	tr.requests++
	tr.mu.Unlock()
	if err != nil {
		tr.fail("%s %s: %v", method, path, err)
		return nil
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		tr.fail("%s %s: %d %s", method, path, res.StatusCode, raw)
		return nil
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		tr.fail("%s %s: %v", method, path, err)
	}
	return out
}

func (tr *swapTraffic) fail(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.failures = append(tr.failures, fmt.Sprintf(format, args...))
}

// write sends messages, and every tenth time creates a room, until ctx
// ends.
func (tr *swapTraffic) write(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		if i%10 == 9 {
			if r := tr.do("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": fmt.Sprint("room ", i)}); r != nil {
				tr.mu.Lock()
				tr.rooms = append(tr.rooms, r["room_id"].(string))
				tr.mu.Unlock()
			}
			continue
		}
		path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/live%d", url.PathEscape(tr.roomID), i)
		start := time.Now()
		r := tr.do("PUT", path, map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i)})
		if r == nil {
			continue
		}
		id, _ := r["event_id"].(string)
		tr.acked.add(id, time.Since(start))
		tr.mu.Lock()
		tr.live = append(tr.live, id)
		if tr.swapped {
			tr.postSwap = append(tr.postSwap, id)
		}
		tr.mu.Unlock()
	}
}

// read follows the sync chain and reads the room and the room list until
// ctx ends; with a finished ctx it follows the chain until it is empty.
func (tr *swapTraffic) read(ctx context.Context) {
	for {
		done := ctx.Err() != nil
		tr.mu.Lock()
		since := tr.since
		tr.mu.Unlock()
		r := tr.do("GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since)+"&filter="+tr.filter, nil)
		if r == nil {
			return
		}
		ids := timelineIDs(r, tr.roomID)
		tr.mu.Lock()
		tr.syncs++
		if tr.swapped {
			tr.syncsAfterSwap++
		}
		for id := range ids {
			tr.seen[id]++
		}
		if rooms, _ := r["rooms"].(map[string]any); rooms != nil {
			if join, _ := rooms["join"].(map[string]any); join != nil {
				if room, _ := join[tr.roomID].(map[string]any); room != nil {
					if tl, _ := room["timeline"].(map[string]any); tl != nil && tl["limited"] == true {
						tr.limited = true
					}
				}
			}
		}
		tr.since, _ = r["next_batch"].(string)
		tr.mu.Unlock()
		if done {
			if len(ids) == 0 {
				return
			}
			continue
		}
		tr.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(tr.roomID)+"/messages?dir=b&limit=5", nil)
		tr.do("GET", "/_matrix/client/v3/joined_rooms", nil)
		time.Sleep(10 * time.Millisecond)
	}
}

// timelineIDs returns the message event IDs of roomID's timeline in a
// /sync response.
func timelineIDs(body map[string]any, roomID string) map[string]bool {
	out := map[string]bool{}
	rooms, _ := body["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	tl, _ := room["timeline"].(map[string]any)
	events, _ := tl["events"].([]any)
	for _, e := range events {
		ev, _ := e.(map[string]any)
		if ev["type"] == "m.room.message" {
			if id, ok := ev["event_id"].(string); ok {
				out[id] = true
			}
		}
	}
	return out
}
