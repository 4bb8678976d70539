package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Server notices: an admin sends a message to a user, which arrives in the
// user's server-notices room from the system user. Each user has one such
// room, for good. Its room ID is decided by the user alone: the room is a
// version 12 room (whose ID is the hash of its create event) and the
// create event is fixed by the system user, the target user and the
// target's registration time. So finding the room needs no lookup table,
// and two admins (on two api processes) sending a user's first notice at
// once build the same room: its creation is appended expecting an empty
// subject, and the loser finds the winner's room. The user is invited
// again whenever they are neither joined nor invited; they may join and,
// once joined, leave, but not reject the invite (as Synapse, whose
// behaviour clients and Complement expect), and power levels keep them
// from sending.

// noticeRoomVersion is fixed (not the server's default) because the room
// ID must follow from the create event; never change it or the create
// content below, or every user gets a new notices room.
const noticeRoomVersion = matrix.RoomVersion12

// noticeMarker is the create content key that marks a server-notices room
// and names its user.
const noticeMarker = "org.strand.server_notices_for"

// noticesUser is the system user that sends server notices.
func (s *Server) noticesUser() matrix.UserID {
	return matrix.UserID("@" + s.cfg.ServerNoticesLocalpart + ":" + string(s.cfg.ServerName))
}

type serverNoticeRequest struct {
	UserID   *string                    `json:"user_id"`
	Content  map[string]json.RawMessage `json:"content"`
	Type     *string                    `json:"type"`
	StateKey *string                    `json:"state_key"`
}

