package syncstream

import "testing"

func TestRoomsCacheKeepsRecentTokens(t *testing.T) {
	var c roomsCache
	tok := func(n uint64) Token { return Token{Rooms: n} }
	for i := uint64(1); i <= 5; i++ {
		c.put("@a:x", tok(i), []string{"!r"}, windowBase{})
	}
	for i := uint64(1); i <= 5; i++ {
		_, ok := c.get("@a:x", tok(i))
		if want := i >= 2; ok != want { // the newest four
			t.Errorf("token %d cached: %v, want %v", i, ok, want)
		}
	}
	// Putting a known token again refreshes it without evicting others.
	c.put("@a:x", tok(3), []string{"!new"}, windowBase{})
	e, ok := c.get("@a:x", tok(3))
	if !ok || e.rooms[0] != "!new" {
		t.Errorf("re-put token: %v %v", ok, e.rooms)
	}
	for _, i := range []uint64{2, 4, 5} {
		if _, ok := c.get("@a:x", tok(i)); !ok {
			t.Errorf("token %d evicted by a re-put", i)
		}
	}
	if _, ok := c.get("@b:x", tok(5)); ok {
		t.Error("another user's token found")
	}
}
