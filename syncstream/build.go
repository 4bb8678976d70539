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
// number of queries however many rooms the user is in. Each phase fills
// one section of the response (or what later ones read), in this order,
// all inside the one snapshot.
//
// through is a ROOMS position known to be applied (every record at or
// below it) before the build began; the response shows ROOMS as of it, or
// of a later such position the snapshot holds.
func build(ctx context.Context, st *store.Store, eph *Ephemeral, rules *rulesCache, members *memberCache, req *request, through uint64) (*built, error) {
	out := &built{resp: newResponse()}
	err := st.SyncSnapshotThrough(ctx, through, func(tx *store.SyncTx) error {
		b := newBuilder(req, out, tx.Pos, eph)
		if err := b.memberships(ctx, tx); err != nil {
			return err
		}
		if err := b.timelines(ctx, tx); err != nil {
			return err
		}
		if err := b.state(ctx, tx); err != nil {
			return err
		}
		if err := b.summaries(ctx, tx); err != nil {
			return err
		}
		if err := b.lazyMembers(ctx, tx); err != nil {
			return err
		}
		b.roomSections()
		if err := b.invitesAndKnocks(ctx, tx); err != nil {
			return err
		}
		if err := b.ephemeral(ctx, tx); err != nil {
			return err
		}
		if err := b.presence(ctx, tx); err != nil {
			return err
		}
		if err := b.accountData(ctx, tx); err != nil {
			return err
		}
		if err := buildE2EE(ctx, tx, req, out, b.lo, b.hi); err != nil {
			return err
		}
		// Unread counts for every joined room in the response.
		return buildUnread(ctx, tx, req, out, rules)
	})
	if err != nil {
		return nil, err
	}
	// The member events read go to the worker's shared memory of them,
	// not the user's base: every member of a room would hold a copy.
	members.learn(out.pos.Rooms, out.base.members)
	out.base.members = nil
	return out, nil
}

// builder is one build under way: the request, and what each phase worked
// out for the phases after it.
type builder struct {
	req *request
	f   *filter
	out *built
	eph *Ephemeral
	now time.Time

	initial bool
	// lo and hi are the rooms range of the response, [lo, hi): lo is 0
	// for an initial sync.
	lo, hi                                 int64
	sinceAccounts, sinceReceipts, sinceEph uint64

	// Set by memberships: the user's memberships that matter to the
	// range; per room the current one, and whether the user was joined
	// just before it began; the rooms the response covers.
	mems            []store.UserMembership
	current         map[string]store.UserMembership
	prevJoined      map[string]bool
	plans           []roomPlan // joined and left rooms, by ID
	invites, knocks []string
	joinedNow       []string // joined rooms the filter allows, sorted

	// Set by timelines: each planned room's events in range (newest
	// first), the user's history in the rooms where visibility needs
	// checking, and each plan's timeline section.
	raw       map[string][]store.StoredEvent
	histories map[string]*store.Visibility
	outs      []roomOut

	// Set by state, summaries and lazyMembers.
	states    map[string][]store.StoredEvent
	sums      map[string]store.RoomSummary
	lazy      bool                         // the filter lazy-loads members (set by newBuilder)
	lazyState map[string][]json.RawMessage // per room, the senders' member events the state lacks

	// view is typing and presence as of one position of the ephemeral
	// view (set by ephemeral; presence adds to it).
	view view
}

// roomOut is a planned room's timeline section and what the other
// sections need to know of it.
type roomOut struct {
	tl       timeline
	start    int64 // the timeline's first position (its state point)
	senders  map[string]bool
	needFull bool
	limited  bool
}

// newBuilder starts a build of req at the snapshot's positions pos.
func newBuilder(req *request, out *built, pos store.Positions, eph *Ephemeral) *builder {
	out.pos = pos
	b := &builder{req: req, f: req.filter, out: out, eph: eph, initial: req.since == nil}
	if !b.initial {
		b.lo = eventlog.EventPos(req.since.Rooms+1, 0)
		b.sinceAccounts, b.sinceReceipts, b.sinceEph = req.since.Accounts, req.since.Receipts, req.since.Ephemeral
	}
	b.hi = eventlog.EventPos(pos.Rooms+1, 0)
	b.lazy = b.f.Room.State != nil && b.f.Room.State.LazyLoadMembers
	return b
}

