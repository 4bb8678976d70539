package store

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
type Visibility struct {
	Hist   RoomHistory
	UserID string
}

func spanHas(from, to, pos int64) bool { return from <= pos && (to == 0 || pos < to) }

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

// CanSee reports whether the user may see the event at pos.
func (v *Visibility) CanSee(e *StoredEvent) bool {
	if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == v.UserID {
		return true
	}
	vis := v.visibilityAt(e.Pos)
	if vis == "world_readable" {
		return true
	}
	m := v.membershipAt(e.Pos)
	switch {
	case m == "join":
		return true
	case vis == "shared" && v.joinedAfter(e.Pos):
		return true
	case m == "invite" && vis == "invited" && v.joinedAfter(e.Pos):
		return true
	}
	return false
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
