package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"strand/eventlog"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// filterMsg is an ACCOUNTS record at seq creating filter "f<seq>" of @a:x.
func filterMsg(seq uint64) eventlog.Msg {
	r := eventlog.FilterCreated{UserID: "@a:x", FilterID: fmt.Sprintf("f%d", seq), Filter: json.RawMessage(`{}`)}
	b, _ := json.Marshal(r)
	return eventlog.Msg{Stream: eventlog.StreamAccounts, Seq: seq, Type: r.RecordType(), Data: b}
}

func applyFilter(_ context.Context, tx *store.Tx, m eventlog.Msg) error {
	rec, err := m.Decode()
	if err != nil {
		return err
	}
	tx.AddFilter(rec.(*eventlog.FilterCreated))
	return nil
}

// Project applies a batch and its position in one transaction; records at
// or below the stored position are skipped (redelivery, a second
// projector); a stored position behind the reader's refuses the batch
// (ErrPositionBehind); a failing record rolls the whole batch back.
func TestProjectSkipsAppliedAndRefusesBehind(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, _ := storetest.Open(t)
	stream := eventlog.StreamAccounts
	has := func(seq uint64) bool {
		t.Helper()
		_, err := st.Filter(ctx, "@a:x", fmt.Sprintf("f%d", seq))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	position := func() uint64 {
		t.Helper()
		p, err := st.Position(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	pos, err := st.Project(ctx, stream, 0, []eventlog.Msg{filterMsg(1), filterMsg(2), filterMsg(3)}, applyFilter)
	if err != nil || pos != 3 || position() != 3 || !has(1) || !has(3) {
		t.Fatalf("first batch: pos %d err %v, stored %d", pos, err, position())
	}

	// Redelivery of 2..4 by a reader that believes 1 is stored (it is
	// behind, another projector applied 2 and 3): 2 and 3 are skipped,
	// only 4 is applied.
	var applied []uint64
	count := func(ctx context.Context, tx *store.Tx, m eventlog.Msg) error {
		applied = append(applied, m.Seq)
		return applyFilter(ctx, tx, m)
	}
	pos, err = st.Project(ctx, stream, 1, []eventlog.Msg{filterMsg(2), filterMsg(3), filterMsg(4)}, count)
	if err != nil || pos != 4 || fmt.Sprint(applied) != "[4]" || !has(4) {
		t.Fatalf("redelivery: pos %d err %v applied %v", pos, err, applied)
	}
	// Everything already applied: nothing to do, position unchanged.
	applied = nil
	pos, err = st.Project(ctx, stream, 4, []eventlog.Msg{filterMsg(3), filterMsg(4)}, count)
	if err != nil || pos != 4 || len(applied) != 0 {
		t.Fatalf("all applied: pos %d err %v applied %v", pos, err, applied)
	}

	// A reader that applied through 9 finds 4 stored: refused, nothing
	// written.
	applied = nil
	_, err = st.Project(ctx, stream, 9, []eventlog.Msg{filterMsg(10)}, count)
	if !errors.Is(err, store.ErrPositionBehind) || len(applied) != 0 || position() != 4 || has(10) {
		t.Fatalf("behind: err %v applied %v stored %d", err, applied, position())
	}

	// A record that fails rolls back the records before it in the batch.
	errBad := errors.New("bad record")
	_, err = st.Project(ctx, stream, 4, []eventlog.Msg{filterMsg(5), filterMsg(6)}, func(ctx context.Context, tx *store.Tx, m eventlog.Msg) error {
		if m.Seq == 6 {
			return errBad
		}
		return applyFilter(ctx, tx, m)
	})
	if !errors.Is(err, errBad) || position() != 4 || has(5) {
		t.Fatalf("failed batch: err %v stored %d, filter 5 kept %v", err, position(), has(5))
	}
}
