package api

import (
	"net/http"
	"strings"

	"strand/eventlog/matrix"
)

// clientPrefixes are the two API versions Strand serves: the classic
// guide's r0 paths and the current v3 ones. Every client route exists under
// both.
var clientPrefixes = []string{"/_matrix/client/r0", "/_matrix/client/v3"}

// hotPaths are the client routes the dispatcher matches before the
// router (hotRoutes): the send path's.
var hotPaths = map[string]bool{
	"/rooms/{roomId}/send/{eventType}/{txnId}": true,
	"/rooms/{roomId}/send/{eventType}":         true,
}

// limited spends a token of limit k for the user before h runs.
func (s *Server) limited(k limitKind, h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.limitUser(r, k); err != nil {
			return err
		}
		return h(w, r)
	}
}

func (s *Server) routes() {
	r := s.router
	// Unversioned and other fixed paths.
	r.Handle("/_matrix/client/versions", s.wrap(s.versions)).Methods(http.MethodGet)
	r.Handle("/", s.wrap(s.root)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/.well-known/matrix/client", s.wrap(s.wellKnown)).Methods(http.MethodGet)
	r.Handle("/_matrix/static/client/login/", http.HandlerFunc(s.loginFallback)).Methods(http.MethodGet)
	// Registration token validity is a v1 endpoint in the spec (served
	// under r0 and v3 too, where older clients look for it).
	r.Handle("/_matrix/client/v1/register/m.login.registration_token/validity", s.wrap(s.registrationTokenValidity)).Methods(http.MethodGet)
	// Refresh is a v3 endpoint; some clients ask for it under v1, where
	// it was first specified (MSC2918).
	r.Handle("/_matrix/client/v1/refresh", s.wrap(s.refresh)).Methods(http.MethodPost)
	r.Handle("/_matrix/client/v1/appservice/{appserviceId}/ping", s.wrap(s.appservicePing)).Methods(http.MethodPost)
	// The space hierarchy is a v1 endpoint only.
	r.Handle("/_matrix/client/v1/rooms/{roomId}/hierarchy", s.wrap(s.authenticated(s.hierarchy))).Methods(http.MethodGet)
	r.Handle("/_synapse/admin/v1/register", s.wrap(s.adminRegisterNonce)).Methods(http.MethodGet)
	r.Handle("/_synapse/admin/v1/register", s.wrap(s.adminRegister)).Methods(http.MethodPost)
	r.Handle("/_synapse/admin/v1/reset_password/{userId}", s.wrap(s.authenticated(requireAdmin(s.adminResetPassword)))).Methods(http.MethodPost)
	r.Handle("/_synapse/admin/v1/send_server_notice", s.wrap(s.authenticated(requireAdmin(s.sendServerNotice)))).Methods(http.MethodPost)
	r.Handle("/_synapse/admin/v1/send_server_notice/{txnId}", s.wrap(s.authenticated(requireAdmin(s.sendServerNotice)))).Methods(http.MethodPut)
	r.Handle("/_synapse/admin/v1/deactivate/{userId}", s.wrap(s.authenticated(requireAdmin(s.adminDeactivate)))).Methods(http.MethodPost)

	// The server-server API's key endpoints and version (Strand's signing
	// key is published though it does not federate yet).
	r.Handle("/_matrix/key/v2/server", s.wrap(s.getServerKeys)).Methods(http.MethodGet)
	r.Handle("/_matrix/key/v2/server/{keyId}", s.wrap(s.getServerKeys)).Methods(http.MethodGet)
	r.Handle("/_matrix/key/v2/query", s.wrap(s.queryServerKeys)).Methods(http.MethodPost)
	r.Handle("/_matrix/key/v2/query/{serverName}", s.wrap(s.queryServerKeysOf)).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/version", s.wrap(s.federationVersion)).Methods(http.MethodGet)

	// The media repository, under the legacy media paths (download and
	// thumbnails without authentication, as there) and the authenticated
	// client v1 ones.
	for _, prefix := range []string{"/_matrix/media/r0", "/_matrix/media/v3"} {
		r.Handle(prefix+"/upload", s.wrap(s.authenticated(s.limited(limitUpload, s.uploadMedia)))).Methods(http.MethodPost)
		r.Handle(prefix+"/upload/{serverName}/{mediaId}", s.wrap(s.authenticated(s.limited(limitUpload, s.uploadMediaTo)))).Methods(http.MethodPut)
		r.Handle(prefix+"/config", s.wrap(s.authenticated(s.mediaConfig))).Methods(http.MethodGet)
		r.Handle(prefix+"/preview_url", s.wrap(s.authenticated(s.previewURL))).Methods(http.MethodGet)
		r.Handle(prefix+"/download/{serverName}/{mediaId}", s.wrap(s.downloadMedia)).Methods(http.MethodGet, http.MethodHead)
		r.Handle(prefix+"/download/{serverName}/{mediaId}/{fileName}", s.wrap(s.downloadMedia)).Methods(http.MethodGet, http.MethodHead)
		r.Handle(prefix+"/thumbnail/{serverName}/{mediaId}", s.wrap(s.thumbnailMedia)).Methods(http.MethodGet)
	}
	// Asynchronous uploads create their mxc:// URI under media/v1.
	r.Handle("/_matrix/media/v1/create", s.wrap(s.authenticated(s.limited(limitUpload, s.createMedia)))).Methods(http.MethodPost)
	// Relations and threads exist only as v1 endpoints.
	r.Handle("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}", s.wrap(s.authenticated(s.relations))).Methods(http.MethodGet)
	r.Handle("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}", s.wrap(s.authenticated(s.relations))).Methods(http.MethodGet)
	r.Handle("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", s.wrap(s.authenticated(s.relations))).Methods(http.MethodGet)
	r.Handle("/_matrix/client/v1/rooms/{roomId}/threads", s.wrap(s.authenticated(s.threads))).Methods(http.MethodGet)
	r.Handle("/_matrix/client/v1/room_summary/{roomIdOrAlias}", s.wrap(s.authenticated(s.roomSummary))).Methods(http.MethodGet)
	r.Handle("/_matrix/client/v1/media/config", s.wrap(s.authenticated(s.mediaConfig))).Methods(http.MethodGet)
	r.Handle("/_matrix/client/v1/media/preview_url", s.wrap(s.authenticated(s.previewURL))).Methods(http.MethodGet)
	r.Handle("/_matrix/client/v1/media/download/{serverName}/{mediaId}", s.wrap(s.authenticated(s.downloadMedia))).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", s.wrap(s.authenticated(s.downloadMedia))).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", s.wrap(s.authenticated(s.thumbnailMedia))).Methods(http.MethodGet)
	// The rest of the authenticated media namespace asks for a token
	// before saying a path is unknown, as the routes above do: a client
	// without one learns it needs one (an mxc:// URI pasted whole into a
	// download path gets 401, not 404). GET and HEAD only, so another
	// method on a known path stays 405.
	r.PathPrefix("/_matrix/client/v1/media/").Handler(s.wrap(s.authenticated(func(w http.ResponseWriter, r *http.Request) error {
		return matrix.Unrecognized("unrecognized request: %s %s", r.Method, r.URL.Path)
	}))).Methods(http.MethodGet, http.MethodHead)

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
		{http.MethodPost, "/refresh", s.refresh, false},
		{http.MethodPost, "/logout", s.logout, true},
		{http.MethodGet, "/account/3pid", s.threePIDs, true},
		{http.MethodPost, "/search", s.search, true},
		{http.MethodPost, "/keys/upload", s.uploadKeys, true},
		{http.MethodPost, "/keys/query", s.queryKeys, true},
		{http.MethodPost, "/keys/claim", s.claimKeys, true},
		{http.MethodGet, "/keys/changes", s.keyChanges, true},
		{http.MethodPost, "/keys/device_signing/upload", s.uploadCrossSigningKeys, true},
		{http.MethodPost, "/keys/signatures/upload", s.uploadSignatures, true},
		{http.MethodPost, "/room_keys/version", s.createBackupVersion, true},
		{http.MethodGet, "/room_keys/version", s.getBackupVersion, true},
		{http.MethodGet, "/room_keys/version/{version}", s.getBackupVersion, true},
		{http.MethodPut, "/room_keys/version/{version}", s.updateBackupVersion, true},
		{http.MethodDelete, "/room_keys/version/{version}", s.deleteBackupVersion, true},
		{http.MethodPut, "/room_keys/keys", s.putRoomKeys, true},
		{http.MethodPut, "/room_keys/keys/{roomId}", s.putRoomKeys, true},
		{http.MethodPut, "/room_keys/keys/{roomId}/{sessionId}", s.putRoomKeys, true},
		{http.MethodGet, "/room_keys/keys", s.getRoomKeys, true},
		{http.MethodGet, "/room_keys/keys/{roomId}", s.getRoomKeys, true},
		{http.MethodGet, "/room_keys/keys/{roomId}/{sessionId}", s.getRoomKeys, true},
		{http.MethodDelete, "/room_keys/keys", s.deleteRoomKeys, true},
		{http.MethodDelete, "/room_keys/keys/{roomId}", s.deleteRoomKeys, true},
		{http.MethodDelete, "/room_keys/keys/{roomId}/{sessionId}", s.deleteRoomKeys, true},
		{http.MethodPut, "/sendToDevice/{eventType}/{txnId}", s.sendToDevice, true},
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

		{http.MethodPost, "/createRoom", s.limited(limitCreateRoom, s.createRoom), true},
		{http.MethodPut, "/rooms/{roomId}/send/{eventType}/{txnId}", s.limited(limitMessage, s.send), true},
		{http.MethodPost, "/rooms/{roomId}/send/{eventType}", s.limited(limitMessage, s.send), true},
		{http.MethodPut, "/rooms/{roomId}/state/{eventType}", s.limited(limitMessage, s.putState), true},
		{http.MethodPut, "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", s.limited(limitMessage, s.putState), true},
		{http.MethodGet, "/rooms/{roomId}/state/{eventType}", s.getStateEvent, true},
		{http.MethodGet, "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", s.getStateEvent, true},
		{http.MethodGet, "/rooms/{roomId}/state", s.roomState, true},
		{http.MethodPut, "/rooms/{roomId}/redact/{eventId}/{txnId}", s.limited(limitMessage, s.redactEvent), true},
		{http.MethodPost, "/rooms/{roomId}/redact/{eventId}", s.limited(limitMessage, s.redactEvent), true},
		{http.MethodPost, "/rooms/{roomId}/invite", s.invite, true},
		{http.MethodPost, "/rooms/{roomId}/join", s.limited(limitJoin, s.join), true},
		{http.MethodPost, "/join/{roomIdOrAlias}", s.limited(limitJoin, s.join), true},
		{http.MethodPost, "/knock/{roomIdOrAlias}", s.limited(limitJoin, s.knock), true},
		{http.MethodPost, "/rooms/{roomId}/leave", s.leave, true},
		{http.MethodPost, "/rooms/{roomId}/forget", s.forget, true},
		{http.MethodPost, "/rooms/{roomId}/upgrade", s.limited(limitCreateRoom, s.upgradeRoom), true},
		{http.MethodPost, "/rooms/{roomId}/kick", s.moderate("kick", kickable), true},
		{http.MethodPost, "/rooms/{roomId}/ban", s.moderate("ban", nil), true},
		{http.MethodPost, "/rooms/{roomId}/unban", s.moderate("unban", unbannable), true},
		{http.MethodGet, "/rooms/{roomId}/members", s.members, true},
		{http.MethodGet, "/rooms/{roomId}/joined_members", s.joinedMembers, true},
		{http.MethodGet, "/rooms/{roomId}/messages", s.messages, true},
		{http.MethodGet, "/rooms/{roomId}/context/{eventId}", s.eventContext, true},
		{http.MethodGet, "/rooms/{roomId}/event/{eventId}", s.getEvent, true},
		{http.MethodGet, "/rooms/{roomId}/aliases", s.roomAliases, true},
		{http.MethodGet, "/joined_rooms", s.joinedRooms, true},
		{http.MethodPut, "/directory/room/{roomAlias}", s.putAlias, true},
		{http.MethodGet, "/directory/room/{roomAlias}", s.getAlias, false},
		{http.MethodDelete, "/directory/room/{roomAlias}", s.deleteAlias, true},
		{http.MethodGet, "/directory/list/room/{roomId}", s.getDirectoryVisibility, false},
		{http.MethodPut, "/directory/list/room/{roomId}", s.putDirectoryVisibility, true},
		{http.MethodGet, "/publicRooms", s.publicRooms, false},
		{http.MethodPost, "/publicRooms", s.publicRooms, true},
		{http.MethodPut, "/rooms/{roomId}/typing/{userId}", s.typing, true},
		{http.MethodPost, "/rooms/{roomId}/receipt/{receiptType}/{eventId}", s.receipt, true},
		{http.MethodPost, "/rooms/{roomId}/read_markers", s.readMarkers, true},
		{http.MethodPost, "/rooms/{roomId}/report/{eventId}", s.limited(limitMessage, s.reportEvent), true},
		{http.MethodPost, "/rooms/{roomId}/report", s.limited(limitMessage, s.reportRoom), true},
		{http.MethodPost, "/users/{userId}/report", s.limited(limitMessage, s.reportUser), true},
		{http.MethodGet, "/presence/{userId}/status", s.getPresence, true},
		{http.MethodPut, "/presence/{userId}/status", s.putPresence, true},
		{http.MethodGet, "/user/{userId}/rooms/{roomId}/tags", s.getTags, true},
		{http.MethodPut, "/user/{userId}/rooms/{roomId}/tags/{tag}", s.putTag, true},
		{http.MethodDelete, "/user/{userId}/rooms/{roomId}/tags/{tag}", s.deleteTag, true},
		{http.MethodPost, "/user_directory/search", s.searchUserDirectory, true},
		{http.MethodGet, "/voip/turnServer", s.turnServer, true},
		{http.MethodGet, "/thirdparty/protocols", s.thirdPartyProtocols, true},
		{http.MethodGet, "/thirdparty/protocol/{protocol}", s.thirdPartyProtocol, true},
		{http.MethodGet, "/thirdparty/location/{protocol}", s.thirdPartyLookup("location"), true},
		{http.MethodGet, "/thirdparty/user/{protocol}", s.thirdPartyLookup("user"), true},
		{http.MethodGet, "/thirdparty/location", s.thirdPartyLookup("location"), true},
		{http.MethodGet, "/thirdparty/user", s.thirdPartyLookup("user"), true},
		{http.MethodGet, "/pushers", s.getPushers, true},
		{http.MethodPost, "/pushers/set", s.setPusher, true},
		{http.MethodGet, "/notifications", s.getNotifications, true},
		{http.MethodGet, "/pushrules/", s.getPushRules, true},
		{http.MethodGet, "/pushrules/global/", s.getPushRules, true},
		{http.MethodGet, "/pushrules/{scope}/{kind}/{ruleId}", s.getPushRule, true},
		{http.MethodGet, "/pushrules/{scope}/{kind}/{ruleId}/{attr}", s.getPushRule, true},
		{http.MethodPut, "/pushrules/{scope}/{kind}/{ruleId}", s.putPushRule, true},
		{http.MethodPut, "/pushrules/{scope}/{kind}/{ruleId}/{attr}", s.putPushRule, true},
		{http.MethodDelete, "/pushrules/{scope}/{kind}/{ruleId}", s.deletePushRule, true},
		{http.MethodGet, "/profile/{userId}", s.getProfile(""), false},
		{http.MethodGet, "/profile/{userId}/displayname", s.getProfile("displayname"), false},
		{http.MethodGet, "/profile/{userId}/avatar_url", s.getProfile("avatar_url"), false},
		{http.MethodPut, "/profile/{userId}/displayname", s.putProfile("displayname"), true},
		{http.MethodPut, "/profile/{userId}/avatar_url", s.putProfile("avatar_url"), true},
	}
	// Key backup predates v3: clients still ask for its unstable path.
	for _, rt := range routes {
		if strings.HasPrefix(rt.path, "/room_keys/") {
			r.Handle("/_matrix/client/unstable"+rt.path, s.wrap(s.authenticated(rt.h))).Methods(rt.method)
		}
	}
	for _, prefix := range clientPrefixes {
		for _, rt := range routes {
			h := rt.h
			if rt.auth {
				h = s.authenticated(h)
			}
			r.Handle(prefix+rt.path, s.wrap(h)).Methods(rt.method)
			if hotPaths[rt.path] {
				s.hot.add(rt.method, prefix+rt.path, s.wrap(h))
			}
		}
	}
}
