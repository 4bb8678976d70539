package api

import (
	_ "embed"
	"net/http"
)

// loginFallbackPage is the login fallback of the spec ("the basic webpage"
// of the classic guide): a form that logs in through the API itself and
// then calls window.matrixLogin.onLogin(response) for the embedding client.
//
//go:embed static/login.html
var loginFallbackPage []byte

// GET /_matrix/static/client/login/
func (s *Server) loginFallback(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "SAMEORIGIN")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'self'")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(loginFallbackPage)
}
