package eventlog_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"strand/eventlog"
	"strand/eventlog/logtest"
)

// Declaring the streams again is harmless, but a process started with
// another replica count is refused rather than allowed to rescale the
// log under everyone else.
func TestEnsureStreamsRefusesReplicaChange(t *testing.T) {
	srv := logtest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		if err := eventlog.EnsureStreams(ctx, js, eventlog.StreamOptions{Replicas: 1}); err != nil {
			t.Fatalf("declare R1: %v", err)
		}
	}
	err = eventlog.EnsureStreams(ctx, js, eventlog.StreamOptions{Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "--replicas 1") {
		t.Fatalf("declare R3 over R1 streams: %v, want a refusal naming --replicas 1", err)
	}
	s, err := js.Stream(ctx, eventlog.StreamRooms)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 1 {
		t.Fatalf("ROOMS has %d replicas after the refusal", r)
	}
}
