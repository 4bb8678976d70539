package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"unicode/utf8"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Pushers say where a user's notifications go (push rules decide which
// events notify). They are account facts on the user's subject, and
// belong to the device whose token set them.

// GET /_matrix/client/v3/pushers
func (s *Server) getPushers(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.store.Pushers(r.Context(), session(r).UserID)
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []store.Pusher{}
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"pushers": ps})
	return nil
}

type pusherRequest struct {
	AppID             *string         `json:"app_id"`
	Pushkey           *string         `json:"pushkey"`
	Kind              *string         `json:"kind"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            bool            `json:"append"`
}

// POST /_matrix/client/v3/pushers/set
func (s *Server) setPusher(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	var req pusherRequest
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	rec, err := req.record(ss.UserID, ss.DeviceID)
	if err != nil {
		return err
	}
	if rec.Kind != "" {
		have, err := s.store.Pushers(r.Context(), ss.UserID)
		if err != nil {
			return err
		}
		replaces := slices.ContainsFunc(have, func(p store.Pusher) bool { return p.AppID == rec.AppID && p.Pushkey == rec.Pushkey })
		if !replaces && len(have) >= matrix.MaxPushersPerUser {
			return matrix.Forbidden("a user has at most %d pushers: delete one first", matrix.MaxPushersPerUser)
		}
	}
	if err := s.appendAccount(r.Context(), ss.UserID, rec, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// record checks the request against the spec and builds its record.
func (req *pusherRequest) record(userID, deviceID string) (*eventlog.PusherSet, error) {
	if req.AppID == nil || req.Pushkey == nil {
		return nil, matrix.MissingParam("app_id and pushkey are required")
	}
	if *req.AppID == "" || utf8.RuneCountInString(*req.AppID) > matrix.MaxPusherAppIDChars {
		return nil, matrix.InvalidParam("app_id must be 1 to %d characters", matrix.MaxPusherAppIDChars)
	}
	if *req.Pushkey == "" || len(*req.Pushkey) > matrix.MaxPushkeyBytes {
		return nil, matrix.InvalidParam("pushkey must be 1 to %d bytes", matrix.MaxPushkeyBytes)
	}
	rec := &eventlog.PusherSet{UserID: userID, DeviceID: deviceID, AppID: *req.AppID, Pushkey: *req.Pushkey}
	if req.Kind == nil {
		return rec, nil // deletion
	}
	switch *req.Kind {
	case "http":
	case "email":
		return nil, matrix.InvalidParam("email pushers are not supported: this server sends no email")
	default:
		return nil, matrix.InvalidParam("kind must be http, email or null")
	}
	if req.AppDisplayName == "" || req.DeviceDisplayName == "" || req.Lang == "" || len(req.Data) == 0 {
		return nil, matrix.MissingParam("app_display_name, device_display_name, lang and data are required")
	}
	for _, f := range []string{req.AppDisplayName, req.DeviceDisplayName, req.ProfileTag, req.Lang} {
		if len(f) > matrix.MaxPusherFieldBytes {
			return nil, matrix.InvalidParam("pusher strings are at most %d bytes", matrix.MaxPusherFieldBytes)
		}
	}
	if len(req.Data) > matrix.MaxPusherDataBytes {
		return nil, matrix.InvalidParam("data is at most %d bytes", matrix.MaxPusherDataBytes)
	}
	data, err := matrix.CanonicalJSON(req.Data)
	if err != nil {
		return nil, err
	}
	var d struct {
		URL    *string `json:"url"`
		Format any     `json:"format"`
	}
	if err := json.Unmarshal(data, &d); err != nil || data[0] != '{' {
		return nil, matrix.BadJSON("data must be an object")
	}
	if _, isString := d.Format.(string); d.Format != nil && !isString {
		// The sender reads format as a string; another type would be
		// stored and silently read as the full format.
		return nil, matrix.BadJSON("data.format must be a string")
	}
	if d.URL == nil {
		return nil, matrix.MissingParam("data.url is required for an http pusher")
	}
	if _, ok := matrix.PushGatewayURL(*d.URL); !ok {
		return nil, matrix.InvalidParam("data.url must be an http(s) URL with the path %s", matrix.PushGatewayNotifyPath)
	}
	rec.Kind, rec.AppDisplayName, rec.DeviceDisplayName = *req.Kind, req.AppDisplayName, req.DeviceDisplayName
	rec.ProfileTag, rec.Lang, rec.Data, rec.Append = req.ProfileTag, req.Lang, data, req.Append
	return rec, nil
}
