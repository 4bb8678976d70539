package api

import (
	"context"
	"errors"
	"net/http"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

func roomIDVar(r *http.Request) (string, error) {
	id, err := matrix.ParseRoomID(pathVar(r, "roomId"))
	if err != nil {
		return "", matrix.InvalidParam("invalid room ID: %v", err)
	}
	return string(id), nil
}

// visibility decides which of a room's events a user may see, from the
// user's membership periods and the room's history-visibility periods
// (client-server API, "History visibility"): an event is visible if the
// room was world_readable at it, the user was joined at it, the room was
// "shared" at it and the user joined at any point after, or the user was
// invited at it and the room was "invited". Membership "at" an event
// includes the event itself, so users see their own membership changes.
type visibility struct {
	hist   store.RoomHistory
	userID string
}

func spanHas(from, to, pos int64) bool { return from <= pos && (to == 0 || pos < to) }

func (v *visibility) membershipAt(pos int64) string {
	for _, m := range v.hist.Memberships {
		if spanHas(m.FromPos, m.ToPos, pos) {
			return m.Membership
		}
	}
	return "leave"
}

func (v *visibility) visibilityAt(pos int64) string {
	for _, h := range v.hist.Visibility {
		if spanHas(h.FromPos, h.ToPos, pos) {
			return h.Visibility
		}
	}
	return "shared"
}

func (v *visibility) joinedAfter(pos int64) bool {
	for _, m := range v.hist.Memberships {
		if m.Membership == "join" && (m.ToPos == 0 || m.ToPos > pos) {
			return true
		}
	}
	return false
}

// canSee reports whether the user may see the event at pos.
func (v *visibility) canSee(e *store.StoredEvent) bool {
	if e.Type == matrix.TypeMember && e.StateKey != nil && *e.StateKey == v.userID {
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
	case m == "invite" && vis == "invited":
		return true
	}
	return false
}

// current reports the user's current membership.
func (v *visibility) current() string {
	for _, m := range v.hist.Memberships {
		if m.ToPos == 0 {
			return m.Membership
		}
	}
	return ""
}

// everJoined reports whether the user was ever joined, and the position at
// which their last join ended (0 if they are still joined).
func (v *visibility) lastJoinEnd() (ever bool, end int64) {
	for _, m := range v.hist.Memberships {
		if m.Membership == "join" {
			ever, end = true, m.ToPos
		}
	}
	return ever, end
}

func (s *Server) roomVisibility(ctx context.Context, roomID, userID string) (*visibility, error) {
	h, err := s.store.UserRoomHistory(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	return &visibility{hist: h, userID: userID}, nil
}

// roomReadPoint decides whether a user may read a room's state and
// members, and at which position: 0 (now) for members and world-readable
// rooms, the moment they left for former members. Rooms that do not exist
// and rooms the user cannot see are both 403, so that reads do not reveal
// which rooms exist.
func (s *Server) roomReadPoint(ctx context.Context, roomID, userID string) (int64, *visibility, error) {
	v, err := s.roomVisibility(ctx, roomID, userID)
	if err != nil {
		return 0, nil, err
	}
	if v.current() == "join" {
		return 0, v, nil
	}
	if len(v.hist.Visibility) > 0 && v.hist.Visibility[len(v.hist.Visibility)-1].ToPos == 0 &&
		v.hist.Visibility[len(v.hist.Visibility)-1].Visibility == "world_readable" {
		return 0, v, nil
	}
	if ever, end := v.lastJoinEnd(); ever && end > 0 {
		return end, v, nil
	}
	return 0, nil, matrix.Forbidden("you are not a member of room %s", roomID)
}

// requireVisibleRoom is roomReadPoint for reads that only need a yes.
func (s *Server) requireVisibleRoom(ctx context.Context, roomID, userID string) error {
	_, _, err := s.roomReadPoint(ctx, roomID, userID)
	return err
}

// errNotInRoom converts "no such room" into the 403 a non-member gets.
func errNotInRoom(err error, roomID string) error {
	if me, ok := matrix.AsError(err); ok && me.Code == "M_NOT_FOUND" {
		return matrix.Forbidden("you are not a member of room %s", roomID)
	}
	if errors.Is(err, store.ErrNotFound) {
		return matrix.Forbidden("you are not a member of room %s", roomID)
	}
	return err
}
