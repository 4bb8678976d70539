package api_test

import (
	"net/url"
	"testing"

	"strand/api/apitest"
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

// A receipt in a thread must name an event of that thread: its root, a
// threaded reply, or an event related to a reply (a reaction). A message
// of the main timeline or of another thread is refused with 400, as is an
// empty thread_id.
func TestReceiptEventInThread(t *testing.T) {
	_, c := newServer(t)
	c.Register("threadreader", "pw")
	room := c.MustDo("POST", v3("/createRoom"), map[string]any{}).Str("room_id")
	send := func(txn string, content map[string]any) string {
		t.Helper()
		typ := "m.room.message"
		if _, ok := content["msgtype"]; !ok {
			typ = "m.reaction"
		}
		return c.MustDo("PUT", v3("/rooms/"+url.PathEscape(room)+"/send/"+typ+"/"+txn), content).Str("event_id")
	}
	reply := func(txn, root string) string {
		return send(txn, map[string]any{"msgtype": "m.text", "body": txn,
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	}
	root := send("root", map[string]any{"msgtype": "m.text", "body": "root"})
	inThread := reply("r1", root)
	reaction := send("react", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": inThread, "key": "👍"}})
	mainMsg := send("main", map[string]any{"msgtype": "m.text", "body": "main"})
	otherRoot := send("root2", map[string]any{"msgtype": "m.text", "body": "root2"})
	otherReply := reply("r2", otherRoot)

	receipt := func(ev, thread string) apitest.Response {
		return c.Do("POST", v3("/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(ev)), map[string]any{"thread_id": thread})
	}
	for _, ev := range []string{root, inThread, reaction} {
		if r := receipt(ev, root); r.Status != 200 {
			t.Errorf("receipt on %s in its thread: %d %s", ev, r.Status, r.Raw)
		}
	}
	for name, ev := range map[string]string{"main timeline": mainMsg, "other thread's reply": otherReply, "other root": otherRoot} {
		if r := receipt(ev, root); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("receipt on the %s in thread %s: %d %s", name, root, r.Status, r.Raw)
		}
	}
	if r := receipt(inThread, ""); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Errorf("empty thread_id: %d %s", r.Status, r.Raw)
	}
}
