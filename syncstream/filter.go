package syncstream

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// filter is the spec's sync Filter, with the helpers sync needs.
type filter struct{ matrix.Filter }

// defaultTimelineLimit is the timeline length when the filter sets none.
const defaultTimelineLimit = 10

// maxTimelineLimit bounds what a filter may ask for per room.
const maxTimelineLimit = 1000

func (f *filter) timelineLimit() int {
	if f.Room.Timeline != nil && f.Room.Timeline.Limit != nil {
		return min(*f.Room.Timeline.Limit, maxTimelineLimit)
	}
	return defaultTimelineLimit
}

func (f *filter) allowsRoom(roomID string) bool { return f.Room.AllowsRoom(roomID) }

// filterCache keeps parsed filters for loadFilter. Entries never go
// stale: a stored filter never changes (its ID is random and the first
// write wins), and an inline one is its own key. Most clients sync with a
// filter ID, so without it every /sync would pay a query and a parse.
// Cached filters are shared between requests and must not be modified.
type filterCache struct {
	mu sync.RWMutex
	m  map[string]*filter
}

const filterCacheMax = 20000

func (c *filterCache) load(ctx context.Context, st *store.Store, userID, param string) (*filter, error) {
	key := userID + "\x00" + param
	c.mu.RLock()
	f, ok := c.m[key]
	c.mu.RUnlock()
	if ok {
		return f, nil
	}
	f, err := loadFilter(ctx, st, userID, param)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= filterCacheMax {
		c.m = map[string]*filter{}
	}
	c.m[key] = f
	c.mu.Unlock()
	return f, nil
}

// loadFilter resolves the filter query parameter: inline JSON (the
// classic guide's form) or the ID of a stored filter.
func loadFilter(ctx context.Context, st *store.Store, userID, param string) (*filter, error) {
	f := &filter{}
	if param == "" {
		return f, nil
	}
	raw := []byte(param)
	if param[0] == '{' && !json.Valid(raw) && !strings.Contains(param, `"`) {
		// The classic guide writes inline filters with single quotes
		// ({'room':{'timeline':{'limit':1}}}); read those as JSON.
		raw = []byte(strings.ReplaceAll(param, "'", `"`))
	}
	if param[0] != '{' {
		stored, err := st.Filter(ctx, userID, param)
		if errors.Is(err, store.ErrNotFound) {
			return nil, matrix.InvalidParam("no filter with ID %q", param)
		}
		if err != nil {
			return nil, err
		}
		raw = stored
	}
	parsed, err := matrix.ParseFilter(raw)
	if err == nil && param[0] == '{' {
		// Stored filters were checked when uploaded (or predate the
		// check and keep working); an inline one is checked here.
		err = parsed.CheckIDs()
	}
	if err != nil {
		me, _ := matrix.AsError(err)
		return nil, matrix.InvalidParam("%s", me.Msg)
	}
	f.Filter = *parsed
	return f, nil
}
