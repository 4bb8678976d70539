package syncstream

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

type eventList struct {
	Events []json.RawMessage `json:"events"`
}

type timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// summary is the room summary; it is sent when the room's membership may
// have changed for the client (a full state, or member events in the
// response) and left empty otherwise, as the spec allows.
type summary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  *int     `json:"m.joined_member_count,omitempty"`
	Invited *int     `json:"m.invited_member_count,omitempty"`
}

func summaryOf(s store.RoomSummary, ok bool) summary {
	if !ok {
		return summary{}
	}
	return summary{Heroes: s.Heroes, Joined: &s.JoinedMembers, Invited: &s.InvitedMembers}
}

type unreadCounts struct {
	Highlight    int `json:"highlight_count"`
	Notification int `json:"notification_count"`
}

type joinedRoom struct {
	State       eventList    `json:"state"`
	Timeline    timeline     `json:"timeline"`
	Ephemeral   eventList    `json:"ephemeral"`
	AccountData eventList    `json:"account_data"`
	Summary     summary      `json:"summary"`
	Unread      unreadCounts `json:"unread_notifications"`
	// UnreadThreads (MSC3773) is set only when the filter asks for it,
	// and then only for threads with something unread.
	UnreadThreads map[string]unreadCounts `json:"unread_thread_notifications,omitempty"`
}

type invitedRoom struct {
	InviteState eventList `json:"invite_state"`
}

// knockedRoom is a room the user knocked on (room versions 7+): what they
// may see of it while they wait, as an invitee would.
type knockedRoom struct {
	KnockState eventList `json:"knock_state"`
}

type leftRoom struct {
	State       eventList `json:"state"`
	Timeline    timeline  `json:"timeline"`
	AccountData eventList `json:"account_data"`
}

type rooms struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
	Knock  map[string]*knockedRoom `json:"knock"`
}

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// response is a /sync response; every section is present, even if empty.
type response struct {
	NextBatch   string      `json:"next_batch"`
	AccountData eventList   `json:"account_data"`
	Presence    eventList   `json:"presence"`
	Rooms       rooms       `json:"rooms"`
	ToDevice    eventList   `json:"to_device"`
	DeviceLists deviceLists `json:"device_lists"`
	// The device's key counts are omitted when a response does not know
	// them (see Handler.keyCounts); a build always sets them.
	OTKCounts map[string]int `json:"device_one_time_keys_count,omitempty"`
	// A pointer, so that "none unused" ([]) is sent and "unknown" is not.
	UnusedFallbacks *[]string `json:"device_unused_fallback_key_types,omitempty"`
}

func newResponse() *response {
	empty := []json.RawMessage{}
	return &response{
		AccountData: eventList{empty}, Presence: eventList{empty}, ToDevice: eventList{empty},
		Rooms:       rooms{Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{}, Leave: map[string]*leftRoom{}, Knock: map[string]*knockedRoom{}},
		DeviceLists: deviceLists{Changed: []string{}, Left: []string{}},
	}
}

// empty reports whether the response carries nothing for the client, in
// which case a long-poll keeps waiting.
func (r *response) empty() bool {
	return len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0 && len(r.Rooms.Join) == 0 &&
		len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0 && len(r.ToDevice.Events) == 0 &&
		len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}

// request is one parsed /sync call.
type request struct {
	user, device string
	since        *Token
	fullState    bool
	filter       *filter
}

// built is an assembled response and what waiting for the next one needs.
type built struct {
	resp   *response
	pos    store.Positions
	ephPos uint64   // EPHEMERAL position the typing and presence reflect
	rooms  []string // rooms whose changes concern this user
	base   windowBase
	// ackToDevice, when non-zero, is the ACCOUNTS position through which
	// the device has received its to-device messages (its since token)
	// while some are still stored: the worker records the ack.
	ackToDevice uint64
	// toDeviceThrough is the newest to-device message in the response.
	toDeviceThrough uint64
}