// memberships reads the user's memberships and plans the rooms of the
// response: joined and left rooms (with their ranges), invites and knocks,
// and the rooms whose changes concern the user.
func (b *builder) memberships(ctx context.Context, tx *store.SyncTx) error {
	req, f, lo, hi, initial := b.req, b.f, b.lo, b.hi, b.initial
	mems, err := tx.Memberships(ctx, req.user, lo, !initial)
	if err != nil {
		return err
	}
	b.mems = mems
	b.current = map[string]store.UserMembership{}
	b.prevJoined = map[string]bool{}
	for _, m := range mems {
		if m.ToPos == 0 {
			b.current[m.RoomID] = m
		}
	}
	for _, m := range mems {
		if c, ok := b.current[m.RoomID]; ok && m.ToPos != 0 && m.ToPos == c.FromPos && m.Membership == "join" {
			b.prevJoined[m.RoomID] = true
		}
	}
	for roomID, m := range b.current {
		// A knocked room is not among them: its knock_state is sent
		// once, and what the knocker waits for (an invite, a kick) is
		// a member event naming them, which wakes them anyway.
		if m.Membership == "join" || m.Membership == "invite" {
			// Only these rooms' changes can concern the user; a left
			// room must not wake their long-polls.
			b.out.rooms = append(b.out.rooms, roomID)
		}
		if !f.allowsRoom(roomID) {
			continue
		}
		changedInRange := !initial && m.FromPos >= lo
		switch m.Membership {
		case "join":
			newlyJoined := changedInRange && !b.prevJoined[roomID]
			b.plans = append(b.plans, roomPlan{id: roomID, membership: "join", lo: lo, hi: hi,
				fullState: initial || req.fullState || newlyJoined, joinedNew: newlyJoined && !initial})
			if newlyJoined {
				b.plans[len(b.plans)-1].lo = 0
			}
		case "invite":
			if initial || changedInRange {
				b.invites = append(b.invites, roomID)
			}
		case "knock":
			if initial || changedInRange {
				b.knocks = append(b.knocks, roomID)
			}
		case "leave", "ban":
			if (changedInRange && (b.prevJoined[roomID] || wasMember(mems, roomID, m.FromPos))) || (initial && f.Room.IncludeLeave) || (req.fullState && f.Room.IncludeLeave) {
				from := lo
				if initial || req.fullState {
					from = 0
				}
				// The state section is the change since the token, as
				// for joined rooms, when the client already had the room
				// (joined since before the token); a room joined and
				// left within the range is new to it and gets it all.
				full := initial || req.fullState || !joinedSince(mems, roomID, m.FromPos, lo)
				b.plans = append(b.plans, roomPlan{id: roomID, membership: "leave", lo: from, hi: m.FromPos + 1, fullState: full})
			}
		}
	}
	slices.SortFunc(b.plans, func(a, b roomPlan) int { return compare(a.id, b.id) })
	slices.Sort(b.out.rooms)

	b.out.base.joined = map[string]bool{}
	for roomID, m := range b.current {
		if m.Membership == "join" {
			b.out.base.joined[roomID] = true
			if f.allowsRoom(roomID) {
				b.joinedNow = append(b.joinedNow, roomID)
			}
		}
	}
	slices.Sort(b.joinedNow)
	return nil
}

// timelines reads the planned rooms' events and the history visibility
// they need, and makes each room's timeline section.
func (b *builder) timelines(ctx context.Context, tx *store.SyncTx) error {
	f := b.f
	ranges := make([]store.RoomRange, len(b.plans))
	for i, p := range b.plans {
		ranges[i] = store.RoomRange{RoomID: p.id, From: p.lo, To: p.hi}
	}
	var match store.EventMatch
	if tf := f.Room.Timeline; tf != nil {
		match = store.EventMatch{Types: tf.Types, NotTypes: tf.NotTypes, Senders: tf.Senders, NotSenders: tf.NotSenders}
	}
	raw, err := tx.Timelines(ctx, ranges, match, f.timelineLimit()+1)
	if err != nil {
		return err
	}
	b.raw = raw
	if err := b.visibility(ctx, tx); err != nil {
		return err
	}
	b.now = time.Now()
	b.outs = make([]roomOut, len(b.plans))
	for i, p := range b.plans {
		b.outs[i] = b.timelineOf(p)
	}
	return nil
}

