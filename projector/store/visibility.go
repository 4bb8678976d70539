package store

import "slices"

// Visibility decides which of a room's events a user may see, from the
// user's membership periods and the room's history-visibility periods
// (client-server API, "History visibility"): an event is visible if the
// room was world_readable at it, the user was joined at it, the room was
// "shared" at it and the user joined at any point after, or the user was
// invited at it, the room was "invited" and the user joined after. That
// last condition is the prose's "accessible to newly joined members from
// the point they were invited onwards" and "in all cases except
// world_readable, a user needs to join a room to view events in that
// room": an invitee who has not joined (yet) sees nothing but
// world_readable history. Users always see their own membership events.
//
// A Visibility belongs to one room (RoomID): it sees no event of another
// room, whatever its position (invariant 12, rooms are walls).
type Visibility struct {
	Hist   RoomHistory
	UserID string
	RoomID string
}

func spanHas(from, to, pos int64) bool { return from <= pos && (to == 0 || pos < to) }

// MembershipAt is the user's membership at the event at pos, including
// that event's own change; "leave" before they ever had one.
func (v *Visibility) MembershipAt(pos int64) string { return v.membershipAt(pos) }

func (v *Visibility) membershipAt(pos int64) string {
	for _, m := range v.Hist.Memberships {
		if spanHas(m.FromPos, m.ToPos, pos) {
			return m.Membership
		}
	}
	return "leave"
}

func (v *Visibility) visibilityAt(pos int64) string {
	for _, h := range v.Hist.Visibility {
		if spanHas(h.FromPos, h.ToPos, pos) {
			return h.Visibility
		}
	}
	return "shared"
}

func (v *Visibility) joinedAfter(pos int64) bool {
	for _, m := range v.Hist.Memberships {
		if m.Membership == "join" && (m.ToPos == 0 || m.ToPos > pos) {
			return true
		}
	}
	return false
}

// CanSee reports whether the user may see e, an event of v's room.
func (v *Visibility) CanSee(e *StoredEvent) bool {
	if e.RoomID != v.RoomID {
		return false
	}
	if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == v.UserID {
		return true
	}
	return v.visibleAt(e.Pos)
}

// visibleAt reports whether the user may see an event at pos, other than
// their own member events (which they always see).
func (v *Visibility) visibleAt(pos int64) bool {
	vis := v.visibilityAt(pos)
	if vis == "world_readable" {
		return true
	}
	m := v.membershipAt(pos)
	switch {
	case m == "join":
		return true
	case vis == "shared" && v.joinedAfter(pos):
		return true
	case m == "invite" && vis == "invited" && v.joinedAfter(pos):
		return true
	}
	return false
}

// PosRanges are half-open position intervals [From[i], To[i]), To[i] 0
// meaning open-ended, as two arrays so a query can unnest them.
type PosRanges struct {
	From, To []int64
}

// Ranges returns the positions at which the user may see the room's events
// (visibleAt), in order and merged, so that a query can count or filter
// visible events in SQL exactly as CanSee would one by one; the query adds
// the user's own member events. Everything visibleAt reads changes only at
// the start or end of a membership or visibility period, so it is constant
// between those points and checking it at each one is exact.
func (v *Visibility) Ranges() PosRanges {
	points := []int64{0}
	for _, m := range v.Hist.Memberships {
		points = append(points, m.FromPos)
		if m.ToPos != 0 {
			points = append(points, m.ToPos)
		}
	}
	for _, h := range v.Hist.Visibility {
		points = append(points, h.FromPos)
		if h.ToPos != 0 {
			points = append(points, h.ToPos)
		}
	}
	slices.Sort(points)
	points = slices.Compact(points)
	var r PosRanges
	open := false // the last range has no end yet
	for _, p := range points {
		visible := v.visibleAt(p)
		switch {
		case visible && !open:
			r.From, r.To = append(r.From, p), append(r.To, 0)
			open = true
		case !visible && open:
			r.To[len(r.To)-1] = p
			open = false
		}
	}
	return r
}

// Current reports the user's current membership.
func (v *Visibility) Current() string {
	for _, m := range v.Hist.Memberships {
		if m.ToPos == 0 {
			return m.Membership
		}
	}
	return ""
}

// LastJoinEnd reports whether the user was ever joined, and the position at
// which their last join ended (0 if they are still joined).
func (v *Visibility) LastJoinEnd() (ever bool, end int64) {
	for _, m := range v.Hist.Memberships {
		if m.Membership == "join" {
			ever, end = true, m.ToPos
		}
	}
	return ever, end
}
