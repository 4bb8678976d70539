package api_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/eventlog/matrix"
)

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// maxFilteredRequestCPU is the CPU time (of this whole test process,
// server included, under the race detector) one request with a filter at
// the bounds may take. Before the bounds and the compiled matching, a
// filter of 60,000 patterns took 12.6 s of CPU in one /sync.
const maxFilteredRequestCPU = 2 * time.Second

// A filter beyond the bounds is refused (stored or inline); one at the
// bounds, with every pattern a wildcard, keeps /sync and /messages within
// maxFilteredRequestCPU.
func TestFilterBoundsAndCost(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	c.Register("filterer", "pw")
	room := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	for i := range 300 {
		c.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/org.example.kind%d/t%d", room, i%5, i), map[string]any{"n": i})
	}

	globs := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("org.example.nomatch%d.*.x*y", i)
		}
		return out
	}
	ids := func(n int, sigil string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%sn%d:localhost", sigil, i)
		}
		return out
	}
	tooMany := map[string]any{"room": map[string]any{"timeline": map[string]any{"not_types": globs(matrix.MaxFilterTypes + 1)}}}
	if r := c.Do("POST", "/_matrix/client/v3/user/"+c.UserID+"/filter", tooMany); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Fatalf("stored filter beyond the bounds: %d %s", r.Status, r.Raw)
	}
	inline := `{"not_types":["` + strings.Join(globs(matrix.MaxFilterTypes+1), `","`) + `"]}`
	if r := c.Do("GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&filter="+url.QueryEscape(inline), nil); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Fatalf("inline /messages filter beyond the bounds: %d %s", r.Status, r.Raw)
	}
	inlineSync := `{"room":{"timeline":` + inline + `}}`
	if r := c.Do("GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(inlineSync), nil); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Fatalf("inline /sync filter beyond the bounds: %d %s", r.Status, r.Raw)
	}

	timeline := map[string]any{"limit": 1000, "not_types": globs(matrix.MaxFilterTypes), "not_senders": ids(matrix.MaxFilterIDs, "@")}
	atBounds := map[string]any{"room": map[string]any{"timeline": timeline, "state": timeline, "not_rooms": ids(matrix.MaxFilterIDs, "!")}}
	id := c.MustDo("POST", "/_matrix/client/v3/user/"+c.UserID+"/filter", atBounds).Str("filter_id")
	start := cpuTime(t)
	r := c.MustDo("GET", "/_matrix/client/v3/sync?filter="+id, nil)
	took := cpuTime(t) - start
	t.Logf("/sync with a filter at the bounds: %s of CPU", took)
	if took > maxFilteredRequestCPU {
		t.Errorf("/sync with a filter at the bounds took %s of CPU", took)
	}
	if !strings.Contains(string(r.Raw), "org.example.kind4") {
		t.Fatal("the filtered sync lost events it should hold")
	}

	ev := map[string]any{"not_types": globs(matrix.MaxFilterTypes), "not_senders": ids(matrix.MaxFilterIDs, "@")}
	q := url.QueryEscape(string(mustJSON(t, ev)))
	start = cpuTime(t)
	m := c.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=1000&filter="+q, nil)
	took = cpuTime(t) - start
	t.Logf("/messages with a filter at the bounds: %s of CPU", took)
	if took > maxFilteredRequestCPU {
		t.Errorf("/messages with a filter at the bounds took %s of CPU", took)
	}
	if chunk, _ := m.Body["chunk"].([]any); len(chunk) < 300 {
		t.Fatalf("/messages returned %d events, want all 300 messages and the room's state", len(chunk))
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
