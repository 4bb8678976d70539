package api_test

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"

	"strand/api/apitest"
)

// A message may mention any string in m.mentions.user_ids (its content is
// the client's), but only user IDs are projected: the events_mentions GIN
// index refuses an entry past about 2,700 bytes, and a message whose
// record the projector could not apply would be lost from the room.
func TestOverlongMentionIsProjected(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("mona", "pw")
	room := a.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	// Random, so that PostgreSQL cannot compress it under the bound.
	b := make([]byte, 2000)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	long := "@" + hex.EncodeToString(b) + ":localhost"
	id := a.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message", map[string]any{
		"msgtype": "m.text", "body": "hi", "m.mentions": map[string]any{"user_ids": []string{long, "@mona:localhost"}}}).Str("event_id")
	after := a.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message", map[string]any{
		"msgtype": "m.text", "body": "after"}).Str("event_id")
	// The later event is projected, so the earlier one has been applied
	// or set aside by now.
	a.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(after), nil)
	if r := a.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(id), nil); r.Status != 200 {
		t.Fatalf("the message with an over-long mention is not in the room: %d %s", r.Status, r.Raw)
	}
}
