package matrix

import "testing"

// An EventCache parses an event once, and holds at most Max of them.
func TestEventCache(t *testing.T) {
	r := newTestRoom(t, DefaultRoomVersion, nil)
	a, b := r.build(r.msg(bob)), r.build(r.msg(bob))
	c := EventCache{Max: 1}
	first, err := c.Parse(DefaultRoomVersion, "a", a.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Parse(DefaultRoomVersion, "a", a.JSON()); again != first {
		t.Error("the same event ID was parsed again")
	}
	if _, err := c.Parse(DefaultRoomVersion, "b", b.JSON()); err != nil {
		t.Fatal(err)
	}
	if n := len(c.m); n != 1 {
		t.Errorf("cache of Max 1 holds %d events", n)
	}
	if _, err := c.Parse(DefaultRoomVersion, "bad", []byte(`{`)); err == nil {
		t.Error("a PDU that does not parse was accepted")
	}
}
