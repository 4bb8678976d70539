package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// claimAlias points a free alias at a room. The log decides: the alias
// record is appended expecting the alias subject's last sequence as read,
// and that last record must be a deletion (or absent).
func (s *Server) claimAlias(ctx context.Context, alias, roomID, creator string) error {
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		last, ok, err := s.log.Last(ctx, eventlog.StreamRooms, eventlog.AliasSubject(alias))
		if err != nil {
			return logUnavailable(err)
		}
		var expect uint64
		if ok {
			if last.Type == (eventlog.AliasSet{}).RecordType() {
				orphan, err := s.orphanAlias(ctx, last)
				if err != nil {
					return err
				}
				if !orphan {
					return matrix.Errorf("M_ROOM_IN_USE", http.StatusBadRequest, "room alias %s is already in use", alias)
				}
			}
			expect = last.Seq
		}
		seq, err := s.log.Append(ctx, eventlog.AliasSubject(alias), &eventlog.AliasSet{Alias: alias, RoomID: roomID, Creator: creator},
			eventlog.AppendOptions{ExpectSeq: eventlog.Expect(expect)})
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		if err != nil {
			return logUnavailable(err)
		}
		return s.awaitApplied(ctx, eventlog.AliasLaneName, seq)
	}
	return matrix.Errorf("M_ROOM_IN_USE", http.StatusBadRequest, "room alias %s is contended", alias)
}

// orphanAlias reports whether an alias.set record points at a room that
// never made it onto the log, long enough ago that it never will.
func (s *Server) orphanAlias(ctx context.Context, last eventlog.Msg) (bool, error) {
	if time.Since(last.Time) < s.cfg.OrphanAliasGrace {
		return false, nil
	}
	rec, err := last.Decode()
	if err != nil {
		return false, err
	}
	set, ok := rec.(*eventlog.AliasSet)
	if !ok {
		return false, nil
	}
	seq, err := s.log.LastSeq(ctx, eventlog.StreamRooms, eventlog.RoomSubject(set.RoomID))
	if err != nil {
		return false, logUnavailable(err)
	}
	return seq == 0, nil
}

// releaseAlias frees an alias if it still points at roomID.
func (s *Server) releaseAlias(ctx context.Context, alias, roomID string) error {
	last, ok, err := s.log.Last(ctx, eventlog.StreamRooms, eventlog.AliasSubject(alias))
	if err != nil {
		return logUnavailable(err)
	}
	if !ok || last.Type != (eventlog.AliasSet{}).RecordType() {
		return matrix.NotFound("room alias %s not found", alias)
	}
	rec, err := last.Decode()
	if err != nil {
		return err
	}
	if set := rec.(*eventlog.AliasSet); set.RoomID != roomID && roomID != "" {
		return matrix.NotFound("room alias %s does not point at %s", alias, roomID)
	}
	seq, err := s.log.Append(ctx, eventlog.AliasSubject(alias), &eventlog.AliasDeleted{Alias: alias, RoomID: roomID},
		eventlog.AppendOptions{ExpectSeq: eventlog.Expect(last.Seq)})
	if errors.Is(err, eventlog.ErrConflict) {
		return matrix.Errorf("M_UNKNOWN", http.StatusConflict, "room alias %s changed concurrently; retry", alias)
	}
	if err != nil {
		return logUnavailable(err)
	}
	return s.awaitApplied(ctx, eventlog.AliasLaneName, seq)
}

// mayManageListing reports whether the caller may publish the room in the
// directory or remove others' aliases of it: a server admin, or a member
// who is joined now and has the power to change m.room.canonical_alias.
// Power alone is not enough: a power-level entry outlives a ban, and can
// name a user who never joined.
func mayManageListing(rs *roomState, ss store.Session) bool {
	if ss.Admin {
		return true
	}
	uid := matrix.UserID(ss.UserID)
	return rs.state.Membership(uid) == "join" &&
		rs.state.UserPowerLevel(uid) >= rs.state.PowerLevels().EventLevel("m.room.canonical_alias", true)
}

// mayAddAlias admits a new alias for roomID only from a member joined to
// it (server admins excepted), as Synapse does by default. A room that does
// not exist gets the same 403 as one the caller is not in, so that
// pointing aliases cannot probe for rooms. (The check reads the room's
// state and the alias is then claimed on its own subject, so a member
// removed in between can still add it: harmless, as they could have added
// it a moment earlier, and the alias can be deleted.)
func (s *Server) mayAddAlias(ctx context.Context, roomID string, ss store.Session) error {
	rs, err := s.loadRoom(ctx, roomID)
	if err != nil {
		if ss.Admin {
			return err
		}
		return errNotInRoom(err, roomID)
	}
	if !ss.Admin && rs.state.Membership(matrix.UserID(ss.UserID)) != "join" {
		return matrix.Forbidden("you are not a member of room %s", roomID)
	}
	return nil
}

func parseAliasVar(r *http.Request) (matrix.RoomAlias, error) {
	a, err := matrix.ParseRoomAlias(pathVar(r, "roomAlias"))
	if err != nil {
		return "", matrix.InvalidParam("invalid room alias: %v", err)
	}
	return a, nil
}