// visibility reads the user's history in the rooms where it needs
// checking: those where the user was not joined for the whole range. A
// user whose current join began before the range was joined at every
// event in it.
func (b *builder) visibility(ctx context.Context, tx *store.SyncTx) error {
	var checkIDs []string
	for _, p := range b.plans {
		if p.membership != "join" || p.fullState || b.current[p.id].FromPos >= p.lo {
			checkIDs = append(checkIDs, p.id)
		}
	}
	histories, err := tx.Histories(ctx, b.req.user, checkIDs)
	if err != nil {
		return err
	}
	b.histories = histories
	return nil
}

// timelineOf makes a planned room's timeline section from its events.
func (b *builder) timelineOf(p roomPlan) roomOut {
	f, limit := b.f, b.f.timelineLimit()
	raw := b.raw[p.id] // newest first
	ro := roomOut{tl: timeline{Events: []json.RawMessage{}}, start: p.hi, senders: map[string]bool{}, needFull: p.fullState}
	if len(raw) > limit {
		ro.limited = true
		raw = raw[:limit]
	}
	if len(raw) > 0 {
		ro.start = raw[len(raw)-1].Pos
	}
	v, check := b.histories[p.id]
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
		ro.tl.Events = append(ro.tl.Events, selectFields(e.RenderFor(b.req.user, b.req.device, membership, b.prevVisible(e), b.now), f.EventFields))
		ro.senders[e.Sender] = true
	}
	ro.tl.Limited = ro.limited
	ro.tl.PrevBatch = eventlog.FormatRoomPoint(ro.start)
	return ro
}

// prevVisible says whether the user may see the state event e replaced
// (for unsigned.prev_content): by the history read for the room, or,
// where none was read (joined throughout the range), when the current
// join is older than that event. A room with neither leaves prev_content
// out rather than guess.
func (b *builder) prevVisible(e *store.StoredEvent) bool {
	prev := e.Prev()
	if prev == nil {
		return false
	}
	if v, ok := b.histories[e.RoomID]; ok {
		return v.CanSee(prev)
	}
	c, ok := b.current[e.RoomID]
	return ok && c.Membership == "join" && prev.Pos >= c.FromPos
}

// render renders a state event as the syncing device sees it.
func (b *builder) render(e *store.StoredEvent) json.RawMessage {
	return selectFields(e.RenderFor(b.req.user, b.req.device, "", b.prevVisible(e), b.now), b.f.EventFields)
}

// state reads the state the planned rooms' state sections come from: all
// of it before the timeline for a full state, the changes in the range
// before the timeline for a limited one.
func (b *builder) state(ctx context.Context, tx *store.SyncTx) error {
	var stateRanges []store.RoomRange
	var members [][]string // for a lazy-loading filter: whose member events
	for i, p := range b.plans {
		switch ro := b.outs[i]; {
		case ro.needFull:
			stateRanges = append(stateRanges, store.RoomRange{RoomID: p.id, From: 0, To: ro.start})
		case ro.limited:
			stateRanges = append(stateRanges, store.RoomRange{RoomID: p.id, From: p.lo, To: ro.start})
		default:
			continue
		}
		if b.lazy {
			members = append(members, b.lazyKeep(i))
		}
	}
	var states map[string][]store.StoredEvent
	var err error
	if b.lazy {
		// Only the member events stateOf keeps are read: in a big room
		// the others are nearly all of the state.
		states, err = tx.LazyStateAtPoints(ctx, stateRanges, members)
	} else {
		states, err = tx.StateAtPoints(ctx, stateRanges)
	}
	if err != nil {
		return err
	}
	b.states = states
	// A room joined since the token gets as its state section all the
	// state before its timeline, which the client did not have. The
	// spec's sync note: in an incremental sync that section "will
	// therefore be empty unless the timeline was limited". So such a
	// timeline that does not reach back to the room's start (cut by
	// the limit, or by the filter's types) is limited.
	for i, p := range b.plans {
		if p.joinedNew && len(states[p.id]) > 0 {
			b.outs[i].tl.Limited = true
		}
	}
	return nil
}

// lazyKeep is whose member events the state section of plan i keeps for
// a lazy-loading filter: the user's and those of the timeline's senders.
func (b *builder) lazyKeep(i int) []string {
	keep := make([]string, 0, len(b.outs[i].senders)+1)
	keep = append(keep, b.req.user)
	for sender := range b.outs[i].senders {
		if sender != b.req.user {
			keep = append(keep, sender)
		}
	}
	return keep
}

