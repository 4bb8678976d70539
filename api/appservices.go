package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"strand/api/appservice"
	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// The client-server side of application services: the as_token
// authenticates the service, ?user_id= (and ?device_id=) choose the user
// it acts as, registration and login without passwords, exclusive
// namespaces, and the queries and pings that reach the service.

const appserviceKey ctxKey = iota + 100

// appserviceOf returns the service that authenticated the request, or nil.
func appserviceOf(r *http.Request) *appservice.Registration {
	reg, _ := r.Context().Value(appserviceKey).(*appservice.Registration)
	return reg
}

// appserviceSession resolves a request made with reg's as_token to the
// user it acts as: its sender, or the ?user_id= it names, which must be in
// its users namespaces and registered.
func (s *Server) appserviceSession(r *http.Request, reg *appservice.Registration) (store.Session, error) {
	q := r.URL.Query()
	uid := q.Get("user_id")
	if uid == "" {
		uid = reg.Sender
	} else {
		if _, err := matrix.ParseUserID(uid); err != nil {
			return store.Session{}, matrix.InvalidParam("invalid user_id: %v", err)
		}
		if !reg.OwnsUser(uid) {
			return store.Session{}, matrix.Forbidden("the application service may not act as %s: it is outside its namespaces", uid)
		}
	}
	u, err := lookupCaughtUp(r.Context(), s, eventlog.StreamAccounts, func(ctx context.Context) (store.User, error) {
		return s.store.User(ctx, uid)
	})
	if errors.Is(err, store.ErrNotFound) {
		return store.Session{}, matrix.Forbidden("user %s has not been registered", uid)
	}
	if err != nil {
		return store.Session{}, err
	}
	if u.Deactivated {
		return store.Session{}, matrix.Forbidden("user %s has been deactivated", uid)
	}
	ss := store.Session{UserID: uid}
	if dev := q.Get("device_id"); dev != "" {
		if _, err := s.store.Device(r.Context(), uid, dev); errors.Is(err, store.ErrNotFound) {
			return store.Session{}, matrix.Errorf("M_UNKNOWN_DEVICE", http.StatusBadRequest, "device %s is not a device of %s", dev, uid)
		} else if err != nil {
			return store.Session{}, err
		}
		ss.DeviceID = dev
	}
	return ss, nil
}

// appserviceExempt reports whether the request, made by an application
// service, is exempt from rate limits: always as its sender, and as its
// namespace users unless its registration says rate_limited.
func appserviceExempt(r *http.Request, ss store.Session) bool {
	reg := appserviceOf(r)
	return reg != nil && (ss.UserID == reg.Sender || !reg.LimitsUsers())
}

// requireASToken returns the service whose as_token the request carries:
// 401 without a token or with one that is no service's.
func (s *Server) requireASToken(r *http.Request) (*appservice.Registration, error) {
	tok, err := matrix.AccessToken(r)
	if err != nil {
		return nil, err
	}
	reg := s.cfg.Appservices.ByASToken(tok)
	if reg == nil {
		return nil, matrix.UnknownToken("the access token is not an application service's")
	}
	return reg, nil
}

func errExclusive(format string, a ...any) error {
	return matrix.Errorf("M_EXCLUSIVE", http.StatusBadRequest, format, a...)
}

// checkUserNamespace refuses a user ID that an application service holds
// exclusively, unless reg (the registering service, if any) may create it.
func (s *Server) checkUserNamespace(uid string, reg *appservice.Registration) error {
	if reg != nil {
		if !reg.OwnsUser(uid) {
			return errExclusive("%s is outside the application service's namespaces", uid)
		}
		if o := s.cfg.Appservices.ExclusiveUser(uid); o != nil && o != reg {
			return errExclusive("%s is in another application service's exclusive namespace", uid)
		}
		return nil
	}
	if s.cfg.Appservices.ExclusiveUser(uid) != nil {
		return errExclusive("%s is reserved by an application service", uid)
	}
	return nil
}

