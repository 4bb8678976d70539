package matrix_test

import (
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"strand/eventlog/matrix"
)

var errDBDown = errors.New("database down")

func responder() *matrix.Responder {
	return &matrix.Responder{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Unavailable: func(err error) bool { return errors.Is(err, errDBDown) }}
}

func errcode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Errcode string `json:"errcode"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	return body.Errcode
}

// The shell the api and the sync workers share: CORS on every response, a
// preflight answered without the handler, bad request text refused before
// it, and a panic turned into one 500 (none after a response began).
func TestResponderShell(t *testing.T) {
	rs := responder()
	reached := false
	h := rs.Shell(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = true
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/late-panic":
			w.WriteHeader(http.StatusAccepted)
			panic("boom")
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	for _, tc := range []struct {
		method, target string
		status         int
		errcode        string
		reaches        bool
	}{
		{http.MethodGet, "/ok", http.StatusNoContent, "", true},
		{http.MethodOptions, "/anything", http.StatusOK, "", false},
		{http.MethodGet, "/bad%00path", http.StatusBadRequest, "M_INVALID_PARAM", false},
		{http.MethodGet, "/ok?x=%ff", http.StatusBadRequest, "M_INVALID_PARAM", false},
		{http.MethodGet, "/panic", http.StatusInternalServerError, "M_UNKNOWN", true},
		{http.MethodGet, "/late-panic", http.StatusAccepted, "", true},
	} {
		reached = false
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
		if rec.Code != tc.status || reached != tc.reaches {
			t.Errorf("%s %s: status %d reached %v, want %d %v", tc.method, tc.target, rec.Code, reached, tc.status, tc.reaches)
		}
		if rec.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s %s: no CORS header", tc.method, tc.target)
		}
		if tc.errcode != "" && errcode(t, rec) != tc.errcode {
			t.Errorf("%s %s: errcode %s, want %s", tc.method, tc.target, errcode(t, rec), tc.errcode)
		}
	}
}

// A handler that panics with http.ErrAbortHandler asks net/http to cut
// the connection: the client must see no response, not a 500.
func TestResponderShellAbort(t *testing.T) {
	srv := httptest.NewUnstartedServer(responder().Shell(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	})))
	// net/http logs nothing for ErrAbortHandler; anything else it would log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/abort")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("an aborted handler was answered %d; want the connection cut", resp.StatusCode)
	}
}

// A handler's error: a Matrix error as it is, an internal one as 500, or
// 503 when the database is unavailable.
func TestResponderError(t *testing.T) {
	rs := responder()
	for _, tc := range []struct {
		err     error
		status  int
		errcode string
	}{
		{matrix.Forbidden("no"), http.StatusForbidden, "M_FORBIDDEN"},
		{errors.New("something broke"), http.StatusInternalServerError, "M_UNKNOWN"},
		{errDBDown, http.StatusServiceUnavailable, "M_UNKNOWN"},
	} {
		rec := httptest.NewRecorder()
		rs.Error(rec, httptest.NewRequest(http.MethodGet, "/x", nil), tc.err)
		if rec.Code != tc.status || errcode(t, rec) != tc.errcode {
			t.Errorf("%v: %d %s, want %d %s", tc.err, rec.Code, errcode(t, rec), tc.status, tc.errcode)
		}
	}
}