// stateOf is the state section of plan i, from the state read for it.
func (b *builder) stateOf(i int, p roomPlan) []json.RawMessage {
	evs := []json.RawMessage{}
	for j := range b.states[p.id] {
		e := &b.states[p.id][j]
		if !b.f.Room.State.Allows(e.Type, e.Sender, e.RoomID, contentFunc(e)) {
			continue
		}
		// (A lazy build read no others; the check stays for clarity
		// of what the section holds.)
		if b.lazy && e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey != b.req.user && !b.outs[i].senders[*e.StateKey] {
			continue
		}
		evs = append(evs, b.render(e))
	}
	return evs
}

// summaries reads the room summaries of the joined rooms whose membership
// may have changed for the client.
func (b *builder) summaries(ctx context.Context, tx *store.SyncTx) error {
	var sumIDs []string
	for i, p := range b.plans {
		if p.membership != "join" {
			continue
		}
		if b.outs[i].needFull || b.outs[i].limited || hasMemberEvent(b.raw[p.id]) {
			sumIDs = append(sumIDs, p.id)
		}
	}
	sums, err := tx.Summaries(ctx, b.req.user, sumIDs)
	if err != nil {
		return err
	}
	b.sums = sums
	return nil
}

// lazyMembers reads, for lazy-loading clients, the member events of the
// senders they see, also when the state section would otherwise be empty,
// and remembers the member events the response gives for the window.
func (b *builder) lazyMembers(ctx context.Context, tx *store.SyncTx) error {
	b.lazyState = map[string][]json.RawMessage{}
	if !b.lazy {
		return nil
	}
	var pairRooms, pairUsers []string
	for i, p := range b.plans {
		if b.outs[i].needFull || b.outs[i].limited {
			continue // their state section already carries them
		}
		for sender := range b.outs[i].senders {
			pairRooms, pairUsers = append(pairRooms, p.id), append(pairUsers, sender)
		}
	}
	members, err := tx.MemberEvents(ctx, pairRooms, pairUsers)
	if err != nil {
		return err
	}
	starts := map[string]int64{}
	for i, p := range b.plans {
		starts[p.id] = b.outs[i].start
	}
	for roomID, evs := range members {
		for j := range evs {
			b.out.base.learnMember(evs[j])
			if evs[j].Pos >= starts[roomID] {
				continue // in the timeline already
			}
			b.lazyState[roomID] = append(b.lazyState[roomID], b.render(&evs[j]))
		}
	}
	// Remember the member events this response gave of its senders, for
	// the window's lazy-loading responses: the shared cache takes them as
	// current as of the response's G. The state at the timeline's start
	// and the timeline's member events are that only when the timeline
	// holds every event after its start; a filter that narrows it (types,
	// senders) may leave out a later member event, so then only what
	// MemberEvents read as of G (above) is remembered.
	if tf := b.f.Room.Timeline; tf != nil && (tf.Types != nil || tf.NotTypes != nil || tf.Senders != nil || tf.NotSenders != nil) {
		return nil
	}
	for i, p := range b.plans {
		if p.membership != "join" {
			continue
		}
		for _, e := range b.states[p.id] {
			if e.Type == "m.room.member" && e.StateKey != nil && b.outs[i].senders[*e.StateKey] {
				b.out.base.learnMember(e)
			}
		}
		raw := b.raw[p.id]
		for j := len(raw) - 1; j >= 0; j-- {
			if e := raw[j]; e.Type == "m.room.member" && e.StateKey != nil {
				b.out.base.learnMember(e)
			}
		}
	}
	return nil
}

// roomSections puts the joined and left rooms into the response.
func (b *builder) roomSections() {
	for i, p := range b.plans {
		ro := b.outs[i]
		st := b.stateOf(i, p)
		st = append(st, b.lazyState[p.id]...)
		if p.membership == "join" {
			// An unchanged room is left out of an incremental response.
			if !p.fullState && len(ro.tl.Events) == 0 && len(st) == 0 {
				continue
			}
			s, ok := b.sums[p.id]
			b.out.resp.Rooms.Join[p.id] = &joinedRoom{
				State: eventList{st}, Timeline: ro.tl, Ephemeral: eventList{[]json.RawMessage{}},
				AccountData: eventList{[]json.RawMessage{}},
				Summary:     summaryOf(s, ok),
			}
		} else {
			b.out.resp.Rooms.Leave[p.id] = &leftRoom{State: eventList{st}, Timeline: ro.tl, AccountData: eventList{[]json.RawMessage{}}}
		}
	}
}

