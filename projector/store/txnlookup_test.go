package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"strand/eventlog"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// Lookups of client transactions made at once are answered together
// (EventByTxn batches them: far fewer queries than lookups); each still
// gets its own answer: the event of
// its transaction, or ErrNotFound, whatever the others asked. A lookup
// whose request has ended returns at once with its context's error.
func TestEventByTxnConcurrentLookups(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, _ := storetest.Open(t)
	const sent = 100
	rooms := []string{"!a:x", "!b:x"}
	addEvents := func(_ context.Context, tx *store.Tx, m eventlog.Msg) error {
		for i := range sent {
			room := rooms[i%2]
			tx.AddRoomEvent(&store.RoomEventRow{Pos: int64(i + 1), EventID: fmt.Sprintf("$e%d", i), RoomID: room, Type: "m.room.message",
				Sender: "@u:x", Client: []byte(`{}`), PDU: []byte(`{}`), TxnDevice: "D", TxnID: fmt.Sprintf("t%d", i)})
		}
		return nil
	}
	if _, err := st.Project(ctx, eventlog.StreamRooms+".0", 0, []eventlog.Msg{{Seq: 1, Type: "room.events"}}, addEvents); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 4*sent)
	start := make(chan struct{})
	before := st.TxnLookupQueries()
	for i := range 3 * sent {
		wg.Go(func() {
			<-start
			room, device := rooms[i%2], "D"
			if i%7 == 0 {
				device = "other" // same transaction ID, another device: not it
			}
			if i%11 == 0 {
				room = rooms[(i+1)%2] // the transaction was in the other room
			}
			want := fmt.Sprintf("$e%d", i)
			if i >= sent || device != "D" || room != rooms[i%2] {
				want = ""
			}
			id, err := st.EventByTxn(ctx, room, "@u:x", device, fmt.Sprintf("t%d", i))
			switch {
			case want == "" && !errors.Is(err, store.ErrNotFound):
				errs <- fmt.Errorf("lookup %d: %q, %v; want ErrNotFound", i, id, err)
			case want != "" && (err != nil || id != want):
				errs <- fmt.Errorf("lookup %d: %q, %v; want %s", i, id, err, want)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Lookups made at once share queries: one each would be 300.
	if q := st.TxnLookupQueries() - before; q > sent {
		t.Errorf("%d lookups made %d queries", 3*sent, q)
	}

	ended, stop := context.WithCancel(ctx)
	stop()
	if _, err := st.EventByTxn(ended, rooms[0], "@u:x", "D", "t0"); !errors.Is(err, context.Canceled) {
		t.Errorf("lookup of an ended request: %v, want context.Canceled", err)
	}
	if id, err := st.EventByTxn(ctx, rooms[0], "@u:x", "D", "t0"); err != nil || id != "$e0" {
		t.Errorf("lookup after an abandoned one: %q, %v", id, err)
	}
}
