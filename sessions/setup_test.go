package sessions_test

import (
	"context"
	"testing"

	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// logAndStore returns a fresh log (its streams made), a fresh projection
// store and a watermark of that store's positions, all closed at the
// end of the test.
func logAndStore(t *testing.T) (*eventlog.Log, *store.Store, *eventlog.Watermark) {
	t.Helper()
	l, err := eventlog.New(logtest.Start(t).Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.EnsureStreams(context.Background(), l.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	st, _ := storetest.Open(t)
	wm, err := eventlog.NewWatermark(l.Conn(), st.Position)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wm.Close() })
	return l, st, wm
}
