package projector

import (
	"context"
	"errors"
	"testing"

	"strand/eventlog"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// projectedStreams are the streams the projector applies (lanes).
var projectedStreams = map[string]bool{eventlog.StreamAccounts: true, eventlog.StreamRooms: true, eventlog.StreamReceipts: true}

// Every record type of eventlog's table on a projected stream reaches a
// case of apply: each is applied, empty, in a transaction that is then
// rolled back, and must not come back as "no projection". Whatever else
// an empty record causes (an error, a write) is not this test's concern.
func TestEveryRecordTypeIsProjected(t *testing.T) {
	st, _ := storetest.Open(t)
	ctx := context.Background()
	errRollback := errors.New("roll back")
	checked := 0
	for _, k := range eventlog.RecordKinds() {
		if !projectedStreams[k.Stream] {
			continue
		}
		checked++
		m := eventlog.Msg{Stream: k.Stream, Seq: 1, Type: k.Type, Data: []byte(`{}`)}
		var applyErr error
		_, err := st.Project(ctx, k.Stream, 0, []eventlog.Msg{m}, func(ctx context.Context, tx *store.Tx, m eventlog.Msg) error {
			applyErr = apply(ctx, tx, m)
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("%s: Project: %v", k.Type, err)
		}
		if errors.Is(applyErr, errNoProjection) {
			t.Errorf("%s (%s): apply has no case for it", k.Type, k.Stream)
		}
	}
	if checked < 25 {
		t.Fatalf("only %d projected record types checked", checked)
	}
	// And the check can fail: typing notices are not projected, so apply
	// has no case for them.
	typing := (eventlog.TypingSet{}).RecordType()
	var typingErr error
	_, err := st.Project(ctx, eventlog.StreamAccounts, 0, []eventlog.Msg{{Stream: eventlog.StreamAccounts, Seq: 1, Type: typing, Data: []byte(`{}`)}},
		func(ctx context.Context, tx *store.Tx, m eventlog.Msg) error {
			typingErr = apply(ctx, tx, m)
			return errRollback
		})
	if !errors.Is(err, errRollback) {
		t.Fatalf("%s: Project: %v", typing, err)
	}
	if !errors.Is(typingErr, errNoProjection) {
		t.Errorf("%s: %v, want errNoProjection", typing, typingErr)
	}
}
