package eventlog_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"strand/eventlog"
	"strand/eventlog/logtest"
)

// One declaration on a fresh server is enough for uploads to be counted,
// and the quota holds under concurrent additions from separate
// connections (as from separate api processes): of twenty additions of
// one byte against a quota of ten, exactly ten are counted.
func TestMediaUsageQuota(t *testing.T) {
	srv := logtest.Start(t)
	ctx := context.Background()
	open := func() *eventlog.Log {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		l, err := eventlog.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := open()
	if err := eventlog.EnsureStreams(ctx, first.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if total, err := first.AddMediaUsage(ctx, "@a:x", 7, 10); err != nil || total != 7 {
		t.Fatalf("first addition: %d %v", total, err)
	}
	if used, err := first.AddMediaUsage(ctx, "@a:x", 4, 10); !errors.Is(err, eventlog.ErrMediaQuota) || used != 7 {
		t.Fatalf("addition past the quota: %d %v", used, err)
	}
	if total, err := first.AddMediaUsage(ctx, "@a:x", 4, 0); err != nil || total != 11 {
		t.Fatalf("addition without a quota: %d %v", total, err)
	}

	logs := []*eventlog.Log{first, open(), open()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	counted := 0
	for i := range 20 {
		wg.Go(func() {
			_, err := logs[i%len(logs)].AddMediaUsage(ctx, "@b:x", 1, 10)
			switch {
			case err == nil:
				mu.Lock()
				counted++
				mu.Unlock()
			case !errors.Is(err, eventlog.ErrMediaQuota):
				t.Errorf("concurrent addition: %v", err)
			}
		})
	}
	wg.Wait()
	used, err := first.MediaUsage(ctx, "@b:x")
	if err != nil || counted != 10 || used != 10 {
		t.Fatalf("%d of 20 additions counted, usage %d (%v); want 10 and 10", counted, used, err)
	}
}

// DeleteMediaWrite removes a file only while it is the write it names:
// the file written again by another upload stays. RefundMediaUsage takes
// a counted size off again, never below zero.
func TestDeleteMediaWriteAndRefund(t *testing.T) {
	srv := logtest.Start(t)
	ctx := context.Background()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := eventlog.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.EnsureStreams(ctx, l.JetStream(), eventlog.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	_, first, err := l.PutMediaWrite(ctx, "m1", "@a:x", eventlog.MediaInfo{}, strings.NewReader("first"))
	if err != nil {
		t.Fatal(err)
	}
	_, second, err := l.PutMediaWrite(ctx, "m1", "@a:x", eventlog.MediaInfo{}, strings.NewReader("second"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteMediaWrite(ctx, "m1", first); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.MediaExists(ctx, "m1"); err != nil || !ok {
		t.Fatalf("the second write was removed by the first's delete: %v %v", ok, err)
	}
	if err := l.DeleteMediaWrite(ctx, "m1", second); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.MediaExists(ctx, "m1"); err != nil || ok {
		t.Fatalf("the second write's delete left it: %v %v", ok, err)
	}

	if _, err := l.AddMediaUsage(ctx, "@a:x", 10, 0); err != nil {
		t.Fatal(err)
	}
	if err := l.RefundMediaUsage(ctx, "@a:x", 4); err != nil {
		t.Fatal(err)
	}
	if used, err := l.MediaUsage(ctx, "@a:x"); err != nil || used != 6 {
		t.Fatalf("usage after a refund: %d %v", used, err)
	}
	if err := l.RefundMediaUsage(ctx, "@a:x", 100); err != nil {
		t.Fatal(err)
	}
	if used, err := l.MediaUsage(ctx, "@a:x"); err != nil || used != 0 {
		t.Fatalf("usage after a refund past it: %d %v", used, err)
	}
}
