package pushgateway

import (
	"context"
	"net/url"
	"testing"

	"strand/api/apitest"
	"strand/eventlog"
)

// A room record handled twice (delivered again after a crash between
// queueing and acknowledging it) queues its notifications once: the
// Nats-Msg-Id of event and pusher makes the second enqueue a duplicate.
func TestRedeliveredRecordQueuesOnce(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	base := env.Serve(apitest.DefaultConfig()).URL
	alice, bob := apitest.NewClient(t, base), apitest.NewClient(t, base)
	alice.Register("alice", "pw")
	bob.Register("bob", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})
	bob.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": "http", "app_id": "a", "pushkey": "k",
		"app_display_name": "A", "device_display_name": "D", "lang": "en",
		"data": map[string]any{"url": "https://push.example.org" + NotifyPath}})
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "hi"})

	l := env.Conn()
	ctx := context.Background()
	seq, err := l.Head(ctx, eventlog.StreamRooms)
	if err != nil {
		t.Fatal(err)
	}
	p := &Pusher{Log: l, Store: env.Store(), Logger: apitest.Logger()}
	p.defaults()
	evs, err := p.Store.RecordEvents(ctx, seq)
	if err != nil || len(evs) != 1 || evs[0].Type != "m.room.message" {
		t.Fatalf("record %d events %v, %v", seq, evs, err)
	}
	for range 2 {
		if err := p.queueEvent(ctx, &evs[0]); err != nil {
			t.Fatal(err)
		}
	}
	if _, n, err := l.HeadAndCount(ctx, eventlog.StreamPushes); err != nil || n != 1 {
		t.Fatalf("PUSHES holds %d notifications (%v), want 1", n, err)
	}
}