// checkAliasNamespace refuses to create an alias in a namespace an
// application service holds exclusively, and a service's alias outside its
// own namespaces.
func (s *Server) checkAliasNamespace(r *http.Request, alias string) error {
	owner := s.cfg.Appservices.ExclusiveAlias(alias)
	if reg := appserviceOf(r); reg != nil {
		if !reg.OwnsAlias(alias) {
			return errExclusive("%s is outside the application service's namespaces", alias)
		}
		if owner != nil && owner != reg {
			return errExclusive("%s is in another application service's exclusive namespace", alias)
		}
		return nil
	}
	if owner != nil {
		return errExclusive("%s is reserved by an application service", alias)
	}
	return nil
}

// registerAppservice is POST /register with type
// m.login.application_service: a user of the service's namespace, without
// password or user-interactive auth.
func (s *Server) registerAppservice(w http.ResponseWriter, r *http.Request, req *registerRequest) error {
	reg, err := s.requireASToken(r)
	if err != nil {
		return err
	}
	if req.Username == nil || *req.Username == "" {
		return matrix.MissingParam("username is required")
	}
	name := *req.Username
	var uid matrix.UserID
	if strings.HasPrefix(name, "@") {
		if uid, err = matrix.ParseUserID(name); err != nil || uid.Server() != s.cfg.ServerName {
			return matrix.InvalidUsername("invalid username %q", name)
		}
	} else if uid, err = matrix.NewUserID(name, s.cfg.ServerName); err != nil {
		return matrix.InvalidUsername("invalid username: %v", err)
	}
	if err := s.checkUserNamespace(string(uid), reg); err != nil {
		return err
	}
	if err := checkNewDevice(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	rec := &eventlog.UserRegistered{TS: time.Now().UnixMilli()}
	resp := map[string]any{"home_server": string(s.cfg.ServerName), "user_id": string(uid)}
	if !req.InhibitLogin {
		dev := registeredDevice(req.DeviceID, req.InitialDeviceDisplayName, rec.TS)
		var token string
		token, dev.TokenHash = newAccessToken()
		rec.Device = dev
		resp["access_token"] = token
		resp["device_id"] = dev.DeviceID
		if req.RefreshToken {
			s.withRefreshToken(dev, resp)
		}
	}
	if _, err := s.createUser(r.Context(), string(uid), rec); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// appserviceLoginUser is the user a /login with type
// m.login.application_service names, checked against the service's
// namespaces.
func (s *Server) appserviceLoginUser(r *http.Request, req *loginRequest) (store.User, error) {
	reg, err := s.requireASToken(r)
	if err != nil {
		return store.User{}, err
	}
	uid, err := s.userForIdentifier(req.Identifier, req.User)
	if err != nil {
		return store.User{}, err
	}
	if uid == "" || !reg.OwnsUser(uid) {
		return store.User{}, errExclusive("the application service may not log in as this user")
	}
	u, err := s.lookupLogin(r.Context(), uid)
	if err != nil {
		return store.User{}, err
	}
	if u.UserID == "" {
		return store.User{}, matrix.Forbidden("user %s has not been registered", uid)
	}
	if u.Deactivated {
		return store.User{}, matrix.Errorf("M_USER_DEACTIVATED", http.StatusForbidden, "this account has been deactivated")
	}
	return u, nil
}

// EnsureAppserviceSenders registers each service's sender_localpart user
// if it does not exist yet: through the log like every account, as the
// first record of the user's subject, so that any number of api processes
// starting at once register it once.
func (s *Server) EnsureAppserviceSenders(ctx context.Context) error {
	for _, reg := range s.cfg.Appservices.All() {
		taken, err := s.userTaken(ctx, reg.Sender)
		if err != nil {
			return err
		}
		if taken {
			continue
		}
		rec := &eventlog.UserRegistered{UserID: reg.Sender, TS: time.Now().UnixMilli()}
		err = s.appendAccount(ctx, reg.Sender, rec, eventlog.Expect(0))
		if err != nil && !errors.Is(err, eventlog.ErrConflict) {
			if me, ok := matrix.AsError(err); !ok || me.Code != "M_USER_IN_USE" {
				return err
			}
		}
		s.logger.Info("application service sender registered", "appservice", reg.ID, eventlog.LogUser, reg.Sender)
	}
	return nil
}

// queryUser asks the services whose namespaces hold uid whether it exists
// (they create it before answering yes) and reports whether one did.
func (s *Server) queryUser(ctx context.Context, uid string) bool {
	return s.queryServices(ctx, "user", uid, (*appservice.Registration).OwnsUser, s.asClient.QueryUser)
}

// queryAlias is queryUser for room aliases.
func (s *Server) queryAlias(ctx context.Context, alias string) bool {
	return s.queryServices(ctx, "alias", alias, (*appservice.Registration).OwnsAlias, s.asClient.QueryAlias)
}

// queryServices asks each service that owns name (of kind what) by query
// until one answers yes; a service that fails is logged and passed over.
func (s *Server) queryServices(ctx context.Context, what, name string, owns func(*appservice.Registration, string) bool,
	query func(context.Context, *appservice.Registration, string) (bool, error)) bool {
	for _, reg := range s.cfg.Appservices.All() {
		if !reg.HasURL() || !owns(reg, name) {
			continue
		}
		ok, err := query(ctx, reg, name)
		if err != nil {
			s.logger.Warn("application service query failed", "appservice", reg.ID, what, name, eventlog.LogErr, err)
			continue
		}
		if ok {
			return true
		}
	}
	return false
}

// pingTimeout bounds POST /appservice/{id}/ping's call to the service.
const pingTimeout = 10 * time.Second

// POST /_matrix/client/v1/appservice/{appserviceId}/ping
//
// appservicePing: the service asks the homeserver to call its /_matrix/app/v1/ping, to
// check that the homeserver can reach it with the right hs_token.
func (s *Server) appservicePing(w http.ResponseWriter, r *http.Request) error {
	tok, err := matrix.AccessToken(r)
	if err != nil {
		return err
	}
	reg := s.cfg.Appservices.ByASToken(tok)
	if reg == nil || reg.ID != pathVar(r, "appserviceId") {
		return matrix.Forbidden("the access token is not the as_token of application service %q", pathVar(r, "appserviceId"))
	}
	var req struct {
		TxnID *string `json:"transaction_id"`
	}
	if err := matrix.DecodeJSON(r, &req, true); err != nil {
		return err
	}
	if req.TxnID != nil {
		// The ID goes on to the service as its transaction's: bounded as
		// every client transaction ID is.
		if err := matrix.CheckMaxLength("transaction_id", *req.TxnID, matrix.MaxTxnIDBytes); err != nil {
			return err
		}
	}
	if !reg.HasURL() {
		return matrix.Errorf("M_URL_NOT_SET", http.StatusBadRequest, "the application service has no url")
	}
	txn := ""
	if req.TxnID != nil {
		txn = *req.TxnID
	}
	ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
	defer cancel()
	start := time.Now()
	err = s.asClient.Ping(ctx, reg, txn)
	var se *appservice.StatusError
	switch {
	case errors.As(err, &se):
		e := matrix.Errorf("M_BAD_STATUS", http.StatusBadGateway, "the application service answered %d", se.Status)
		e.Extra = map[string]any{"status": se.Status, "body": string(se.Body)}
		return e
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return matrix.Errorf("M_CONNECTION_TIMEOUT", http.StatusGatewayTimeout, "the application service did not answer in time")
	case err != nil:
		return matrix.Errorf("M_CONNECTION_FAILED", http.StatusBadGateway, "could not reach the application service")
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"duration_ms": time.Since(start).Milliseconds()})
	return nil
}

// thirdPartyTimeout bounds one third-party lookup at the services.
const thirdPartyTimeout = 10 * time.Second

// GET /_matrix/client/v3/thirdparty/protocols
//
// thirdPartyProtocols lists the protocols the services provide, each with
// the metadata its (first answering) service gives.
func (s *Server) thirdPartyProtocols(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), thirdPartyTimeout)
	defer cancel()
	out := map[string]json.RawMessage{}
	for _, p := range s.cfg.Appservices.Protocols() {
		if b, ok := s.protocolInfo(ctx, p); ok {
			out[p] = b
		}
	}
	matrix.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) protocolInfo(ctx context.Context, protocol string) (json.RawMessage, bool) {
	for _, reg := range s.cfg.Appservices.ProtocolOwners(protocol) {
		b, err := s.asClient.ThirdParty(ctx, reg, "/protocol/"+url.PathEscape(protocol), nil)
		if err != nil {
			s.logger.Warn("application service protocol query failed", "appservice", reg.ID, "protocol", protocol, eventlog.LogErr, err)
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(b, &obj) != nil {
			continue
		}
		return b, true
	}
	return nil, false
}

// GET /_matrix/client/v3/thirdparty/protocol/{protocol}
func (s *Server) thirdPartyProtocol(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), thirdPartyTimeout)
	defer cancel()
	b, ok := s.protocolInfo(ctx, pathVar(r, "protocol"))
	if !ok {
		return matrix.NotFound("protocol %q is not provided here", pathVar(r, "protocol"))
	}
	matrix.WriteJSON(w, http.StatusOK, b)
	return nil
}

