package eventlog

import (
	"testing"
	"time"
)

// A report older than one already recorded (the heartbeat computed it
// before the reader's own report, and sent it after) does not move the
// reader back: a write waiting for that reader would wait for nothing.
func TestReaderPositionOnlyRises(t *testing.T) {
	r := &Readers{pos: map[string]map[string]readerState{}}
	now := time.Now()
	r.record("sync_ROOMS", "w1", 10, now)
	r.record("sync_ROOMS", "w1", 7, now.Add(time.Millisecond))
	if behind, _ := r.behind("sync_ROOMS", 10, now.Add(2*time.Millisecond)); len(behind) != 0 {
		t.Fatalf("readers behind 10 after reports 10 then 7: %v", behind)
	}
	r.record("sync_ROOMS", "w1", HoldsNothing, now)
	if behind, _ := r.behind("sync_ROOMS", 1<<40, now.Add(2*time.Millisecond)); len(behind) != 0 {
		t.Fatalf("a reader that holds nothing is waited for: %v", behind)
	}
	r.record("sync_ROOMS", "w1", 12, now)
	if behind, _ := r.behind("sync_ROOMS", 13, now.Add(2*time.Millisecond)); len(behind) != 1 {
		t.Fatalf("a reader that stopped and reads again is not waited for: %v", behind)
	}
}
