package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Reporting content (report_content.yaml). A report goes to the log as a
// content.reported record on the reporter's subject, like every other fact
// a user gives the server, and the projection keeps it for administrators.

// reportBody is the body all three report endpoints take.
type reportBody struct {
	Reason *string         `json:"reason"`
	Score  json.RawMessage `json:"score"`
}

// decodeReport reads and checks a report's body. reasonRequired is the
// room and user endpoints' "required: reason" (it may be blank); an event
// report may leave it out.
func decodeReport(r *http.Request, reasonRequired bool) (reason string, score *int, err error) {
	var body reportBody
	if err := matrix.DecodeJSON(r, &body, !reasonRequired); err != nil {
		return "", nil, err
	}
	if body.Reason == nil && reasonRequired {
		return "", nil, matrix.MissingParam("reason is required")
	}
	if body.Reason != nil {
		if err := matrix.CheckMaxLength("reason", *body.Reason, matrix.MaxReportReasonBytes); err != nil {
			return "", nil, err
		}
		reason = *body.Reason
	}
	// Matrix 1.18 removed score, but clients written before still send it:
	// what they send is checked against the range it had rather than
	// stored as any JSON value.
	if len(body.Score) > 0 && !bytes.Equal(body.Score, []byte("null")) {
		var n int
		if json.Unmarshal(body.Score, &n) != nil {
			return "", nil, matrix.BadJSON("score must be an integer")
		}
		if n < -100 || n > 0 {
			return "", nil, matrix.InvalidParam("score must be between -100 and 0")
		}
		score = &n
	}
	return reason, score, nil
}

func (s *Server) appendReport(w http.ResponseWriter, r *http.Request, rec *eventlog.ContentReported) error {
	rec.UserID = session(r).UserID
	if err := s.appendAccount(r.Context(), rec.UserID, rec, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}
//
// The reporter must be joined to the room and able to see the event; an
// event they cannot see, or a room they are not joined to, is 404 like one
// that does not exist, so reports reveal nothing the reporter could not
// read.
func (s *Server) reportEvent(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	eventID := pathVar(r, "eventId")
	if _, err := matrix.ParseEventID(eventID); err != nil {
		return matrix.InvalidParam("invalid event ID: %v", err)
	}
	reason, score, err := decodeReport(r, false)
	if err != nil {
		return err
	}
	v, err := s.roomVisibility(r.Context(), roomID, session(r).UserID)
	if err != nil {
		return err
	}
	if v.Current() != "join" {
		return matrix.NotFound("the event was not found or you are not joined to the room")
	}
	if _, err := s.eventVisibleTo(r, roomID, eventID, v); err != nil {
		return err
	}
	return s.appendReport(w, r, &eventlog.ContentReported{RoomID: roomID, EventID: eventID, Reason: reason, Score: score})
}

// POST /_matrix/client/v3/rooms/{roomId}/report
//
// The reporter need not be joined. A room is reportable when they have
// been in it (and not forgotten it) or could find and peek at it as the
// room summary shows it; any other room is 404 like an unknown one.
func (s *Server) reportRoom(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	reason, _, err := decodeReport(r, true)
	if err != nil {
		return err
	}
	uid := session(r).UserID
	v, err := s.roomVisibility(r.Context(), roomID, uid)
	if err != nil {
		return err
	}
	if len(v.Hist.Memberships) == 0 {
		rs, err := s.loadRoom(r.Context(), roomID)
		if err != nil {
			return err
		}
		visible, err := s.summaryVisible(r, uid, rs.state)
		if err != nil {
			return err
		}
		if !visible {
			return matrix.NotFound("room %s not found", roomID)
		}
	}
	return s.appendReport(w, r, &eventlog.ContentReported{RoomID: roomID, Reason: reason})
}

// POST /_matrix/client/v3/users/{userId}/report
//
// Only this server's users can be reported (there are no others it
// knows); an unknown one is 404.
func (s *Server) reportUser(w http.ResponseWriter, r *http.Request) error {
	uid, err := matrix.ParseUserID(pathVar(r, "userId"))
	if err != nil {
		return matrix.InvalidParam("invalid user ID: %v", err)
	}
	reason, _, err := decodeReport(r, true)
	if err != nil {
		return err
	}
	if _, err := s.store.User(r.Context(), string(uid)); errors.Is(err, store.ErrNotFound) {
		return matrix.NotFound("user %s not found", uid)
	} else if err != nil {
		return err
	}
	return s.appendReport(w, r, &eventlog.ContentReported{TargetUserID: string(uid), Reason: reason})
}
