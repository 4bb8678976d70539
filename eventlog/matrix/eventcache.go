package matrix

import "sync"

// EventCache keeps parsed events by event ID, so that the same state
// events (create, power levels, join rules) are not parsed and hashed
// again on every write or count that reads them. Events never change
// under their ID, so entries never go stale; when Max entries are held the
// cache starts again empty. The zero value holds DefaultEventCacheMax.
type EventCache struct {
	Max int

	mu sync.Mutex
	m  map[string]*Event
}

// DefaultEventCacheMax is the size of an EventCache whose Max is 0.
const DefaultEventCacheMax = 8192

// Parse returns the event eventID of pdu, parsed under room version v.
func (c *EventCache) Parse(v RoomVersion, eventID string, pdu []byte) (*Event, error) {
	c.mu.Lock()
	ev, ok := c.m[eventID]
	c.mu.Unlock()
	if ok {
		return ev, nil
	}
	ev, err := ParseEvent(v, pdu)
	if err != nil {
		return nil, err
	}
	limit := c.Max
	if limit <= 0 {
		limit = DefaultEventCacheMax
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= limit {
		c.m = make(map[string]*Event)
	}
	c.m[eventID] = ev
	c.mu.Unlock()
	return ev, nil
}
