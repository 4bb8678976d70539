package api

import (
	"errors"
	"net/http"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// GET /_matrix/client/v3/login
func (s *Server) loginFlows(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, map[string]any{
		"flows": []map[string]any{{"type": "m.login.password"}, {"type": "m.login.application_service"}},
	})
	return nil
}

type loginRequest struct {
	Type                     string      `json:"type"`
	Identifier               *identifier `json:"identifier"`
	User                     string      `json:"user"`
	Password                 *string     `json:"password"`
	DeviceID                 *string     `json:"device_id"`
	InitialDeviceDisplayName *string     `json:"initial_device_display_name"`
	RefreshToken             bool        `json:"refresh_token"`
}

// POST /_matrix/client/v3/login
func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.Type == "" {
		return matrix.MissingParam("type is required")
	}
	if req.Type == "m.login.application_service" {
		u, err := s.appserviceLoginUser(r, &req)
		if err != nil {
			return err
		}
		return s.loginAs(w, r, &req, u)
	}
	if req.Type != "m.login.password" {
		return matrix.Errorf("M_UNKNOWN", http.StatusBadRequest, "unsupported login type %q", req.Type)
	}
	if req.Password == nil {
		return matrix.MissingParam("password is required")
	}
	uid, err := s.userForIdentifier(req.Identifier, req.User)
	if err != nil {
		return err
	}
	// Before the password check, which costs a core a quarter of a
	// second whether or not the account exists.
	if err := s.limitLogin(r, uid); err != nil {
		return err
	}
	u, err := s.lookupLogin(r.Context(), uid)
	if err != nil {
		return err
	}
	// One answer for an unknown user and a wrong password, so that logins
	// do not reveal which accounts exist.
	ok := s.checkPassword(u.PasswordHash, *req.Password)
	s.loginResult(r, uid, ok)
	if !ok {
		return matrix.Forbidden("invalid username or password")
	}
	if u.Deactivated {
		return matrix.Errorf("M_USER_DEACTIVATED", http.StatusForbidden, "this account has been deactivated")
	}
	return s.loginAs(w, r, &req, u)
}

// loginAs gives u a new device and access token.
func (s *Server) loginAs(w http.ResponseWriter, r *http.Request, req *loginRequest, u store.User) error {
	if err := checkNewDevice(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	dev := &eventlog.DeviceCreated{UserID: u.UserID, DeviceID: newDeviceID(), TS: time.Now().UnixMilli()}
	if req.DeviceID != nil && *req.DeviceID != "" {
		dev.DeviceID = *req.DeviceID
	}
	if req.InitialDeviceDisplayName != nil {
		dev.DisplayName = *req.InitialDeviceDisplayName
	}
	token, hash := newAccessToken()
	dev.TokenHash = hash
	resp := map[string]any{
		"user_id":      u.UserID,
		"access_token": token,
		"device_id":    dev.DeviceID,
		"home_server":  string(s.cfg.ServerName),
		"well_known":   s.wellKnownBody(),
	}
	if req.RefreshToken {
		s.withRefreshToken(dev, resp)
	}
	if err := s.appendAccount(r.Context(), u.UserID, dev, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// checkNewDevice bounds the device ID and display name a client chose
// for a new device (register, login): both become part of the log for
// good, and the device ID is keyed in every device and e2ee table.
func checkNewDevice(deviceID, displayName *string) error {
	if deviceID != nil {
		if err := matrix.CheckMaxLength("device_id", *deviceID, matrix.MaxDeviceIDBytes); err != nil {
			return err
		}
	}
	if displayName != nil {
		return matrix.CheckMaxLength("initial_device_display_name", *displayName, matrix.MaxDisplayNameBytes)
	}
	return nil
}

// POST /_matrix/client/v3/logout
func (s *Server) logout(w http.ResponseWriter, r *http.Request) error {
	if err := requireDevice(r); err != nil {
		return err
	}
	ss := session(r)
	rec := &eventlog.DevicesDeleted{UserID: ss.UserID, DeviceIDs: []string{ss.DeviceID}}
	if err := s.appendAccount(r.Context(), ss.UserID, rec, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /_matrix/client/v3/logout/all
func (s *Server) logoutAll(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	rec := &eventlog.DevicesDeleted{UserID: ss.UserID, All: true}
	if err := s.appendAccount(r.Context(), ss.UserID, rec, nil); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /_matrix/client/v3/account/whoami
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"user_id": ss.UserID, "device_id": ss.DeviceID, "is_guest": false})
	return nil
}

type passwordRequest struct {
	Auth          *authData `json:"auth"`
	NewPassword   *string   `json:"new_password"`
	LogoutDevices *bool     `json:"logout_devices"`
}

// POST /_matrix/client/v3/account/password
func (s *Server) changePassword(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	var req passwordRequest
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.NewPassword == nil {
		return matrix.MissingParam("new_password is required")
	}
	if err := s.validatePassword(*req.NewPassword); err != nil {
		return err
	}
	if err := s.requirePassword(r.Context(), ss.UserID, req.Auth); err != nil {
		return err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := s.setPassword(r.Context(), ss.UserID, *req.NewPassword, logout, ss.DeviceID); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

type deactivateRequest struct {
	Auth  *authData `json:"auth"`
	Erase bool      `json:"erase"`
}

// POST /_matrix/client/v3/account/deactivate
func (s *Server) deactivate(w http.ResponseWriter, r *http.Request) error {
	ss := session(r)
	var req deactivateRequest
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	if err := s.requirePassword(r.Context(), ss.UserID, req.Auth); err != nil {
		return err
	}
	if err := s.deactivateAccount(r.Context(), ss.UserID); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"id_server_unbind_result": "no-support"})
	return nil
}

// devices

func deviceJSON(d store.Device) map[string]any {
	m := map[string]any{"device_id": d.DeviceID}
	if d.DisplayName != "" {
		m["display_name"] = d.DisplayName
	}
	return m
}

// GET /_matrix/client/v3/devices
func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) error {
	ds, err := s.store.Devices(r.Context(), session(r).UserID)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		out = append(out, deviceJSON(d))
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"devices": out})
	return nil
}

