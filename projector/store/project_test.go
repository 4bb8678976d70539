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

// ProjectLanes applies records of several lanes in one transaction, each
// lane checked and skipped on its own position as Project does for one
// stream: a record at or below its lane's stored position is skipped
// (another process applied it), a lane stored below the reader's
// expectation refuses the whole batch, only lanes with records get a
// position row, and every lane named is recorded complete through the
// reader's position.
func TestProjectLanesPerLanePositions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, _ := storetest.Open(t)
	laneA, laneB, laneC := eventlog.RoomLanes[0], eventlog.RoomLanes[1], eventlog.RoomLanes[2]
	laneOf := func(m eventlog.Msg) string {
		switch m.Seq % 2 {
		case 0:
			return laneA
		default:
			return laneB
		}
	}
	var applied []uint64
	count := func(ctx context.Context, tx *store.Tx, m eventlog.Msg) error {
		applied = append(applied, m.Seq)
		return applyFilter(ctx, tx, m)
	}
	// Lane A (even sequences) has applied 2 already, by another process.
	if _, err := st.Project(ctx, laneA, 0, []eventlog.Msg{filterMsg(2)}, applyFilter); err != nil {
		t.Fatal(err)
	}
	expect := map[string]uint64{laneA: 0, laneB: 0, laneC: 0}
	pos, err := st.ProjectLanes(ctx, expect, 5, []eventlog.Msg{filterMsg(1), filterMsg(2), filterMsg(3), filterMsg(4), filterMsg(5)}, laneOf, count)
	if err != nil || fmt.Sprint(applied) != "[1 3 4 5]" {
		t.Fatalf("batch of two lanes: pos %v err %v applied %v; want 2 skipped", pos, err, applied)
	}
	if pos[laneA] != 4 || pos[laneB] != 5 || pos[laneC] != 0 {
		t.Fatalf("positions %v, want %s 4, %s 5, %s 0", pos, laneA, laneB, laneC)
	}
	stored, err := st.Positions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := stored[laneC]; ok || stored[laneA] != 4 || stored[laneB] != 5 {
		t.Fatalf("stored positions %v: want A 4, B 5, no row for C", stored)
	}
	for _, l := range []string{laneA, laneB, laneC} {
		if p, err := st.Position(ctx, l); err != nil || p != 5 {
			t.Fatalf("lane %s complete through %d (%v), want 5", l, p, err)
		}
	}

	// A reader that believes lane B applied 7 finds 5: nothing of the
	// batch is applied, lane A's record included.
	applied = nil
	_, err = st.ProjectLanes(ctx, map[string]uint64{laneA: 4, laneB: 7}, 8, []eventlog.Msg{filterMsg(6), filterMsg(7), filterMsg(8)}, laneOf, count)
	if !errors.Is(err, store.ErrPositionBehind) || has(ctx, t, st, 6) {
		t.Fatalf("lane B behind: err %v, filter 6 applied %v", err, has(ctx, t, st, 6))
	}
}

func has(ctx context.Context, t *testing.T, st *store.Store, seq uint64) bool {
	t.Helper()
	_, err := st.Filter(ctx, "@a:x", fmt.Sprintf("f%d", seq))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}
