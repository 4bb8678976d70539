package syncstream

import (
	"testing"

	"strand/eventlog"
)

// consumedStreams are the streams a sync worker reads (Consumer.Run).
var consumedStreams = map[string]bool{eventlog.StreamRooms: true, eventlog.StreamAccounts: true, eventlog.StreamReceipts: true, eventlog.StreamEphemeral: true}

// Every record type of eventlog's table on a stream sync workers read says
// whom it wakes, and wakes names no type outside the table.
func TestEveryRecordTypeWakes(t *testing.T) {
	checked := 0
	for _, k := range eventlog.RecordKinds() {
		_, ok := wakes[k.Type]
		switch {
		case consumedStreams[k.Stream] && !ok:
			t.Errorf("%s (%s): not in wakes: say whom it wakes", k.Type, k.Stream)
		case !consumedStreams[k.Stream] && ok:
			t.Errorf("%s is in wakes but on %s, which sync workers do not read", k.Type, k.Stream)
		}
		if consumedStreams[k.Stream] {
			checked++
		}
	}
	if checked < 25 {
		t.Fatalf("only %d record types checked", checked)
	}
	for typ := range wakes {
		if _, ok := eventlog.KindOf(typ); !ok {
			t.Errorf("wakes names %s, which is not a record type", typ)
		}
	}
}
