package syncstream

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

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

func (f *filter) allowsRoom(roomID string) bool {
	for _, r := range f.Room.NotRooms {
		if r == roomID {
			return false
		}
	}
	if f.Room.Rooms == nil {
		return true
	}
	for _, r := range f.Room.Rooms {
		if r == roomID {
			return true
		}
	}
	return false
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
	if err != nil {
		me, _ := matrix.AsError(err)
		return nil, matrix.InvalidParam("%s", me.Msg)
	}
	f.Filter = *parsed
	return f, nil
}
