package api

import (
	"context"
	"errors"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// visibility is a user's view of one room's history.
type visibility = store.Visibility

func (s *Server) roomVisibility(ctx context.Context, roomID, userID string) (*visibility, error) {
	h, err := s.store.UserRoomHistory(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	v := &visibility{Hist: h, UserID: userID, RoomID: roomID}
	if v.Current() != "join" && v.Current() != "invite" && len(h.Memberships) > 0 {
		// A forgotten room's history is closed to the user, as if they had
		// never been in it.
		forgot, err := s.store.Forgotten(ctx, userID, roomID)
		if err != nil {
			return nil, err
		}
		if forgot {
			v.Hist.Memberships = nil
		}
	}
	return v, nil
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
	if v.Current() == "join" {
		return 0, v, nil
	}
	if worldReadableNow(v) {
		return 0, v, nil
	}
	if ever, end := v.LastJoinEnd(); ever && end > 0 {
		return end, v, nil
	}
	return 0, nil, matrix.Forbidden("you are not a member of room %s", roomID)
}

// worldReadableNow reports whether the room's history is world_readable now.
func worldReadableNow(v *visibility) bool {
	n := len(v.Hist.Visibility)
	return n > 0 && v.Hist.Visibility[n-1].ToPos == 0 && v.Hist.Visibility[n-1].Visibility == "world_readable"
}

// requireJoinedOrWorldReadable admits a user who is joined to the room now,
// or anyone while its history is world_readable: the rule the spec gives
// for /aliases and /joined_members ("users who are in the room"), which,
// unlike /state and /members, has no "as of when you left" for former
// members. Unknown rooms get the same 403, so existence does not leak.
func (s *Server) requireJoinedOrWorldReadable(ctx context.Context, roomID, userID string) error {
	v, err := s.roomVisibility(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if v.Current() == "join" || worldReadableNow(v) {
		return nil
	}
	return matrix.Forbidden("you are not a member of room %s", roomID)
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
