package matrix

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func filterJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func list(n int, f func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// Filters beyond the bounds are refused with M_INVALID_PARAM, in every
// list of a sync filter and of an event filter; filters at the bounds are
// accepted.
func TestFilterBounds(t *testing.T) {
	types := func(n int) []string {
		return list(n, func(i int) string { return fmt.Sprintf("org.example.t%d.*", i) })
	}
	ids := func(n int) []string { return list(n, func(i int) string { return fmt.Sprintf("@u%d:example.org", i) }) }
	long := strings.Repeat("a", MaxFilterEntryLen+1)
	refused := []any{
		map[string]any{"room": map[string]any{"timeline": map[string]any{"not_types": types(MaxFilterTypes + 1)}}},
		map[string]any{"room": map[string]any{"state": map[string]any{"types": types(MaxFilterTypes + 1)}}},
		map[string]any{"presence": map[string]any{"not_senders": ids(MaxFilterIDs + 1)}},
		map[string]any{"room": map[string]any{"rooms": ids(MaxFilterIDs + 1)}},
		map[string]any{"room": map[string]any{"not_rooms": []string{long}}},
		map[string]any{"account_data": map[string]any{"types": []string{long}}},
		map[string]any{"event_fields": types(MaxFilterTypes + 1)},
	}
	for i, f := range refused {
		_, err := ParseFilter(filterJSON(t, f))
		if me, ok := AsError(err); !ok || me.Code != "M_INVALID_PARAM" || me.Status != 400 {
			t.Errorf("filter %d: %v, want 400 M_INVALID_PARAM", i, err)
		}
	}
	if _, err := ParseEventFilter(filterJSON(t, map[string]any{"senders": ids(MaxFilterIDs + 1)})); err == nil {
		t.Error("event filter with too many senders accepted")
	}
	atLimit := map[string]any{"room": map[string]any{
		"rooms": ids(MaxFilterIDs), "not_rooms": ids(MaxFilterIDs),
		"timeline": map[string]any{"types": types(MaxFilterTypes), "not_types": types(MaxFilterTypes),
			"senders": ids(MaxFilterIDs), "not_senders": ids(MaxFilterIDs)},
	}}
	if _, err := ParseFilter(filterJSON(t, atLimit)); err != nil {
		t.Fatalf("filter at the bounds: %v", err)
	}
}

// A parsed (compiled) filter decides exactly as the same filter matched
// through its lists.
func TestCompiledFilterMatchesLists(t *testing.T) {
	raw := filterJSON(t, map[string]any{
		"types": []string{"m.room.*", "org.example.exact", "*.end", "a*b*c"}, "not_types": []string{"m.room.member", "x.*.y"},
		"senders": []string{"@a:x", "@b:x"}, "not_senders": []string{"@b:x"},
		"rooms": []string{"!r1:x", "!r2:x"}, "not_rooms": []string{"!r2:x"},
	})
	compiled, err := ParseEventFilter(raw)
	if err != nil {
		t.Fatal(err)
	}
	var plain EventFilter
	if err := json.Unmarshal(raw, &plain); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"m.room.message", "m.room.member", "org.example.exact", "org.example.exactly", "foo.end", "abxc", "ac", "x.1.y", "x.y", ""} {
		for _, sender := range []string{"@a:x", "@b:x", "@c:x"} {
			for _, room := range []string{"!r1:x", "!r2:x", "!r3:x"} {
				for range 2 { // the second time from the memo
					if a, b := compiled.Allows(typ, sender, room, nil), plain.Allows(typ, sender, room, nil); a != b {
						t.Fatalf("%s %s %s: compiled %v, lists %v", typ, sender, room, a, b)
					}
				}
			}
		}
	}
	sync, err := ParseFilter(filterJSON(t, map[string]any{"room": map[string]any{"rooms": []string{"!a:x"}, "not_rooms": []string{"!b:x"}}}))
	if err != nil {
		t.Fatal(err)
	}
	for room, want := range map[string]bool{"!a:x": true, "!b:x": false, "!c:x": false} {
		if got := sync.Room.AllowsRoom(room); got != want {
			t.Errorf("room filter %s: %v", room, got)
		}
	}
}