// joinEntry returns the response's entry for a joined room, adding an
// empty one (for its ephemeral events or account data) if the room has
// none yet.
func (b *builder) joinEntry(roomID string) *joinedRoom {
	if jr, ok := b.out.resp.Rooms.Join[roomID]; ok {
		return jr
	}
	jr := &joinedRoom{State: eventList{[]json.RawMessage{}}, Timeline: timeline{Events: []json.RawMessage{}, PrevBatch: eventlog.FormatRoomPoint(b.hi)},
		Ephemeral: eventList{[]json.RawMessage{}}, AccountData: eventList{[]json.RawMessage{}}}
	b.out.resp.Rooms.Join[roomID] = jr
	return jr
}

// invitesAndKnocks puts the invited and knocked rooms, with their stripped
// state, into the response.
func (b *builder) invitesAndKnocks(ctx context.Context, tx *store.SyncTx) error {
	user := b.req.user
	slices.Sort(b.invites)
	slices.Sort(b.knocks)
	stripped, err := tx.StrippedState(ctx, user, append(slices.Clip(b.invites), b.knocks...))
	if err != nil {
		return err
	}
	// Invites from users the user ignores are not shown (client-server
	// API, "Ignoring users"); the list is read only when there are
	// invites to show.
	var ignored map[string]bool
	if len(b.invites) > 0 {
		if ignored, err = tx.IgnoredUsers(ctx, user); err != nil {
			return err
		}
	}
	// strippedOf is a room's stripped state; ok is false for an
	// invite sent by an ignored user.
	strippedOf := func(roomID string) (eventList, bool) {
		evs := []json.RawMessage{}
		for _, e := range stripped[roomID] {
			if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == user && ignored[e.Sender] {
				return eventList{}, false
			}
			evs = append(evs, strip(&e))
		}
		return eventList{evs}, true
	}
	for _, roomID := range b.invites {
		if st, ok := strippedOf(roomID); ok {
			b.out.resp.Rooms.Invite[roomID] = &invitedRoom{InviteState: st}
		}
	}
	for _, roomID := range b.knocks {
		st, _ := strippedOf(roomID)
		b.out.resp.Rooms.Knock[roomID] = &knockedRoom{KnockState: st}
	}
	return nil
}

// ephemeral puts the joined rooms' ephemeral events (receipts, typing)
// into the response, typing (and, for presence, the presence changes) as
// of one position of the ephemeral view.
func (b *builder) ephemeral(ctx context.Context, tx *store.SyncTx) error {
	f := b.f
	b.view = b.eph.snapshot(b.joinedNow, b.sinceEph, b.now)
	b.out.ephPos = b.view.pos
	if f.Room.Ephemeral.Allows("m.receipt", "", "", nil) {
		receipts, err := tx.ReceiptsSince(ctx, b.req.user, b.joinedNow, b.sinceReceipts)
		if err != nil {
			return err
		}
		for roomID, content := range receiptContents(receipts) {
			if !f.Room.Ephemeral.AllowsRoom(roomID) {
				continue
			}
			ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
			jr := b.joinEntry(roomID)
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
		}
	}
	if f.Room.Ephemeral.Allows("m.typing", "", "", nil) {
		for roomID, users := range b.view.typing {
			if !f.Room.Ephemeral.AllowsRoom(roomID) {
				continue
			}
			ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
			jr := b.joinEntry(roomID)
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
		}
	}
	return nil
}

