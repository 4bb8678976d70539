package syncstream

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// The window: a worker keeps the room events of the newest records it read
// from the log (in the notifier's ring of recent changes), so that a
// long-poll woken by ordinary messages is answered from memory instead of
// by a build from the projection. Only the common case goes this way: new
// non-state events in rooms the user has been joined to since its token,
// with nothing else concerning the user (no receipts, typing, account
// data, membership) and no timeline gap. Everything else is a build, which
// stays the reference; the window gives the same response the build would.

// windowEvent is a room event as this worker read it from the log.
type windowEvent struct {
	store.StoredEvent
	mentions []string // m.mentions.user_ids, as the projection's column
	// thread is the root of the thread the event is in by its own
	// m.thread relation; related is set for any other relation (its
	// thread is then its parent's, unknown here).
	thread  string
	related bool
	push    *lazyPushEvent // decoded for push rules on first use
}

// windowEvents parses a room record read live from the log.
func windowEvents(seq uint64, r *eventlog.RoomEvents) ([]windowEvent, error) {
	v := matrix.RoomVersion(r.RoomVersion)
	out := make([]windowEvent, 0, len(r.Events))
	for i, raw := range r.Events {
		ev, err := matrix.ParseEvent(v, raw)
		if err != nil {
			return nil, err
		}
		we := windowEvent{StoredEvent: store.StoredEvent{
			Pos: eventlog.EventPos(seq, i), EventID: string(ev.ID()), RoomID: string(ev.RoomID()), Type: ev.Type(),
			StateKey: ev.StateKey(), Sender: string(ev.Sender()), OriginServerTS: ev.OriginServerTS(),
			Client: matrix.ClientEvent(ev),
		}}
		// The same rule as the projector's transaction IDs.
		if len(r.Events) == 1 && r.TxnID != "" && r.Sender == we.Sender {
			we.TxnDevice, we.TxnID = r.DeviceID, r.TxnID
		}
		we.mentions = matrix.Mentions(ev)
		if parent, rel, ok := matrix.Relation(ev); ok {
			if rel == "m.thread" {
				we.thread = string(parent)
			} else {
				we.related = true
			}
		}
		we.push = &lazyPushEvent{}
		out = append(out, we)
	}
	return out, nil
}

// windowBase is what a worker remembers of the last response it gave a
// user, which the window extends.
type windowBase struct {
	joined map[string]bool // rooms the user is joined to, whatever the filter
	// unread is the counting state as of the token of the rooms known
	// (unread.go), rules the push rules it was counted with. Shared
	// between bases: never modified, only replaced.
	unread map[string]*store.UnreadRoom
	rules  *matrix.PushRuleset
	// members collects, during a build only, the current member events
	// (room, then user) it read; they then go to the worker's shared
	// memberCache, which lazy-loading window responses read (those carry
	// the member events of the timeline's senders).
	members map[string]map[string]store.StoredEvent
}

// learnMember remembers a member event, unless a newer one is known.
func (b *windowBase) learnMember(e store.StoredEvent) {
	if e.StateKey == nil {
		return
	}
	if b.members == nil {
		b.members = map[string]map[string]store.StoredEvent{}
	}
	room := b.members[e.RoomID]
	if room == nil {
		room = map[string]store.StoredEvent{}
		b.members[e.RoomID] = room
	}
	if cur, ok := room[*e.StateKey]; !ok || cur.Pos < e.Pos {
		room[*e.StateKey] = e
	}
}

// memberLookup gives a room member's current member event as of the
// window response's position, if the worker holds it.
type memberLookup func(roomID, user string) (store.StoredEvent, bool)