// PUT /_matrix/client/v3/directory/room/{roomAlias}
func (s *Server) putAlias(w http.ResponseWriter, r *http.Request) error {
	alias, err := parseAliasVar(r)
	if err != nil {
		return err
	}
	var req struct {
		RoomID *string `json:"room_id"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.RoomID == nil {
		return matrix.MissingParam("room_id is required")
	}
	if _, err := matrix.ParseRoomID(*req.RoomID); err != nil {
		return matrix.InvalidParam("invalid room ID: %v", err)
	}
	if alias.Server() != s.cfg.ServerName {
		return matrix.InvalidParam("alias must be on this server (%s)", s.cfg.ServerName)
	}
	if err := s.checkAliasNamespace(r, string(alias)); err != nil {
		return err
	}
	if err := s.mayAddAlias(r.Context(), *req.RoomID, session(r)); err != nil {
		return err
	}
	if err := s.claimAlias(r.Context(), string(alias), *req.RoomID, session(r).UserID); err != nil {
		if me, ok := matrix.AsError(err); ok && me.Code == "M_ROOM_IN_USE" {
			return matrix.Errorf("M_UNKNOWN", http.StatusConflict, "room alias %s already exists", alias)
		}
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /_matrix/client/v3/directory/room/{roomAlias}
func (s *Server) getAlias(w http.ResponseWriter, r *http.Request) error {
	alias, err := parseAliasVar(r)
	if err != nil {
		return err
	}
	roomID, _, err := s.store.AliasRoom(r.Context(), string(alias))
	if errors.Is(err, store.ErrNotFound) && s.queryAlias(r.Context(), string(alias)) {
		// The service created it before answering: read it again.
		roomID, err = lookupCaughtUp(r.Context(), s, eventlog.AliasLaneName, func(ctx context.Context) (string, error) {
			id, _, err := s.store.AliasRoom(ctx, string(alias))
			return id, err
		})
	}
	if errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": []string{string(s.cfg.ServerName)}})
	return nil
}

// DELETE /_matrix/client/v3/directory/room/{roomAlias}
func (s *Server) deleteAlias(w http.ResponseWriter, r *http.Request) error {
	alias, err := parseAliasVar(r)
	if err != nil {
		return err
	}
	roomID, creator, err := s.store.AliasRoom(r.Context(), string(alias))
	if errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	ss := session(r)
	// A service manages the aliases of its namespaces, whoever made them.
	asOwns := appserviceOf(r) != nil && appserviceOf(r).OwnsAlias(string(alias))
	if creator != ss.UserID && !ss.Admin && !asOwns {
		// Room moderators may remove aliases too: joined members who
		// could change the canonical alias.
		rs, err := s.loadRoom(r.Context(), roomID)
		if err != nil {
			return err
		}
		if !mayManageListing(rs, ss) {
			return matrix.Forbidden("you may not remove this alias")
		}
	}
	if err := s.releaseAlias(r.Context(), string(alias), roomID); err != nil {
		return err
	}
	s.dropCanonicalAlias(r.Context(), roomID, string(alias), matrix.UserID(ss.UserID))
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// dropCanonicalAlias removes a deleted alias from the room's
// m.room.canonical_alias (as alias or among alt_aliases), sent by the user
// who deleted it, so that clients stop showing an alias that no longer
// leads anywhere (the spec lets servers do this). A user who may not send
// that event leaves it as it is; so does a failure, which is logged: the
// alias is already gone from the directory, and that was the request.
func (s *Server) dropCanonicalAlias(ctx context.Context, roomID, alias string, sender matrix.UserID) {
	_, err := s.writeRoom(ctx, roomID, nil, func(rs *roomState) ([]*matrix.ProtoEvent, error) {
		cur := rs.state.Get(matrix.StateKey{Type: "m.room.canonical_alias"})
		if cur == nil || rs.state.Membership(sender) != "join" ||
			rs.state.UserPowerLevel(sender) < rs.state.PowerLevels().EventLevel("m.room.canonical_alias", true) {
			return nil, nil
		}
		var c map[string]json.RawMessage
		if err := json.Unmarshal(cur.Content(), &c); err != nil {
			return nil, nil
		}
		changed := false
		var main string
		if json.Unmarshal(c["alias"], &main) == nil && main == alias {
			delete(c, "alias")
			changed = true
		}
		var alts []string
		if raw, ok := c["alt_aliases"]; ok && json.Unmarshal(raw, &alts) == nil && slices.Contains(alts, alias) {
			alts = slices.DeleteFunc(alts, func(a string) bool { return a == alias })
			if len(alts) == 0 {
				delete(c, "alt_aliases")
			} else {
				c["alt_aliases"] = content(alts)
			}
			changed = true
		}
		if !changed {
			return nil, nil
		}
		return []*matrix.ProtoEvent{{Type: "m.room.canonical_alias", StateKey: stateKeyPtr(""), Sender: sender, Content: content(c)}}, nil
	})
	if err != nil {
		s.logger.Warn("deleted alias left in m.room.canonical_alias", "room_id", roomID, "alias", alias, "err", err)
	}
}

// GET /_matrix/client/v3/rooms/{roomId}/aliases
func (s *Server) roomAliases(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	// The spec's rule: members of the room, or anyone if it is
	// world_readable. A former member is not told of aliases added since.
	if ss := session(r); !ss.Admin {
		if err := s.requireJoinedOrWorldReadable(r.Context(), roomID, ss.UserID); err != nil {
			return err
		}
	}
	as, err := s.store.RoomAliases(r.Context(), roomID)
	if err != nil {
		return err
	}
	if as == nil {
		as = []string{}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"aliases": as})
	return nil
}
