package api_test

import (
	"net/url"
	"testing"
)

// A receipt's thread_id names a thread root of the room: an event of
// another room, or no event, is refused rather than recorded.
func TestReceiptThreadIDInRoom(t *testing.T) {
	_, c := newServer(t)
	c.Register("reader", "pw")
	room := c.MustDo("POST", v3("/createRoom"), map[string]any{}).Str("room_id")
	other := c.MustDo("POST", v3("/createRoom"), map[string]any{}).Str("room_id")
	ev := c.MustDo("PUT", v3("/rooms/"+url.PathEscape(room)+"/send/m.room.message/t1"), map[string]any{"msgtype": "m.text", "body": "hi"}).Str("event_id")
	foreign := c.MustDo("PUT", v3("/rooms/"+url.PathEscape(other)+"/send/m.room.message/t2"), map[string]any{"msgtype": "m.text", "body": "elsewhere"}).Str("event_id")
	path := v3("/rooms/" + url.PathEscape(room) + "/receipt/m.read/" + url.PathEscape(ev))
	for _, thread := range []string{foreign, "$nosuchevent:localhost", "not-an-id"} {
		if r := c.Do("POST", path, map[string]any{"thread_id": thread}); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Fatalf("thread_id %s: %d %s", thread, r.Status, r.Raw)
		}
	}
	c.MustDo("POST", path, map[string]any{"thread_id": "main"})
	c.MustDo("POST", path, map[string]any{"thread_id": ev})
}