// fromWindow answers an incremental sync from the changes after since, all
// of which concern the user, if they are within the window's case. It
// returns the response, its token and the base for the next one.
func fromWindow(req *request, base windowBase, changes []change, h heads, eph *Ephemeral, members memberLookup, now time.Time) (*response, Token, windowBase, bool) {
	f := req.filter
	lazy := f.Room.State != nil && f.Room.State.LazyLoadMembers
	byRoom := map[string][]*windowEvent{}
	// Presence and typing changes are answered from the changes and the
	// ephemeral view: a room's members going online or typing would
	// otherwise make every member's long-poll a build.
	presence := map[string]*eventlog.PresenceSet{}
	typing := map[string]bool{}
	for i := range changes {
		c := &changes[i]
		switch {
		case c.stream == eventlog.StreamRooms && c.events != nil:
		case c.stream == eventlog.StreamEphemeral && c.presence != nil:
			presence[c.presence.UserID] = c.presence // changes are oldest first
			continue
		case c.stream == eventlog.StreamEphemeral && c.typing && len(c.rooms) == 1 && base.joined[c.rooms[0]]:
			typing[c.rooms[0]] = true
			continue
		default:
			return nil, Token{}, windowBase{}, false
		}
		for j := range c.events {
			e := &c.events[j]
			if !base.joined[e.RoomID] || e.StateKey != nil || e.Type == matrix.TypeRedaction {
				return nil, Token{}, windowBase{}, false
			}
			byRoom[e.RoomID] = append(byRoom[e.RoomID], e)
		}
	}
	next := Token{Rooms: h.rooms, Accounts: req.since.Accounts, Receipts: req.since.Receipts, Ephemeral: req.since.Ephemeral}
	if len(presence) > 0 || len(typing) > 0 {
		// Every EPHEMERAL change up to the head that concerns the user is
		// among the changes (Since read them together).
		next.Ephemeral = max(next.Ephemeral, h.ephemeral)
	}
	resp := newResponse()
	nb := windowBase{joined: base.joined, unread: make(map[string]*store.UnreadRoom, len(base.unread)), rules: base.rules}
	for k, v := range base.unread {
		nb.unread[k] = v
	}
	limit := f.timelineLimit()
	rooms := make([]string, 0, len(byRoom))
	for r := range byRoom {
		rooms = append(rooms, r)
	}
	slices.Sort(rooms)
	missing := false // a sender's member event (lazy loading)
	for _, roomID := range rooms {
		evs := byRoom[roomID]
		u, known := nb.unread[roomID]
		if !f.allowsRoom(roomID) {
			// Never shown to this filter; its counts are no longer known.
			delete(nb.unread, roomID)
			continue
		}
		if !known {
			return nil, Token{}, windowBase{}, false
		}
		u, ok := windowUnread(base.rules, u, evs)
		if !ok {
			return nil, Token{}, windowBase{}, false
		}
		tl := timeline{Events: []json.RawMessage{}}
		start := int64(0)
		var senders []string
		for _, e := range evs {
			if !f.Room.Timeline.Allows(e.Type, e.Sender, e.RoomID, contentFunc(&e.StoredEvent)) {
				continue
			}
			if len(tl.Events) == limit {
				// A gap: the build gives the state at its start.
				return nil, Token{}, windowBase{}, false
			}
			if start == 0 {
				start = e.Pos
			}
			if !slices.Contains(senders, e.Sender) {
				senders = append(senders, e.Sender)
			}
			// The window only serves rooms the user was joined to for
			// the whole range, so their membership at each event is join;
			// it holds no state events, so there is no prev_content.
			tl.Events = append(tl.Events, selectFields(e.RenderFor(req.user, req.device, "join", false, now), f.EventFields))
		}
		nb.unread[roomID] = u
		if len(tl.Events) == 0 {
			continue
		}
		tl.PrevBatch = eventlog.FormatRoomPoint(start)
		state := []json.RawMessage{}
		if lazy {
			// The senders' member events, oldest first, as the build
			// gives them.
			var mems []store.StoredEvent
			for _, sender := range senders {
				m, ok := members(roomID, sender)
				if !ok {
					// Go on asking, so the caller learns every miss
					// at once; the answer is no all the same.
					missing = true
					continue
				}
				mems = append(mems, m)
			}
			slices.SortFunc(mems, func(a, b store.StoredEvent) int { return cmp.Compare(a.Pos, b.Pos) })
			for i := range mems {
				state = append(state, selectFields(mems[i].Render(req.user, req.device, now), f.EventFields))
			}
		}
		jr := &joinedRoom{
			State: eventList{state}, Timeline: tl, Ephemeral: eventList{[]json.RawMessage{}},
			AccountData: eventList{[]json.RawMessage{}},
		}
		jr.Unread, jr.UnreadThreads = countsOf(u.Counts, f.threadCounts())
		resp.Rooms.Join[roomID] = jr
	}
	if missing {
		return nil, Token{}, windowBase{}, false
	}
	if !windowTyping(req, resp, nb, typing, eph, next, now) {
		return nil, Token{}, windowBase{}, false
	}
	windowPresence(req, resp, presence, now)
	return resp, next, nb, true
}

// windowTyping adds who is typing now in the rooms whose typing changed,
// as the build does; false if a room's counts are not known to the window.
func windowTyping(req *request, resp *response, base windowBase, rooms map[string]bool, eph *Ephemeral, next Token, now time.Time) bool {
	f := req.filter
	if len(rooms) == 0 || !f.Room.Ephemeral.Allows("m.typing", "", "", nil) {
		return true
	}
	for _, roomID := range slices.Sorted(maps.Keys(rooms)) {
		if !f.Room.Ephemeral.AllowsRoom(roomID) {
			continue
		}
		jr, ok := resp.Rooms.Join[roomID]
		if !ok {
			u, known := base.unread[roomID]
			if !known {
				return false
			}
			jr = &joinedRoom{State: eventList{[]json.RawMessage{}}, Timeline: timeline{Events: []json.RawMessage{}, PrevBatch: eventlog.FormatRoomPoint(eventlog.EventPos(next.Rooms+1, 0))},
				Ephemeral: eventList{[]json.RawMessage{}}, AccountData: eventList{[]json.RawMessage{}}}
			jr.Unread, jr.UnreadThreads = countsOf(u.Counts, f.threadCounts())
			resp.Rooms.Join[roomID] = jr
		}
		ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": eph.typingNow(roomID, now)}})
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
	}
	return true
}

// windowPresence adds the presence changes: each concerned the user (it is
// theirs, or its user shared a room with them when it was read).
func windowPresence(req *request, resp *response, changed map[string]*eventlog.PresenceSet, now time.Time) {
	for _, userID := range slices.SortedFunc(maps.Keys(changed), compare) {
		if !req.filter.Presence.Allows("m.presence", userID, "", nil) {
			continue
		}
		resp.Presence.Events = append(resp.Presence.Events, presenceEvent(changed[userID], now))
	}
}
