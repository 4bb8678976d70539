package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/projector/store/storetest"
)

// "strand serve" runs the pusher role, and --outbound-allow lets it reach
// a push gateway on loopback: a message from alice reaches bob's gateway.
func TestServePushes(t *testing.T) {
	got := make(chan string, 16)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Notification struct {
				EventID string `json:"event_id"`
			} `json:"notification"`
		}
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &body)
		got <- body.Notification.EventID
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	defer gw.Close()

	addr := freeAddr(t)
	startServe(t, "--listen", addr, "--data-dir", t.TempDir(), "--database-url", storetest.NewURL(t),
		"--rate-limits", "off", "--outbound-allow", "127.0.0.0/8")
	alice, bob := apitest.NewClient(t, "http://"+addr), apitest.NewClient(t, "http://"+addr)
	alice.Register("alice", "pw")
	bob.Register("bob", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})
	bob.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": "http", "app_id": "a", "pushkey": "k",
		"app_display_name": "A", "device_display_name": "D", "lang": "en",
		"data": map[string]any{"url": gw.URL + "/_matrix/push/v1/notify"}})
	id := alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/1",
		map[string]any{"msgtype": "m.text", "body": "hi"}).Str("event_id")
	select {
	case e := <-got:
		if e != id {
			t.Fatalf("gateway got %q, want %q", e, id)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no push reached the gateway")
	}
}