// sendServerNotice is Synapse's POST /_synapse/admin/v1/send_server_notice
// and PUT .../send_server_notice/{txnId} (idempotent per admin device).
func (s *Server) sendServerNotice(w http.ResponseWriter, r *http.Request) error {
	// The transaction ID is checked before anything else: a refused
	// request must not have created the user's notices room first.
	if id := pathVar(r, "txnId"); id != "" {
		if err := matrix.CheckMaxLength("txnId", id, matrix.MaxTxnIDBytes); err != nil {
			return err
		}
	}
	var req serverNoticeRequest
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.UserID == nil {
		return matrix.MissingParam("user_id is required")
	}
	if req.Content == nil {
		return matrix.MissingParam("content is required")
	}
	c, err := json.Marshal(req.Content)
	if err != nil {
		return matrix.BadJSON("invalid content")
	}
	if len(c) > matrix.MaxEventSize {
		return matrix.TooLarge("event content exceeds %d bytes", matrix.MaxEventSize)
	}
	typ := "m.room.message"
	if req.Type != nil {
		if *req.Type == "" || len(*req.Type) > maxTypeBytes {
			return matrix.InvalidParam("invalid event type")
		}
		typ = *req.Type
	}
	if typ == matrix.TypeCreate || typ == matrix.TypeMember || typ == matrix.TypePowerLevels || typ == matrix.TypeRedaction {
		return matrix.InvalidParam("server notices cannot be %s events", typ)
	}
	if req.StateKey != nil {
		if err := matrix.CheckMaxLength("state_key", *req.StateKey, matrix.MaxStateKeyBytes); err != nil {
			return err
		}
		if err := checkStateContent(typ, *req.StateKey, c); err != nil {
			return err
		}
	} else if typ == "m.room.message" {
		if err := checkMessage(c); err != nil {
			return err
		}
	}
	target, err := s.noticeTarget(r.Context(), *req.UserID)
	if err != nil {
		return err
	}
	ctx := r.Context()
	roomID, err := s.noticeRoom(ctx, target)
	if err != nil {
		return err
	}
	sys := s.noticesUser()
	var txn *txnRef
	if id := pathVar(r, "txnId"); id != "" {
		// The event is the system user's, the transaction the admin
		// device's: the transaction's device names both.
		ss := session(r)
		txn = &txnRef{sender: string(sys), device: "admin|" + ss.UserID + "|" + ss.DeviceID, id: "notice:" + id}
		if eventID, err := s.store.EventByTxn(ctx, roomID, txn.sender, txn.device, txn.id); err == nil {
			matrix.WriteJSON(w, http.StatusOK, map[string]string{"event_id": eventID})
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	if err := s.inviteToNotices(ctx, roomID, target); err != nil {
		return err
	}
	evs, err := s.writeRoom(ctx, roomID, txn, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
		return []*matrix.ProtoEvent{{Type: typ, StateKey: req.StateKey, Sender: sys, Content: c}}, nil
	})
	return s.answerWrite(w, r, roomID, txn, evs, err)
}

// noticeTarget is the local, active user a notice is for.
func (s *Server) noticeTarget(ctx context.Context, userID string) (store.User, error) {
	uid, err := matrix.ParseUserID(userID)
	if err != nil {
		return store.User{}, matrix.InvalidParam("invalid user_id: %v", err)
	}
	if uid.Server() != s.cfg.ServerName {
		return store.User{}, matrix.InvalidParam("%s is not a user of this server", uid)
	}
	if uid == s.noticesUser() {
		return store.User{}, matrix.InvalidParam("the server notices user gets no notices")
	}
	u, err := s.store.User(ctx, string(uid))
	if errors.Is(err, store.ErrNotFound) {
		return u, matrix.NotFound("no user %s", uid)
	}
	if err != nil {
		return u, err
	}
	if u.Deactivated {
		return u, matrix.Errorf("M_USER_DEACTIVATED", http.StatusBadRequest, "%s is deactivated", uid)
	}
	return u, nil
}

// noticeRoom returns the target's notices room, creating it if it is not
// on the log yet.
func (s *Server) noticeRoom(ctx context.Context, target store.User) (string, error) {
	if err := s.ensureNoticesUser(ctx); err != nil {
		return "", err
	}
	sys := s.noticesUser()
	protos := noticeRoomEvents(sys, matrix.UserID(target.UserID), target.CreatedTS)
	rs := &roomState{head: store.RoomHead{Version: string(noticeRoomVersion)}}
	events, err := s.buildEvents(ctx, rs, protos)
	if err != nil {
		return "", err
	}
	roomID := string(events[0].RoomID())
	last, err := s.log.LastSeq(ctx, eventlog.StreamRooms, eventlog.RoomSubject(roomID))
	if err != nil {
		return "", logUnavailable(err)
	}
	if last != 0 {
		return roomID, s.awaitPosition(ctx, eventlog.RoomLaneOf(roomID), last)
	}
	rec := &eventlog.RoomEvents{RoomID: roomID, RoomVersion: string(noticeRoomVersion)}
	for _, ev := range events {
		rec.Events = append(rec.Events, ev.JSON())
	}
	seq, err := s.log.Append(ctx, eventlog.RoomSubject(roomID), rec, eventlog.AppendOptions{ExpectSeq: eventlog.Expect(0), Room: roomID})
	if errors.Is(err, eventlog.ErrConflict) {
		// Another request created it first: the same room.
		return roomID, s.catchUpRoom(ctx, roomID)
	}
	if err != nil {
		s.logger.Error("append server notices room failed", "room_id", roomID, "err", err)
		return "", logUnavailable(err)
	}
	return roomID, s.awaitApplied(ctx, eventlog.RoomLaneOf(roomID), seq)
}

// tagNoticeRoom tags the room m.server_notice for the user, which tells
// clients to show it as the server's notices, keeping the user's other
// tags of it. It runs with every invite, so a tag that a crash kept from
// being written after the room's creation is written with the next notice.
func (s *Server) tagNoticeRoom(ctx context.Context, roomID, userID string) error {
	tags := map[string]json.RawMessage{}
	raw, err := s.store.AccountData(ctx, userID, roomID, "m.tag")
	switch {
	case err == nil:
		var c struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if json.Unmarshal(raw, &c) == nil && c.Tags != nil {
			tags = c.Tags
		}
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	if _, ok := tags["m.server_notice"]; ok {
		return nil
	}
	tags["m.server_notice"] = json.RawMessage(`{}`)
	b, err := json.Marshal(map[string]any{"tags": tags})
	if err != nil {
		return err
	}
	return s.appendAccount(ctx, userID, &eventlog.AccountDataSet{UserID: userID, RoomID: roomID, Type: "m.tag", Content: b}, nil)
}

// noticeRoomEvents is the notices room's initial events. The create event
// must stay as it is: the room ID is its hash (see noticeRoomVersion).
func noticeRoomEvents(sys, target matrix.UserID, registeredTS int64) []*matrix.ProtoEvent {
	registeredTS = max(registeredTS, 1) // 0 would be "now" to buildEvents
	create := map[string]any{"room_version": string(noticeRoomVersion), "m.federate": false, noticeMarker: string(target)}
	pl := map[string]any{
		// Only the system user (a creator, so above any level) sends;
		// the user may join and leave, which power levels do not govern.
		"users": map[string]any{}, "users_default": 0, "events_default": 100, "state_default": 100,
		"ban": 100, "kick": 100, "redact": 100, "invite": 100,
		"notifications": map[string]any{"room": 100},
	}
	return []*matrix.ProtoEvent{
		{Type: matrix.TypeCreate, StateKey: stateKeyPtr(""), Sender: sys, Content: content(create), OriginServerTS: registeredTS},
		{Type: matrix.TypeMember, StateKey: stateKeyPtr(string(sys)), Sender: sys, Content: memberContent("join", "Server Notices", ""), OriginServerTS: registeredTS},
		{Type: matrix.TypePowerLevels, StateKey: stateKeyPtr(""), Sender: sys, Content: content(pl), OriginServerTS: registeredTS},
		{Type: matrix.TypeJoinRules, StateKey: stateKeyPtr(""), Sender: sys, Content: content(map[string]any{"join_rule": "invite"}), OriginServerTS: registeredTS},
		{Type: matrix.TypeHistoryVis, StateKey: stateKeyPtr(""), Sender: sys, Content: content(map[string]any{"history_visibility": "invited"}), OriginServerTS: registeredTS},
		{Type: "m.room.guest_access", StateKey: stateKeyPtr(""), Sender: sys, Content: content(map[string]any{"guest_access": "forbidden"}), OriginServerTS: registeredTS},
		{Type: "m.room.name", StateKey: stateKeyPtr(""), Sender: sys, Content: content(map[string]any{"name": "Server Notices"}), OriginServerTS: registeredTS},
	}
}

// inviteToNotices invites the target unless they are joined or invited
// already (a first notice, or one after they left).
func (s *Server) inviteToNotices(ctx context.Context, roomID string, target store.User) error {
	uid := matrix.UserID(target.UserID)
	evs, err := s.writeRoom(ctx, roomID, nil, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
		switch rs.state.Membership(uid) {
		case "join", "invite":
			return nil, nil
		}
		return []*matrix.ProtoEvent{{Type: matrix.TypeMember, StateKey: stateKeyPtr(string(uid)), Sender: s.noticesUser(),
			Content: content(map[string]any{"membership": "invite"})}}, nil
	})
	if err != nil || len(evs) == 0 {
		return err
	}
	return s.tagNoticeRoom(ctx, roomID, target.UserID)
}

// ensureNoticesUser registers the system user on its first use, so that
// its ID is taken and its profile readable like any user's. It has no
// password and no device: nobody logs in as it.
func (s *Server) ensureNoticesUser(ctx context.Context) error {
	if s.noticesReady.Load() {
		return nil
	}
	sys := string(s.noticesUser())
	taken, err := s.userTaken(ctx, sys)
	if err != nil {
		return err
	}
	if !taken {
		rec := &eventlog.UserRegistered{UserID: sys, Displayname: "Server Notices", TS: time.Now().UnixMilli()}
		err := s.appendAccount(ctx, sys, rec, eventlog.Expect(0))
		if err != nil && !errors.Is(err, eventlog.ErrConflict) {
			return err
		}
	}
	s.noticesReady.Store(true)
	return nil
}

// isNoticeRoom reports whether st is a server-notices room: created by the
// system user with the marker.
func (s *Server) isNoticeRoom(st matrix.State) bool {
	c := st.Create()
	if c == nil || c.Sender() != s.noticesUser() {
		return false
	}
	return strings.Contains(string(c.Content()), `"`+noticeMarker+`"`)
}

// refuseNoticeRejection stops a user rejecting the invite to their notices
// room (M_CANNOT_LEAVE_SERVER_NOTICE_ROOM); once joined they may leave,
// and the next notice invites them again.
func (s *Server) refuseNoticeRejection(st matrix.State, uid matrix.UserID) error {
	if st.Membership(uid) == "invite" && s.isNoticeRoom(st) {
		return matrix.Errorf("M_CANNOT_LEAVE_SERVER_NOTICE_ROOM", http.StatusForbidden, "the server notices room cannot be left before joining it")
	}
	return nil
}
