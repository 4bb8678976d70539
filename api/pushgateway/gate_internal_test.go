package pushgateway

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/eventlog"
)

// stepQuery is a gate query that answers only when the test says so.
type stepQuery struct {
	n       atomic.Int32
	started chan int  // the number of each query as it starts
	answer  chan bool // what the running query answers
}

// next returns the number of the next query to start; a gate that never
// starts it fails the test instead of hanging it.
func (q *stepQuery) next(t *testing.T) int {
	t.Helper()
	select {
	case n := <-q.started:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no query started")
		return 0
	}
}

func (q *stepQuery) query(ctx context.Context) (bool, error) {
	q.started <- int(q.n.Add(1))
	return <-q.answer, nil
}

// A record that arrives while a query is running is answered by the next
// query, not by the running one (which may have read the projection
// before a pusher set just before the record), and the records that
// arrive together share that next query.
func TestPusherGateUsesOnlyLaterQueries(t *testing.T) {
	q := &stepQuery{started: make(chan int), answer: make(chan bool)}
	g := &pusherGate{query: q.query}
	ctx := context.Background()
	first := make(chan bool)
	go func() {
		any, err := g.anyPushers(ctx)
		if err != nil {
			t.Error(err)
		}
		first <- any
	}()
	if n := q.next(t); n != 1 {
		t.Fatalf("query %d started, want 1", n)
	}
	// Two records arrive while query 1 runs.
	var wg sync.WaitGroup
	later := make([]bool, 2)
	for i := range later {
		wg.Add(1)
		go func() {
			defer wg.Done()
			any, err := g.anyPushers(ctx)
			if err != nil {
				t.Error(err)
			}
			later[i] = any
		}()
	}
	// Let them reach the gate before query 1 answers "no pushers".
	for g.waiting() < 2 {
		time.Sleep(time.Millisecond)
	}
	q.answer <- false
	if <-first {
		t.Fatal("first record: want no pushers")
	}
	// A pusher was set before the two later records: query 2 sees it.
	if n := q.next(t); n != 2 {
		t.Fatalf("query %d started, want 2", n)
	}
	go func() { q.answer <- true }()
	wg.Wait()
	if !later[0] || !later[1] {
		t.Fatalf("later records answered %v by the early query, want the pusher seen", later)
	}
	if n := q.n.Load(); n != 2 {
		t.Fatalf("%d queries for three records, want 2", n)
	}
	// A record after that makes a query of its own.
	go func() { <-q.started; q.answer <- false }()
	if any, _ := g.anyPushers(ctx); any {
		t.Fatal("third query: want no pushers")
	}
}

// Without any http pusher, a room record is matched without waiting for
// the projection or reading its events; once a pusher is set, the next
// record is matched in full again (here: it waits for a projection that
// never comes, and fails).
func TestMatchWithoutPushersSkipsTheRecord(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	base := env.Serve(apitest.DefaultConfig()).URL
	bob := apitest.NewClient(t, base)
	bob.Register("bob", "pw")
	l := env.Conn()
	// A watermark that never sees the record: only the gate can end the
	// match of it without an error.
	wm, err := eventlog.NewWatermark(l.Conn(), func(context.Context, string) (uint64, error) { return 0, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	p := &Pusher{Log: l, Store: env.Store(), Watermark: wm, Logger: apitest.Logger(), AckWait: 400 * time.Millisecond}
	p.defaults()
	rec := &eventlog.WorkMsg{Msg: eventlog.Msg{Stream: eventlog.StreamRooms, Seq: 1 << 40}}
	if err := p.queueRecord(context.Background(), rec); err != nil {
		t.Fatalf("no pushers: %v", err)
	}
	bob.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": "http", "app_id": "a", "pushkey": "k",
		"app_display_name": "A", "device_display_name": "D", "lang": "en",
		"data": map[string]any{"url": "https://push.example.org" + NotifyPath}})
	if err := p.queueRecord(context.Background(), rec); err == nil {
		t.Fatal("after a pusher was set, the record was skipped")
	}
}

// A "yes" is trusted for holdYes: records after it make no query until it
// has passed; a "no" is never trusted for a later record.
func TestPusherGateHoldsYes(t *testing.T) {
	var n atomic.Int64
	answer := true
	g := &pusherGate{query: func(context.Context) (bool, error) { n.Add(1); return answer, nil }, holdYes: time.Hour}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if any, err := g.anyPushers(ctx); err != nil || !any {
			t.Fatalf("record %d: %v %v, want yes", i, any, err)
		}
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("%d queries for three records after a yes, want 1", got)
	}
	// Past the hold, the gate asks again; a "no" is asked again each time.
	g.mu.Lock()
	g.yesUntil = time.Time{}
	g.mu.Unlock()
	answer = false
	for i := 0; i < 2; i++ {
		if any, _ := g.anyPushers(ctx); any {
			t.Fatalf("record %d after the hold: yes, want no", i)
		}
	}
	if got := n.Load(); got != 3 {
		t.Fatalf("%d queries, want 3 (one per record once the hold passed)", got)
	}
}