// next is the token of the position a built response reflects.
func (b *built) next() Token {
	return Token{Rooms: b.pos.Rooms, Accounts: b.pos.Accounts, Receipts: b.pos.Receipts, Ephemeral: b.ephPos}
}

// roomPlan is what a response needs from one room.
type roomPlan struct {
	id         string
	membership string
	lo, hi     int64 // timeline range [lo, hi)
	fullState  bool
	// joinedNew: joined since the token of an incremental sync.
	joinedNew bool
}

// build assembles a response from one projection snapshot, with a fixed
// number of queries however many rooms the user is in.
func build(ctx context.Context, st *store.Store, eph *Ephemeral, rules *rulesCache, req *request) (*built, error) {
	out := &built{resp: newResponse()}
	err := st.SyncSnapshot(ctx, func(tx *store.SyncTx) error {
		out.pos = tx.Pos
		initial := req.since == nil
		var lo int64
		var sinceAccounts, sinceReceipts, sinceEph uint64
		if !initial {
			lo = eventlog.EventPos(req.since.Rooms+1, 0)
			sinceAccounts, sinceReceipts, sinceEph = req.since.Accounts, req.since.Receipts, req.since.Ephemeral
		}
		hi := eventlog.EventPos(tx.Pos.Rooms+1, 0)
		f := req.filter

		mems, err := tx.Memberships(ctx, req.user, lo, !initial)
		if err != nil {
			return err
		}
		// Per room: the current membership, and whether the user was
		// joined just before it began.
		current := map[string]store.UserMembership{}
		prevJoined := map[string]bool{}
		for _, m := range mems {
			if m.ToPos == 0 {
				current[m.RoomID] = m
			}
		}
		for _, m := range mems {
			if c, ok := current[m.RoomID]; ok && m.ToPos != 0 && m.ToPos == c.FromPos && m.Membership == "join" {
				prevJoined[m.RoomID] = true
			}
		}
		var plans []roomPlan
		var invites, knocks []string
		for roomID, m := range current {
			// A knocked room is not among them: its knock_state is sent
			// once, and what the knocker waits for (an invite, a kick) is
			// a member event naming them, which wakes them anyway.
			if m.Membership == "join" || m.Membership == "invite" {
				// Only these rooms' changes can concern the user; a left
				// room must not wake their long-polls.
				out.rooms = append(out.rooms, roomID)
			}
			if !f.allowsRoom(roomID) {
				continue
			}
			changedInRange := !initial && m.FromPos >= lo
			switch m.Membership {
			case "join":
				newlyJoined := changedInRange && !prevJoined[roomID]
				plans = append(plans, roomPlan{id: roomID, membership: "join", lo: lo, hi: hi,
					fullState: initial || req.fullState || newlyJoined, joinedNew: newlyJoined && !initial})
				if newlyJoined {
					plans[len(plans)-1].lo = 0
				}
			case "invite":
				if initial || changedInRange {
					invites = append(invites, roomID)
				}
			case "knock":
				if initial || changedInRange {
					knocks = append(knocks, roomID)
				}
			case "leave", "ban":
				if (changedInRange && (prevJoined[roomID] || wasMember(mems, roomID, m.FromPos))) || (initial && f.Room.IncludeLeave) || (req.fullState && f.Room.IncludeLeave) {
					from := lo
					if initial || req.fullState {
						from = 0
					}
					// The state section is the change since the token, as
					// for joined rooms, when the client already had the room
					// (joined since before the token); a room joined and
					// left within the range is new to it and gets it all.
					full := initial || req.fullState || !joinedSince(mems, roomID, m.FromPos, lo)
					plans = append(plans, roomPlan{id: roomID, membership: "leave", lo: from, hi: m.FromPos + 1, fullState: full})
				}
			}
		}
		slices.SortFunc(plans, func(a, b roomPlan) int { return compare(a.id, b.id) })
		slices.Sort(out.rooms)

		limit := f.timelineLimit()
		ranges := make([]store.RoomRange, len(plans))
		ids := make([]string, len(plans))
		for i, p := range plans {
			ranges[i] = store.RoomRange{RoomID: p.id, From: p.lo, To: p.hi}
			ids[i] = p.id
		}
		var match store.EventMatch
		if tf := f.Room.Timeline; tf != nil {
			match = store.EventMatch{Types: tf.Types, NotTypes: tf.NotTypes, Senders: tf.Senders, NotSenders: tf.NotSenders}
		}
		timelines, err := tx.Timelines(ctx, ranges, match, limit+1)
		if err != nil {
			return err
		}
		// History visibility only needs checking where the user was not
		// joined for the whole range: a user whose current join began
		// before the range was joined at every event in it.
		var checkIDs []string
		for _, p := range plans {
			if p.membership != "join" || p.fullState || current[p.id].FromPos >= p.lo {
				checkIDs = append(checkIDs, p.id)
			}
		}
		histories, err := tx.Histories(ctx, req.user, checkIDs)
		if err != nil {
			return err
		}
		now := time.Now()
		// prevVisible says whether the user may see the state event e
		// replaced (for unsigned.prev_content): by the history read for
		// the room, or, where none was read (joined throughout the
		// range), when the current join is older than that event. A room
		// with neither leaves prev_content out rather than guess.
		prevVisible := func(e *store.StoredEvent) bool {
			prev := e.Prev()
			if prev == nil {
				return false
			}
			if v, ok := histories[e.RoomID]; ok {
				return v.CanSee(prev)
			}
			c, ok := current[e.RoomID]
			return ok && c.Membership == "join" && prev.Pos >= c.FromPos
		}
		render := func(e *store.StoredEvent) json.RawMessage {
			return selectFields(e.RenderFor(req.user, req.device, "", prevVisible(e), now), f.EventFields)
		}

		type roomOut struct {
			tl       timeline
			start    int64 // the timeline's first position (its state point)
			senders  map[string]bool
			needFull bool
			limited  bool
		}
		outs := make([]roomOut, len(plans))
		var stateRanges []store.RoomRange
		for i, p := range plans {
			raw := timelines[p.id] // newest first
			ro := roomOut{tl: timeline{Events: []json.RawMessage{}}, start: p.hi, senders: map[string]bool{}, needFull: p.fullState}
			if len(raw) > limit {
				ro.limited = true
				raw = raw[:limit]
			}
			if len(raw) > 0 {
				ro.start = raw[len(raw)-1].Pos
			}
			v, check := histories[p.id]
			for j := len(raw) - 1; j >= 0; j-- {
				e := &raw[j]
				if (check && !v.CanSee(e)) || !f.Room.Timeline.Allows(e.Type, e.Sender, e.RoomID, contentFunc(e)) {
					continue
				}
				// unsigned.membership: a room whose history was not read
				// is one the user was joined to throughout the range.
				membership := "join"
				if check {
					membership = v.MembershipAt(e.Pos)
				}
				ro.tl.Events = append(ro.tl.Events, selectFields(e.RenderFor(req.user, req.device, membership, prevVisible(e), now), f.EventFields))
				ro.senders[e.Sender] = true
			}
			ro.tl.Limited = ro.limited
			ro.tl.PrevBatch = eventlog.FormatRoomPoint(ro.start)
			outs[i] = ro
			switch {
			case ro.needFull:
				stateRanges = append(stateRanges, store.RoomRange{RoomID: p.id, From: 0, To: ro.start})
			case ro.limited:
				stateRanges = append(stateRanges, store.RoomRange{RoomID: p.id, From: p.lo, To: ro.start})
			}
		}
		states, err := tx.StateAtPoints(ctx, stateRanges)
		if err != nil {
			return err
		}
		// A room joined since the token gets as its state section all the
		// state before its timeline, which the client did not have. The
		// spec's sync note: in an incremental sync that section "will
		// therefore be empty unless the timeline was limited". So such a
		// timeline that does not reach back to the room's start (cut by
		// the limit, or by the filter's types) is limited.
		for i, p := range plans {
			if p.joinedNew && len(states[p.id]) > 0 {
				outs[i].tl.Limited = true
			}
		}
		lazy := f.Room.State != nil && f.Room.State.LazyLoadMembers
		stateOf := func(i int, p roomPlan) []json.RawMessage {
			evs := []json.RawMessage{}
			for j := range states[p.id] {
				e := &states[p.id][j]
				if !f.Room.State.Allows(e.Type, e.Sender, e.RoomID, contentFunc(e)) {
					continue
				}
				if lazy && e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey != req.user && !outs[i].senders[*e.StateKey] {
					continue
				}
				evs = append(evs, render(e))
			}
			return evs
		}

		var joinedNow []string
		out.base.joined = map[string]bool{}
		for roomID, m := range current {
			if m.Membership == "join" {
				out.base.joined[roomID] = true
				if f.allowsRoom(roomID) {
					joinedNow = append(joinedNow, roomID)
				}
			}
		}
		slices.Sort(joinedNow)
		var sumIDs []string
		for i, p := range plans {
			if p.membership != "join" {
				continue
			}
			if outs[i].needFull || outs[i].limited || hasMemberEvent(timelines[p.id]) {
				sumIDs = append(sumIDs, p.id)
			}
		}
		sums, err := tx.Summaries(ctx, req.user, sumIDs)
		if err != nil {
			return err
		}
		// Lazy-loading clients need the member events of the senders they
		// see, also when the state section would otherwise be empty.
		lazyMembers := map[string][]json.RawMessage{}
		if lazy {
			var pairRooms, pairUsers []string
			for i, p := range plans {
				if outs[i].needFull || outs[i].limited {
					continue // their state section already carries them
				}
				for sender := range outs[i].senders {
					pairRooms, pairUsers = append(pairRooms, p.id), append(pairUsers, sender)
				}
			}
			members, err := tx.MemberEvents(ctx, pairRooms, pairUsers)
			if err != nil {
				return err
			}
			starts := map[string]int64{}
			for i, p := range plans {
				starts[p.id] = outs[i].start
			}
			for roomID, evs := range members {
				for j := range evs {
					out.base.learnMember(evs[j])
					if evs[j].Pos >= starts[roomID] {
						continue // in the timeline already
					}
					lazyMembers[roomID] = append(lazyMembers[roomID], render(&evs[j]))
				}
			}
		}
		if lazy {
			// Remember the member events this response gave of its
			// senders, for the window's lazy-loading responses.
			for i, p := range plans {
				if p.membership != "join" {
					continue
				}
				for _, e := range states[p.id] {
					if e.Type == "m.room.member" && e.StateKey != nil && outs[i].senders[*e.StateKey] {
						out.base.learnMember(e)
					}
				}
				raw := timelines[p.id]
				for j := len(raw) - 1; j >= 0; j-- {
					if e := raw[j]; e.Type == "m.room.member" && e.StateKey != nil {
						out.base.learnMember(e)
					}
				}
			}
		}
		for i, p := range plans {
			ro := outs[i]
			st := stateOf(i, p)
			st = append(st, lazyMembers[p.id]...)
			if p.membership == "join" {
				// An unchanged room is left out of an incremental response.
				if !p.fullState && len(ro.tl.Events) == 0 && len(st) == 0 {
					continue
				}
				s, ok := sums[p.id]
				out.resp.Rooms.Join[p.id] = &joinedRoom{
					State: eventList{st}, Timeline: ro.tl, Ephemeral: eventList{[]json.RawMessage{}},
					AccountData: eventList{[]json.RawMessage{}},
					Summary:     summaryOf(s, ok),
				}
			} else {
				out.resp.Rooms.Leave[p.id] = &leftRoom{State: eventList{st}, Timeline: ro.tl, AccountData: eventList{[]json.RawMessage{}}}
			}
		}

		slices.Sort(invites)
		slices.Sort(knocks)
		stripped, err := tx.StrippedState(ctx, req.user, append(slices.Clip(invites), knocks...))
		if err != nil {
			return err
		}
		// Invites from users the user ignores are not shown (client-server
		// API, "Ignoring users"); the list is read only when there are
		// invites to show.
		var ignored map[string]bool
		if len(invites) > 0 {
			if ignored, err = tx.IgnoredUsers(ctx, req.user); err != nil {
				return err
			}
		}
		// strippedOf is a room's stripped state; ok is false for an
		// invite sent by an ignored user.
		strippedOf := func(roomID string) (eventList, bool) {
			evs := []json.RawMessage{}
			for _, e := range stripped[roomID] {
				if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == req.user && ignored[e.Sender] {
					return eventList{}, false
				}
				evs = append(evs, strip(&e))
			}
			return eventList{evs}, true
		}
		for _, roomID := range invites {
			if st, ok := strippedOf(roomID); ok {
				out.resp.Rooms.Invite[roomID] = &invitedRoom{InviteState: st}
			}
		}
		for _, roomID := range knocks {
			st, _ := strippedOf(roomID)
			out.resp.Rooms.Knock[roomID] = &knockedRoom{KnockState: st}
		}

		// Typing and presence as of one position of the ephemeral view.
		ev := eph.snapshot(joinedNow, sinceEph, now)
		out.ephPos = ev.pos

		// Ephemeral events (receipts, typing) of the joined rooms.
		joinEntry := func(roomID string) *joinedRoom {
			if jr, ok := out.resp.Rooms.Join[roomID]; ok {
				return jr
			}
			jr := &joinedRoom{State: eventList{[]json.RawMessage{}}, Timeline: timeline{Events: []json.RawMessage{}, PrevBatch: eventlog.FormatRoomPoint(hi)},
				Ephemeral: eventList{[]json.RawMessage{}}, AccountData: eventList{[]json.RawMessage{}}}
			out.resp.Rooms.Join[roomID] = jr
			return jr
		}
		if f.Room.Ephemeral.Allows("m.receipt", "", "", nil) {
			receipts, err := tx.ReceiptsSince(ctx, req.user, joinedNow, sinceReceipts)
			if err != nil {
				return err
			}
			for roomID, content := range receiptContents(receipts) {
				if !f.Room.Ephemeral.AllowsRoom(roomID) {
					continue
				}
				ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
				jr := joinEntry(roomID)
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
			}
		}
		if f.Room.Ephemeral.Allows("m.typing", "", "", nil) {
			for roomID, users := range ev.typing {
				if !f.Room.Ephemeral.AllowsRoom(roomID) {
					continue
				}
				ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
				jr := joinEntry(roomID)
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
			}
		}
		// Presence of the users who share a room with this one.
		// Users who newly share a room with this one (they joined one of
		// its rooms, or it joined theirs) get their presence sent even if
		// it did not change: the client has not seen it.
		if !initial {
			known := map[string]bool{}
			for _, p := range ev.presence {
				known[p.UserID] = true
			}
			for i, p := range plans {
				if p.membership != "join" {
					continue
				}
				var evs []store.StoredEvent
				if outs[i].needFull {
					evs = append(evs, states[p.id]...)
				}
				evs = append(evs, timelines[p.id]...)
				for _, e := range evs {
					if e.Type != "m.room.member" || e.StateKey == nil || *e.StateKey == req.user || known[*e.StateKey] {
						continue
					}
					if !outs[i].needFull && e.Membership() != "join" {
						continue
					}
					if pr, ok := eph.presenceOf(*e.StateKey); ok {
						known[*e.StateKey] = true
						ev.presence = append(ev.presence, pr)
					}
				}
			}
		}
		if changed := ev.presence; len(changed) > 0 {
			ids := make([]string, len(changed))
			for i, p := range changed {
				ids[i] = p.UserID
			}
			audience, err := tx.SharingRooms(ctx, req.user, ids)
			if err != nil {
				return err
			}
			slices.SortFunc(changed, func(a, b eventlog.PresenceSet) int { return compare(a.UserID, b.UserID) })
			for _, p := range changed {
				if (p.UserID != req.user && !audience[p.UserID]) || !f.Presence.Allows("m.presence", p.UserID, "", nil) {
					continue
				}
				out.resp.Presence.Events = append(out.resp.Presence.Events, presenceEvent(&p, now))
			}
		}

		ad, err := tx.AccountDataSince(ctx, req.user, sinceAccounts)
		if err != nil {
			return err
		}
		if initial && !slices.ContainsFunc(ad, func(a store.AccountDataItem) bool { return a.RoomID == "" && a.Type == "m.push_rules" }) {
			// Clients read their push rules from the initial sync; until a
			// user changes them they are the defaults.
			c, _ := json.Marshal(map[string]json.RawMessage{"global": matrix.DefaultPushRules(req.user)})
			ad = append(ad, store.AccountDataItem{Type: "m.push_rules", Content: c})
		}
		for _, item := range ad {
			if item.RoomID == "" && item.Type == "m.push_rules" {
				item.Content = pushRulesContent(req.user, item.Content)
			}
			ev, _ := json.Marshal(map[string]any{"type": item.Type, "content": item.Content})
			if item.RoomID == "" {
				if f.AccountData.Allows(item.Type, "", "", nil) {
					out.resp.AccountData.Events = append(out.resp.AccountData.Events, ev)
				}
				continue
			}
			if !f.Room.AccountData.Allows(item.Type, "", item.RoomID, nil) {
				continue
			}
			if jr, ok := out.resp.Rooms.Join[item.RoomID]; ok {
				jr.AccountData.Events = append(jr.AccountData.Events, ev)
			} else if c, ok := current[item.RoomID]; ok && c.Membership == "join" && f.allowsRoom(item.RoomID) {
				jr := joinEntry(item.RoomID)
				jr.AccountData.Events = append(jr.AccountData.Events, ev)
			}
		}

		if err := buildE2EE(ctx, tx, req, out, lo, hi); err != nil {
			return err
		}

		// Unread counts for every joined room in the response.
		if err := buildUnread(ctx, tx, req, out, rules); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// presenceEvent renders a presence record as an m.presence event, as read
// at now.
func presenceEvent(p *eventlog.PresenceSet, now time.Time) json.RawMessage {
	presence, ago, active := p.Effective(now)
	c := map[string]any{"presence": presence, "last_active_ago": ago, "currently_active": active}
	if p.StatusMsg != nil {
		c["status_msg"] = *p.StatusMsg
	}
	ev, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": p.UserID, "content": c})
	return ev
}

func hasMemberEvent(evs []store.StoredEvent) bool {
	for _, e := range evs {
		if e.Type == "m.room.member" {
			return true
		}
	}
	return false
}

// receiptContents groups receipts into m.receipt contents per room:
// event ID -> receipt type -> user -> {ts, thread_id}.
func receiptContents(rs []store.Receipt) map[string]map[string]map[string]map[string]any {
	out := map[string]map[string]map[string]map[string]any{}
	for _, r := range rs {
		room := out[r.RoomID]
		if room == nil {
			room = map[string]map[string]map[string]any{}
			out[r.RoomID] = room
		}
		byType := room[r.EventID]
		if byType == nil {
			byType = map[string]map[string]any{}
			room[r.EventID] = byType
		}
		users := byType[r.Type]
		if users == nil {
			users = map[string]any{}
			byType[r.Type] = users
		}
		v := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			v["thread_id"] = r.ThreadID
		}
		users[r.UserID] = v
	}
	return out
}

// wasMember reports whether the user was joined or invited in the room
// just before position at, so that a leave is news to them.
// joinedSince reports whether the user's membership that ended at pos was
// a join that began before lo.
func joinedSince(mems []store.UserMembership, roomID string, at, lo int64) bool {
	for _, m := range mems {
		if m.RoomID == roomID && m.ToPos == at && m.Membership == "join" && m.FromPos < lo {
			return true
		}
	}
	return false
}

func wasMember(mems []store.UserMembership, roomID string, at int64) bool {
	for _, m := range mems {
		if m.RoomID == roomID && m.ToPos == at && (m.Membership == "join" || m.Membership == "invite" || m.Membership == "knock") {
			return true
		}
	}
	return false
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func contentFunc(e *store.StoredEvent) func() json.RawMessage {
	return func() json.RawMessage {
		var c struct {
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(e.Client, &c)
		return c.Content
	}
}

// strip renders the stripped state event an invitee sees.
func strip(e *store.StoredEvent) json.RawMessage {
	var full struct {
		Content  json.RawMessage `json:"content"`
		Sender   string          `json:"sender"`
		StateKey *string         `json:"state_key"`
		Type     string          `json:"type"`
	}
	_ = json.Unmarshal(e.Client, &full)
	b, _ := json.Marshal(full)
	return b
}

// buildE2EE fills in what end-to-end encryption needs: the device's
// pending to-device messages and key counts, and (incrementally) whose
// device lists changed: users whose keys changed and who share a room
// with the user, users who joined one of the user's rooms, and users who
// no longer share any room with them. lo and hi are the rooms range.
func buildE2EE(ctx context.Context, tx *store.SyncTx, req *request, out *built, lo, hi int64) error {
	msgs, err := tx.PendingToDevice(ctx, req.user, req.device, out.pos.Accounts)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if req.since != nil && m.Pos <= req.since.Accounts {
			// Sent in a response the client has acknowledged by
			// syncing from its token: delivered, to be dropped.
			out.ackToDevice = req.since.Accounts
			continue
		}
		ev, _ := json.Marshal(map[string]any{"type": m.Type, "sender": m.Sender, "content": m.Content})
		out.resp.ToDevice.Events = append(out.resp.ToDevice.Events, ev)
		out.toDeviceThrough = m.Pos
	}
	counts, unused, err := tx.DeviceKeyCounts(ctx, req.user, req.device)
	if err != nil {
		return err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		// Present even when zero: clients read "absent" as "unknown"
		// and would not top their keys up.
		counts["signed_curve25519"] = 0
	}
	out.resp.OTKCounts = counts
	out.resp.UnusedFallbacks = &unused
	if req.since == nil {
		return nil
	}
	changed, err := tx.DeviceListChanges(ctx, req.user, req.since.Accounts, out.pos.Accounts)
	if err != nil {
		return err
	}
	joined, departed, err := tx.MembershipMoves(ctx, req.user, lo, hi)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	for _, u := range append(changed, joined...) {
		set[u] = true
	}
	var left []string
	if len(departed) > 0 {
		sharing, err := tx.SharingRooms(ctx, req.user, departed)
		if err != nil {
			return err
		}
		for _, u := range departed {
			if !sharing[u] && !set[u] {
				left = append(left, u)
			}
		}
	}
	for u := range set {
		out.resp.DeviceLists.Changed = append(out.resp.DeviceLists.Changed, u)
	}
	slices.Sort(out.resp.DeviceLists.Changed)
	slices.Sort(left)
	out.resp.DeviceLists.Left = append(out.resp.DeviceLists.Left, slices.Compact(left)...)
	return nil
}
