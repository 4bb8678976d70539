package eventlog

import "testing"

// ROOMS is applied through G when every record at or below G is applied
// by its lane: the lowest lane always qualifies, and a reader that saw
// each record's lane gets past lanes that have nothing to apply, but never
// past a record its lane has not applied.
func TestRoomsTrackerWalksPastIdleLanes(t *testing.T) {
	var tr roomsTracker
	if g := tr.through(0); g != 0 {
		t.Fatalf("nothing applied: G %d", g)
	}
	tr.observeFrom(10)
	for i := range tr.lanes {
		tr.lanes[i] = 10 // every lane complete through 10
	}
	// Records 11..14: lanes 3, 5, 3, alias.
	tr.observe(11, 3)
	tr.observe(12, 5)
	tr.observe(13, 3)
	tr.observe(14, AliasLane)
	if g := tr.through(10); g != 10 {
		t.Fatalf("nothing of 11.. applied: G %d", g)
	}
	tr.lanes[3] = 13 // lane 3 applied 11 and 13; 12 (lane 5) is not
	if g := tr.through(10); g != 11 {
		t.Fatalf("11 applied, 12 not: G %d, want 11", g)
	}
	tr.lanes[5] = 12
	if g := tr.through(11); g != 13 {
		t.Fatalf("through 13, the alias record not: G %d, want 13", g)
	}
	tr.lanes[AliasLane] = 14
	if g := tr.through(13); g != 14 {
		t.Fatalf("all applied: G %d, want 14", g)
	}
	// Idle lanes (all but 3, 5 and alias) are still at 10: the records
	// read say they had nothing in 11..14.
	tr.observe(15, 7)
	if g := tr.through(14); g != 14 {
		t.Fatalf("15 in lane 7 is not applied: G %d", g)
	}
	// A reader that has not seen the records before from only has the
	// lowest lane.
	var fresh roomsTracker
	fresh.observeFrom(100)
	for i := range fresh.lanes {
		fresh.lanes[i] = 50
	}
	fresh.lanes[2] = 40
	if g := fresh.through(0); g != 40 {
		t.Fatalf("records up to 100 unseen: G %d, want the lowest lane 40", g)
	}
}

func TestLaneNames(t *testing.T) {
	for i := range RoomLaneCount {
		if LaneIndex(LaneName(i)) != i {
			t.Errorf("lane %d: name %s maps back to %d", i, LaneName(i), LaneIndex(LaneName(i)))
		}
	}
	if LaneIndex(StreamRooms) != -1 || LaneIndex(StreamAccounts) != -1 || LaneIndex("ROOMS.16") != -1 {
		t.Error("a stream or an out-of-range name is a lane")
	}
	room := "!abc:example.org"
	if got, want := RoomLaneOf(room), LaneName(SubjectLane(RoomSubject(room))); got != want {
		t.Errorf("room lane %s, subject lane %s", got, want)
	}
	if SubjectLane(AliasSubject("#a:b")) != AliasLane {
		t.Error("an alias is not in the alias lane")
	}
}
