package api

import (
	"net/http"

	"strand/eventlog/matrix"
)

// specVersions are the spec versions whose client-server API Strand
// claims. Clients use this to decide which endpoints to call.
var specVersions = []string{"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2"}

// unstableFeatures are the MSC flags of features Strand implements that
// clients look for in /versions before they use them.
var unstableFeatures = map[string]bool{
	// Cross-signing keys and signatures (/keys/device_signing/upload,
	// /keys/signatures/upload): Element and Riot decide on cross-signing
	// by this flag.
	"org.matrix.e2e_cross_signing": true,
	// Private read receipts (m.read.private) as the stable receipt type.
	"org.matrix.msc2285.stable": true,
	// Authenticated media under /_matrix/client/v1/media.
	"org.matrix.msc3916.stable": true,
}

// GET /_matrix/client/versions
func (s *Server) versions(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, map[string]any{
		"versions":          specVersions,
		"unstable_features": unstableFeatures,
	})
	return nil
}

// rootPage is what a browser pointed at the server's base URL sees.
const rootPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Strand</title></head>
<body><h1>Strand</h1><p>This is a <a href="https://matrix.org">Matrix</a> homeserver.
Use a Matrix client to connect to it.</p></body></html>
`

// GET /
func (s *Server) root(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	_, _ = w.Write([]byte(rootPage))
	return nil
}

func (s *Server) wellKnownBody() map[string]any {
	return map[string]any{"m.homeserver": map[string]string{"base_url": s.cfg.PublicBaseURL}}
}

// GET /.well-known/matrix/client
func (s *Server) wellKnown(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, s.wellKnownBody())
	return nil
}

// GET /_matrix/client/v3/capabilities
func (s *Server) capabilities(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.change_password":    map[string]bool{"enabled": true},
		"m.set_displayname":    map[string]bool{"enabled": true},
		"m.set_avatar_url":     map[string]bool{"enabled": true},
		"m.3pid_changes":       map[string]bool{"enabled": false},
		"m.get_login_token":    map[string]bool{"enabled": false},
		"m.room_versions":      s.roomVersionsCapability(),
		"m.account_moderation": map[string]bool{"suspend": false, "lock": false},
	}})
	return nil
}

func (s *Server) roomVersionsCapability() map[string]any {
	return map[string]any{
		"default":   s.cfg.DefaultRoomVersion,
		"available": matrix.SupportedRoomVersions(),
	}
}