func (s *Server) findDevice(r *http.Request) (store.Device, error) {
	d, err := s.store.Device(r.Context(), session(r).UserID, pathVar(r, "deviceId"))
	if errors.Is(err, store.ErrNotFound) {
		return d, matrix.NotFound("no such device")
	}
	return d, err
}

// GET /_matrix/client/v3/devices/{deviceId}
func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.findDevice(r)
	if err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, deviceJSON(d))
	return nil
}

// PUT /_matrix/client/v3/devices/{deviceId}
func (s *Server) updateDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	if req.DisplayName != nil {
		if err := matrix.CheckMaxLength("display_name", *req.DisplayName, matrix.MaxDisplayNameBytes); err != nil {
			return err
		}
	}
	d, err := s.findDevice(r)
	if err != nil {
		return err
	}
	if req.DisplayName != nil {
		uid := session(r).UserID
		rec := &eventlog.DeviceUpdated{UserID: uid, DeviceID: d.DeviceID, DisplayName: *req.DisplayName}
		if err := s.appendAccount(r.Context(), uid, rec, nil); err != nil {
			return err
		}
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /_matrix/client/v3/devices/{deviceId}
func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth *authData `json:"auth"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	d, err := s.findDevice(r)
	if err != nil {
		return err
	}
	return s.removeDevices(w, r, []string{d.DeviceID}, req.Auth)
}

// POST /_matrix/client/v3/delete_devices
func (s *Server) deleteDevices(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Devices *[]string `json:"devices"`
		Auth    *authData `json:"auth"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	if req.Devices == nil {
		return matrix.MissingParam("devices is required")
	}
	for _, id := range *req.Devices {
		if err := matrix.CheckLength("a device ID", id, matrix.MaxDeviceIDBytes); err != nil {
			return err
		}
	}
	return s.removeDevices(w, r, *req.Devices, req.Auth)
}

func (s *Server) removeDevices(w http.ResponseWriter, r *http.Request, ids []string, auth *authData) error {
	uid := session(r).UserID
	if err := s.requirePassword(r.Context(), uid, auth); err != nil {
		return err
	}
	if len(ids) > 0 {
		rec := &eventlog.DevicesDeleted{UserID: uid, DeviceIDs: ids}
		if err := s.appendAccount(r.Context(), uid, rec, nil); err != nil {
			return err
		}
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}
