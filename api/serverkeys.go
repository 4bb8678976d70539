package api

import (
	"encoding/json"
	"net/http"
	"runtime/debug"
	"time"

	"strand/eventlog/matrix"
)

// Strand does not federate yet, but it has a server signing key (every
// event it creates is signed with it), and the server-server API's key
// endpoints publish that key so events can be verified. The federation
// version endpoint says which server this is.

// serverKeysValidity is how long a published key response may be cached.
const serverKeysValidity = 24 * time.Hour

// serverKeys signs and returns the server's key response.
func (s *Server) serverKeys() (json.RawMessage, error) {
	key := s.cfg.SigningKey
	if key == nil {
		return nil, matrix.NotFound("this server has no signing key")
	}
	body, err := json.Marshal(map[string]any{
		"server_name":     string(s.cfg.ServerName),
		"valid_until_ts":  time.Now().Add(serverKeysValidity).UnixMilli(),
		"verify_keys":     map[string]any{string(key.ID()): map[string]string{"key": key.PublicBase64()}},
		"old_verify_keys": map[string]any{},
	})
	if err != nil {
		return nil, err
	}
	return matrix.SignJSON(body, string(s.cfg.ServerName), key)
}

// GET /_matrix/key/v2/server (and the deprecated /server/{keyId})
func (s *Server) getServerKeys(w http.ResponseWriter, r *http.Request) error {
	signed, err := s.serverKeys()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(signed)
	return nil
}

// POST /_matrix/key/v2/query: a notary answers for the servers it knows.
// Strand knows only itself; for other servers it has nothing to say.
func (s *Server) queryServerKeys(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ServerKeys map[string]json.RawMessage `json:"server_keys"`
	}
	if err := matrix.DecodeJSON(r, &req, false); err != nil {
		return err
	}
	out := []json.RawMessage{}
	if _, ok := req.ServerKeys[string(s.cfg.ServerName)]; ok {
		signed, err := s.serverKeys()
		if err != nil {
			return err
		}
		out = append(out, signed)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"server_keys": out})
	return nil
}

// GET /_matrix/key/v2/query/{serverName}
func (s *Server) queryServerKeysOf(w http.ResponseWriter, r *http.Request) error {
	out := []json.RawMessage{}
	if pathVar(r, "serverName") == string(s.cfg.ServerName) {
		signed, err := s.serverKeys()
		if err != nil {
			return err
		}
		out = append(out, signed)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"server_keys": out})
	return nil
}

// GET /_matrix/federation/v1/version
func (s *Server) federationVersion(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Strand", "version": serverVersion}})
	return nil
}

// serverVersion is the commit Strand was built from, when the build
// recorded it.
var serverVersion = func() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 7 {
			return s.Value[:7]
		}
	}
	return info.Main.Version
}()
