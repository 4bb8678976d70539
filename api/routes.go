package api

import "net/http"

// clientPrefixes are the two API versions Strand serves: the classic
// guide's r0 paths and the current v3 ones. Every client route exists under
// both.
var clientPrefixes = []string{"/_matrix/client/r0", "/_matrix/client/v3"}

func (s *Server) routes() {
	r := s.router
	// Unversioned and other fixed paths.
	r.Handle("/_matrix/client/versions", s.wrap(s.versions)).Methods(http.MethodGet)
	r.Handle("/.well-known/matrix/client", s.wrap(s.wellKnown)).Methods(http.MethodGet)
	r.Handle("/_matrix/static/client/login/", http.HandlerFunc(s.loginFallback)).Methods(http.MethodGet)
	r.Handle("/_synapse/admin/v1/register", s.wrap(s.adminRegisterNonce)).Methods(http.MethodGet)
	r.Handle("/_synapse/admin/v1/register", s.wrap(s.adminRegister)).Methods(http.MethodPost)

	type route struct {
		method, path string
		h            handlerFunc
		auth         bool
	}
	routes := []route{
		{http.MethodGet, "/register", s.registerFlows, false},
		{http.MethodPost, "/register", s.register, false},
		{http.MethodGet, "/register/available", s.registerAvailable, false},
		{http.MethodGet, "/register/m.login.registration_token/validity", s.registrationTokenValidity, false},
		{http.MethodGet, "/login", s.loginFlows, false},
		{http.MethodPost, "/login", s.login, false},
		{http.MethodPost, "/logout", s.logout, true},
		{http.MethodPost, "/logout/all", s.logoutAll, true},
		{http.MethodGet, "/account/whoami", s.whoami, true},
		{http.MethodPost, "/account/password", s.changePassword, true},
		{http.MethodPost, "/account/deactivate", s.deactivate, true},
		{http.MethodGet, "/capabilities", s.capabilities, true},
		{http.MethodGet, "/devices", s.listDevices, true},
		{http.MethodGet, "/devices/{deviceId}", s.getDevice, true},
		{http.MethodPut, "/devices/{deviceId}", s.updateDevice, true},
		{http.MethodDelete, "/devices/{deviceId}", s.deleteDevice, true},
		{http.MethodPost, "/delete_devices", s.deleteDevices, true},
		{http.MethodPost, "/user/{userId}/filter", s.createFilter, true},
		{http.MethodGet, "/user/{userId}/filter/{filterId}", s.getFilter, true},
		{http.MethodPut, "/user/{userId}/account_data/{type}", s.putAccountData, true},
		{http.MethodGet, "/user/{userId}/account_data/{type}", s.getAccountData, true},
		{http.MethodPut, "/user/{userId}/rooms/{roomId}/account_data/{type}", s.putAccountData, true},
		{http.MethodGet, "/user/{userId}/rooms/{roomId}/account_data/{type}", s.getAccountData, true},
	}
	for _, prefix := range clientPrefixes {
		for _, rt := range routes {
			h := rt.h
			if rt.auth {
				h = s.authenticated(h)
			}
			r.Handle(prefix+rt.path, s.wrap(h)).Methods(rt.method)
		}
	}
}
