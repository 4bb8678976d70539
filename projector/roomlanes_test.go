package projector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"strand/eventlog"
	"strand/projector"
	"strand/projector/store"
)

// waitRooms waits until st has ROOMS as a whole (every lane complete)
// through want.
func waitRooms(ctx context.Context, t *testing.T, st *store.Store, want uint64) {
	t.Helper()
	for {
		pos, err := st.Position(ctx, eventlog.StreamRooms)
		if err != nil {
			t.Fatal(err)
		}
		if pos >= want {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("ROOMS at %d, want %d", pos, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeRooms appends, for n rooms (spread over the partitions), a record
// creating each and one with a message.
func writeRooms(ctx context.Context, t *testing.T, l *eventlog.Log, prefix string, n int) {
	t.Helper()
	for i := range n {
		r := &freshRoom{t: t, l: l, id: fmt.Sprintf("!%s%d:example.org", prefix, i)}
		create, _ := r.event("m.room.create", "@a:example.org", strp(""), map[string]any{"creator": "@a:example.org"}, nil)
		join, _ := r.event("m.room.member", "@a:example.org", strp("@a:example.org"), map[string]any{"membership": "join"}, nil)
		r.send(ctx, nil, create, join)
		msg, _ := r.event("m.room.message", "@a:example.org", nil, map[string]any{"msgtype": "m.text", "body": prefix}, nil)
		r.send(ctx, nil, msg)
	}
}

// A process applies the ROOMS lanes it holds together, and records each of
// them complete through every batch it applies: with the idle check off,
// ROOMS as a whole still reaches the head (the lowest lane would otherwise
// stay at its own last record). When a second process joins, the lanes
// are split between the two without a gap, and the projection equals a
// replay.
func TestHeldRoomLanesApplyTogether(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	idle, retry := projector.LaneIdleCheck, projector.LaneRetry
	projector.LaneIdleCheck, projector.LaneRetry = time.Hour, 50*time.Millisecond
	t.Cleanup(func() { projector.LaneIdleCheck, projector.LaneRetry = idle, retry })

	l, st, _ := testLogAndStore(ctx, t)
	writeRooms(ctx, t, l, "early", 200)
	// Batches of up to 512 records: the first ones, of a log written
	// before the projector started, are split over several transactions.
	a := &projector.Projector{Log: l, Store: st, MaxBatch: 512}
	runProjector(ctx, t, a)
	head, err := l.Head(ctx, eventlog.StreamRooms)
	if err != nil {
		t.Fatal(err)
	}
	waitRooms(ctx, t, st, head)
	positions, err := st.Positions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, lane := range eventlog.RoomLanes {
		last, err := l.LastSeq(ctx, eventlog.StreamRooms, eventlog.LaneFilter(i))
		if err != nil {
			t.Fatal(err)
		}
		// A lane's own position is its last record, and only a lane that
		// applied something has one: what a replay leaves.
		if got, ok := positions[lane]; got != last || ok != (last != 0) {
			t.Errorf("lane %s at %d (row %v), its last record is %d", lane, got, ok, last)
		}
	}
	if n := len(a.Lanes()); n != len(projector.Lanes) {
		t.Fatalf("one process holds %d lanes, want all %d", n, len(projector.Lanes))
	}

	// A second process: the lanes are shared, and writes to every
	// partition are applied once.
	b := &projector.Projector{Log: l, Store: st, MaxBatch: 5}
	runProjector(ctx, t, b)
	for len(a.Lanes()) == len(projector.Lanes) || len(b.Lanes()) == 0 {
		if ctx.Err() != nil {
			t.Fatalf("lanes not shared: %v and %v", a.Lanes(), b.Lanes())
		}
		time.Sleep(20 * time.Millisecond)
	}
	writeRooms(ctx, t, l, "late", 64)
	if head, err = l.Head(ctx, eventlog.StreamRooms); err != nil {
		t.Fatal(err)
	}
	// With the idle check off, a lane of one process passes the other
	// process's records only when its own reader applies a batch; wait
	// for every lane to be applied through its own last record.
	for i, lane := range eventlog.RoomLanes {
		last, err := l.LastSeq(ctx, eventlog.StreamRooms, eventlog.LaneFilter(i))
		if err != nil {
			t.Fatal(err)
		}
		for {
			pos, err := st.AppliedPosition(ctx, lane)
			if err != nil {
				t.Fatal(err)
			}
			if pos >= last {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("lane %s at %d, its last record is %d (head %d)", lane, pos, last, head)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Every lane ends up held by exactly one of the two (a lane handed
	// over is briefly held by neither).
	for {
		held := map[string]int{}
		for _, p := range []*projector.Projector{a, b} {
			for _, lane := range p.Lanes() {
				held[lane]++
			}
		}
		var wrong []string
		for _, lane := range projector.Lanes {
			if held[lane] != 1 {
				wrong = append(wrong, fmt.Sprintf("%s by %d", lane, held[lane]))
			}
		}
		if len(wrong) == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("lanes held: %v", wrong)
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkEqualsReplay(ctx, t, l, st)
}
