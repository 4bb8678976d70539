package api

import (
	"context"
	"fmt"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

// deactivateAccount ends an account (POST /account/deactivate and the
// admin deactivate): the user leaves every room they are joined to,
// invited to or knocking on, then user.deactivated is appended (which
// revokes every token and clears the profile in the projection), then the
// rooms are swept once more. The first sweep comes before the record so
// that an interrupted deactivation leaves an account that can still retry;
// the second catches a join made on another device while the first ran,
// which is the last one possible, as the tokens are revoked by then.
func (s *Server) deactivateAccount(ctx context.Context, userID string) error {
	if err := s.leaveAllRooms(ctx, userID); err != nil {
		return err
	}
	u, err := s.store.User(ctx, userID)
	if err != nil {
		return err
	}
	if !u.Deactivated {
		if err := s.appendAccount(ctx, userID, &eventlog.UserDeactivated{UserID: userID}, nil); err != nil {
			return err
		}
	}
	return s.leaveAllRooms(ctx, userID)
}

// leaveAllRooms appends, room by room, a leave sent by the user, each
// built and authorised against the room's state and appended with the
// room's expected sequence like any other membership change.
func (s *Server) leaveAllRooms(ctx context.Context, userID string) error {
	rooms, err := s.store.RoomsWithMembership(ctx, userID, []string{"join", "invite", "knock"})
	if err != nil {
		return err
	}
	uid := matrix.UserID(userID)
	for _, roomID := range rooms {
		_, err := s.writeRoom(ctx, roomID, nil, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
			switch rs.state.Membership(uid) {
			case "join", "invite", "knock":
			default:
				return nil, nil // left or was removed meanwhile
			}
			return []*matrix.ProtoEvent{{Type: matrix.TypeMember, StateKey: stateKeyPtr(userID), Sender: uid,
				Content: content(map[string]any{"membership": "leave"})}}, nil
		})
		if err != nil {
			return fmt.Errorf("deactivate %s: leave %s: %w", userID, roomID, err)
		}
	}
	return nil
}