// GET /_matrix/client/v3/thirdparty/location[/{protocol}]
// GET /_matrix/client/v3/thirdparty/user[/{protocol}]
//
// thirdPartyLookup answers the location and user lookups (kind is
// "location" or "user"): by protocol, from the services that provide it,
// or, without one, from every service. The answers are joined.
func (s *Server) thirdPartyLookup(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		q := url.Values{}
		for k, v := range r.URL.Query() {
			if k != "access_token" {
				q[k] = v
			}
		}
		var regs []*appservice.Registration
		path := "/" + kind
		if p, ok := pathVarOK(r, "protocol"); ok {
			regs = s.cfg.Appservices.ProtocolOwners(p)
			if len(regs) == 0 {
				return matrix.NotFound("protocol %q is not provided here", p)
			}
			path += "/" + url.PathEscape(p)
		} else {
			want := map[string]string{"location": "alias", "user": "userid"}[kind]
			if q.Get(want) == "" {
				return matrix.MissingParam("%s is required", want)
			}
			regs = s.cfg.Appservices.All()
		}
		ctx, cancel := context.WithTimeout(r.Context(), thirdPartyTimeout)
		defer cancel()
		out := []json.RawMessage{}
		for _, reg := range regs {
			if !reg.HasURL() {
				continue
			}
			b, err := s.asClient.ThirdParty(ctx, reg, path, q)
			if err != nil {
				s.logger.Warn("application service third-party lookup failed", "appservice", reg.ID, "path", path, eventlog.LogErr, err)
				continue
			}
			var list []json.RawMessage
			if json.Unmarshal(b, &list) == nil {
				out = append(out, list...)
			}
		}
		matrix.WriteJSON(w, http.StatusOK, out)
		return nil
	}
}

// maxTS is the largest origin_server_ts canonical JSON can carry.
const maxTS = 1<<53 - 1

// massagedTS is the ?ts= an application service may give /send and
// /state to set the event's origin_server_ts (0: none, the server's
// clock). For anyone else the parameter means nothing and is ignored.
func massagedTS(r *http.Request) (int64, error) {
	if appserviceOf(r) == nil || !r.URL.Query().Has("ts") {
		return 0, nil
	}
	ts, err := strconv.ParseInt(r.URL.Query().Get("ts"), 10, 64)
	if err != nil || ts <= 0 || ts > maxTS {
		return 0, matrix.InvalidParam("ts must be a positive integer of milliseconds")
	}
	return ts, nil
}

// requireDevice refuses a request that needs the caller's device when an
// application service acts without naming one (?device_id=): every access
// token has a device, an as_token has none.
func requireDevice(r *http.Request) error {
	if session(r).DeviceID == "" {
		return matrix.MissingParam("this request needs a device: an application service must give device_id")
	}
	return nil
}
