package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"strand/eventlog/matrix"
)

// notificationsPageLimit is the page size when the client gives none.
const notificationsPageLimit = 20

// GET /_matrix/client/v3/notifications: the events that notified the
// user, newest first, as their push rules decide now (store.Notifications
// evaluates them at read time, a bounded number per request).
func (s *Server) getNotifications(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	q := r.URL.Query()
	var before int64
	if from := q.Get("from"); from != "" {
		n, err := strconv.ParseInt(from, 10, 64)
		if err != nil || n <= 0 {
			return matrix.InvalidParam("invalid from token")
		}
		before = n
	}
	limit, err := parseLimit(q.Get("limit"), notificationsPageLimit)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = notificationsPageLimit
	}
	rules, err := s.store.PushRules(r.Context(), ss.UserID)
	if err != nil {
		return err
	}
	ns, next, err := s.store.Notifications(r.Context(), ss.UserID, rules, before, limit, q.Get("only") == "highlight")
	if err != nil {
		return err
	}
	type notification struct {
		Actions []any           `json:"actions"`
		Event   json.RawMessage `json:"event"`
		Read    bool            `json:"read"`
		RoomID  string          `json:"room_id"`
		TS      int64           `json:"ts"`
	}
	out := struct {
		NextToken     string         `json:"next_token,omitempty"`
		Notifications []notification `json:"notifications"`
	}{Notifications: []notification{}}
	now := time.Now()
	for i := range ns {
		n := &ns[i]
		out.Notifications = append(out.Notifications, notification{
			Actions: n.Decision.Actions, Event: n.Event.Render(ss.UserID, ss.DeviceID, now),
			Read: n.Read, RoomID: n.Event.RoomID, TS: n.Event.OriginServerTS,
		})
	}
	if next > 0 {
		out.NextToken = strconv.FormatInt(next, 10)
	}
	matrix.WriteJSON(w, http.StatusOK, out)
	return nil
}
