package api

import (
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gorilla/mux"
)

// The hot routes give a request the route and variables the router would
// give it, and leave every other request to the router; the send and
// sync paths are hot.
func TestHotRoutesAgreeWithRouter(t *testing.T) {
	s := New(Config{}, nil, nil, nil, slog.New(slog.DiscardHandler))
	s.Mount("/sync", http.NotFoundHandler())
	for _, tc := range []struct {
		method, target string
		hot            bool
	}{
		{"PUT", "/_matrix/client/v3/rooms/!r:hs/send/m.room.message/t1", true},
		{"PUT", "/_matrix/client/r0/rooms/!r:hs/send/m.room.message/t1", true},
		{"POST", "/_matrix/client/v3/rooms/!r:hs/send/m.room.message", true},
		{"PUT", "/_matrix/client/v3/rooms/%21r%3Ahs/send/m.room.message/a%2Fb", true},
		{"PUT", "/_matrix/client/v3/rooms/!r:hs/send/m.room.message/", false},
		{"PUT", "/_matrix/client/v3/rooms/!r:hs/send/m.room.message/t1/", false},
		{"PUT", "/_matrix/client/v3/rooms/!r:hs/send/m.room.message/t1/x", false},
		{"PUT", "/_matrix/client/v3/rooms//send/m.room.message/t1", false},
		{"PUT", "/_matrix/client/v3/rooms/!r:hs/send//t1", false},
		{"GET", "/_matrix/client/v3/rooms/!r:hs/send/m.room.message/t1", false},
		{"PUT", "/_matrix/client/v3/rooms/!r:hs/state/m.room.name/", false},
		{"PUT", "/_matrix/client/v3/rooms/!r:hs/redact/$e/t", false},
		{"PUT", "/_matrix/client/v4/rooms/!r:hs/send/m.room.message/t1", false},
		{"PUT", "/_matrix/client/v3/rooms/!r:hs/../send/m.room.message/t1", false},
		{"GET", "/_matrix/client/v3/sync", true},
		{"POST", "/_matrix/client/r0/sync", true},
		{"GET", "/_matrix/client/v3/sync/", false},
		{"GET", "/_matrix/client/v3/syncx", false},
		{"GET", "/_matrix/client/v3/account/whoami", false},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		rt, vars, ok := s.hot.match(r)
		if ok != tc.hot {
			t.Errorf("%s %s: hot %v, want %v", tc.method, tc.target, ok, tc.hot)
		}
		var m mux.RouteMatch
		if !s.router.Match(r, &m) || m.MatchErr != nil {
			if ok {
				t.Errorf("%s %s: hot route %s, but the router matches nothing", tc.method, tc.target, rt.template)
			}
			continue
		}
		tmpl, _ := m.Route.GetPathTemplate()
		if ok && (tmpl != rt.template || !maps.Equal(vars, m.Vars) && len(vars)+len(m.Vars) > 0) {
			t.Errorf("%s %s: hot route %s %v, router %s %v", tc.method, tc.target, rt.template, vars, tmpl, m.Vars)
		}
	}
}
