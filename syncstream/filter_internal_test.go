package syncstream

import (
	"context"
	"testing"

	"strand/projector/store/storetest"
)

// Stored filters are read once and then served from memory; a missing
// one is not remembered as missing (it may be a projection behind).
func TestFilterCache(t *testing.T) {
	ctx := context.Background()
	st, _ := storetest.Open(t)
	var c filterCache
	if _, err := c.load(ctx, st, "@a:x", "77"); err == nil {
		t.Fatal("unknown filter ID loaded")
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO filters (user_id, filter_id, filter) VALUES ('@a:x', '77', '{"room":{"timeline":{"limit":3}}}')`); err != nil {
		t.Fatal(err)
	}
	f, err := c.load(ctx, st, "@a:x", "77")
	if err != nil || f.timelineLimit() != 3 {
		t.Fatalf("stored filter: %v %v", f, err)
	}
	if _, err := st.Pool().Exec(ctx, `DELETE FROM filters`); err != nil {
		t.Fatal(err)
	}
	if f, err := c.load(ctx, st, "@a:x", "77"); err != nil || f.timelineLimit() != 3 {
		t.Fatalf("cached filter: %v %v", f, err)
	}
	if _, err := c.load(ctx, st, "@b:x", "77"); err == nil {
		t.Fatal("another user's filter ID resolved from the cache")
	}
	if f, err := c.load(ctx, st, "@b:x", `{'room':{'timeline':{'limit':1}}}`); err != nil || f.timelineLimit() != 1 {
		t.Fatalf("inline filter: %v %v", f, err)
	}
}