// presence puts the presence of the users who share a room with this one
// into the response: those whose presence changed since the token, and
// (incrementally) those who newly share a room with the user (they joined
// one of its rooms, or it joined theirs), even if it did not change: the
// client has not seen it.
func (b *builder) presence(ctx context.Context, tx *store.SyncTx) error {
	user := b.req.user
	if !b.initial {
		known := map[string]bool{}
		for _, p := range b.view.presence {
			known[p.UserID] = true
		}
		full, err := b.fullMemberKeys(ctx, tx)
		if err != nil {
			return err
		}
		for i, p := range b.plans {
			if p.membership != "join" {
				continue
			}
			// A room with a full state section: everyone its state
			// names; otherwise those who joined in the timeline.
			keys := full[p.id]
			for _, e := range b.raw[p.id] {
				if e.Type == "m.room.member" && e.StateKey != nil && (b.outs[i].needFull || e.Membership() == "join") {
					keys = append(keys, *e.StateKey)
				}
			}
			for _, k := range keys {
				if k == user || known[k] {
					continue
				}
				if pr, ok := b.eph.presenceOf(k); ok {
					known[k] = true
					b.view.presence = append(b.view.presence, pr)
				}
			}
		}
	}
	changed := b.view.presence
	if len(changed) == 0 {
		return nil
	}
	ids := make([]string, len(changed))
	for i, p := range changed {
		ids[i] = p.UserID
	}
	audience, err := tx.SharingRooms(ctx, user, ids)
	if err != nil {
		return err
	}
	slices.SortFunc(changed, func(a, b eventlog.PresenceSet) int { return compare(a.UserID, b.UserID) })
	for _, p := range changed {
		if (p.UserID != user && !audience[p.UserID]) || !b.f.Presence.Allows("m.presence", p.UserID, "", nil) {
			continue
		}
		b.out.resp.Presence.Events = append(b.out.resp.Presence.Events, presenceEvent(&p, b.now))
	}
	return nil
}

// fullMemberKeys returns, for the joined rooms with a full state section,
// whom that state names in member events: from the state read, or, for a
// lazy-loading build that read only a few of them, by their keys alone.
func (b *builder) fullMemberKeys(ctx context.Context, tx *store.SyncTx) (map[string][]string, error) {
	out := map[string][]string{}
	var ranges []store.RoomRange
	for i, p := range b.plans {
		if p.membership != "join" || !b.outs[i].needFull {
			continue
		}
		if b.lazy {
			ranges = append(ranges, store.RoomRange{RoomID: p.id, From: 0, To: b.outs[i].start})
			continue
		}
		for _, e := range b.states[p.id] {
			if e.Type == "m.room.member" && e.StateKey != nil {
				out[p.id] = append(out[p.id], *e.StateKey)
			}
		}
	}
	if len(ranges) == 0 {
		return out, nil
	}
	return tx.MemberKeysAtPoints(ctx, ranges)
}

// accountData puts the user's global and joined rooms' account data that
// changed since the token into the response.
func (b *builder) accountData(ctx context.Context, tx *store.SyncTx) error {
	f, user := b.f, b.req.user
	ad, err := tx.AccountDataSince(ctx, user, b.sinceAccounts)
	if err != nil {
		return err
	}
	if b.initial && !slices.ContainsFunc(ad, func(a store.AccountDataItem) bool { return a.RoomID == "" && a.Type == "m.push_rules" }) {
		// Clients read their push rules from the initial sync; until a
		// user changes them they are the defaults.
		c, _ := json.Marshal(map[string]json.RawMessage{"global": matrix.DefaultPushRules(user)})
		ad = append(ad, store.AccountDataItem{Type: "m.push_rules", Content: c})
	}
	for _, item := range ad {
		if item.RoomID == "" && item.Type == "m.push_rules" {
			item.Content = pushRulesContent(user, item.Content)
		}
		ev, _ := json.Marshal(map[string]any{"type": item.Type, "content": item.Content})
		if item.RoomID == "" {
			if f.AccountData.Allows(item.Type, "", "", nil) {
				b.out.resp.AccountData.Events = append(b.out.resp.AccountData.Events, ev)
			}
			continue
		}
		if !f.Room.AccountData.Allows(item.Type, "", item.RoomID, nil) {
			continue
		}
		if jr, ok := b.out.resp.Rooms.Join[item.RoomID]; ok {
			jr.AccountData.Events = append(jr.AccountData.Events, ev)
		} else if c, ok := b.current[item.RoomID]; ok && c.Membership == "join" && f.allowsRoom(item.RoomID) {
			jr := b.joinEntry(item.RoomID)
			jr.AccountData.Events = append(jr.AccountData.Events, ev)
		}
	}
	return nil
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

// joinedSince reports whether the user's membership that ended at at was
// a join that began before lo.
func joinedSince(mems []store.UserMembership, roomID string, at, lo int64) bool {
	for _, m := range mems {
		if m.RoomID == roomID && m.ToPos == at && m.Membership == "join" && m.FromPos < lo {
			return true
		}
	}
	return false
}

// wasMember reports whether the user was joined, invited or knocking in
// the room just before position at, so that a leave is news to them.
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
