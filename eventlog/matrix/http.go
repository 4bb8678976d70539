package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file is the one place where errors become Matrix JSON on the wire,
// and where the HTTP shell around every client-facing handler is, shared
// by the api and the sync workers so both answer alike.

// Responder is what the api and the sync workers share around their
// handlers: the shell (Shell) and the rule for errors that are not Matrix
// errors (Error).
type Responder struct {
	Logger *slog.Logger
	// Unavailable reports whether an internal error means that the
	// database is unreachable (store.Unavailable): the client is told to
	// retry (503) rather than that the server failed (500).
	Unavailable func(error) bool
}

// Shell wraps a client-facing handler: a panic becomes a logged 500 (when
// nothing was written yet) except http.ErrAbortHandler, which is passed on
// so that net/http aborts the connection as its panicker meant, every response carries the CORS headers, a
// CORS preflight (OPTIONS) is answered for any path without
// authentication, and a path or query holding a NUL or invalid UTF-8 is
// refused before next sees it.
func (rs *Responder) Shell(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &ResponseRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					// The handler asked for the connection to be cut
					// (a reverse proxy whose upstream failed mid-body,
					// for one): a 500 would tell the client the
					// response is complete.
					panic(p)
				}
				rs.logger().Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				if !tw.Wrote() {
					WriteError(tw, errors.New("panic"))
				}
			}
		}()
		SetCORS(tw.Header())
		if r.Method == http.MethodOptions {
			tw.WriteHeader(http.StatusOK)
			return
		}
		if err := CheckRequestText(r); err != nil {
			WriteError(tw, err)
			return
		}
		next.ServeHTTP(tw, r)
	})
}

// Error writes a handler's error. One that is not a Matrix error is
// internal: it is logged (unless the client went away) and answered 500,
// or 503 when the database is unavailable.
func (rs *Responder) Error(w http.ResponseWriter, r *http.Request, err error) {
	if _, ok := AsError(err); !ok && !errors.Is(err, context.Canceled) {
		rs.logger().Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		if rs.Unavailable != nil && rs.Unavailable(err) {
			err = Unavailable("the database is unavailable; retry")
		}
	}
	WriteError(w, err)
}

func (rs *Responder) logger() *slog.Logger {
	if rs.Logger == nil {
		return slog.Default()
	}
	return rs.Logger
}

// ResponseRecorder passes a response through and remembers its status
// and whether anything was written: the shell must not write a second
// response after a panic, and the api's metrics label requests by status.
type ResponseRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

// Status is the response's status: the first one written, 200 if the
// handler wrote a body without one, 0 if nothing was written.
func (r *ResponseRecorder) Status() int { return r.status }

// Wrote reports whether anything was written.
func (r *ResponseRecorder) Wrote() bool { return r.wrote }

func (r *ResponseRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *ResponseRecorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets long responses stream through the recorder.
func (r *ResponseRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the writer underneath.
func (r *ResponseRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"internal error encoding the response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// WriteError writes err as a Matrix error. A *Error keeps its code and
// status; anything else is an internal failure, reported as M_UNKNOWN/500
// without details (they may hold infrastructure internals). It returns the
// status written, for logging.
func WriteError(w http.ResponseWriter, err error) int {
	me, ok := AsError(err)
	if !ok {
		me = &Error{Code: "M_UNKNOWN", Status: http.StatusInternalServerError, Msg: "internal server error"}
	}
	if ms, ok := me.Extra["retry_after_ms"].(int64); ok && me.Status == http.StatusTooManyRequests {
		// The same wait for HTTP clients that know only the header.
		w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
	}
	body := make(map[string]any, 2+len(me.Extra))
	for k, v := range me.Extra {
		body[k] = v
	}
	// A user-interactive auth challenge has no errcode: only its flows.
	if me.Code != "" {
		body["errcode"] = me.Code
		body["error"] = me.Msg
	}
	WriteJSON(w, me.Status, body)
	return me.Status
}

// SetCORS sets the headers the spec asks for on every response, so that
// browser clients on any origin can use the API.
func SetCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
}

// ErrMissingToken is returned by AccessToken when the request has none.
var ErrMissingToken = MissingToken("missing access token")

// AccessToken returns the request's access token from the Authorization
// header ("Bearer <token>") or, as older clients and the classic guide
// send it, the access_token query parameter.
func AccessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", UnknownToken("malformed Authorization header")
		}
		return strings.TrimSpace(tok), nil
	}
	if tok := r.URL.Query().Get("access_token"); tok != "" {
		return tok, nil
	}
	return "", ErrMissingToken
}

// DecodeJSON reads a JSON object request body into v, which must be a
// pointer to a struct or map. An empty body decodes as {} when allowEmpty
// is set. Oversized bodies are M_TOO_LARGE, unparsable ones M_NOT_JSON,
// and values of the wrong type M_BAD_JSON, as are values that could not be
// stored (CheckStoredJSON).
func DecodeJSON(r *http.Request, v any, allowEmpty bool) error {
	var raw []byte
	if r.Body != nil {
		var err error
		if raw, err = io.ReadAll(r.Body); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return TooLarge("request body too large")
			}
			return BadJSON("could not read request body")
		}
	}
	body := bytes.TrimSpace(raw)
	if len(body) == 0 {
		if allowEmpty {
			return nil
		}
		return NotJSON("request body is empty; a JSON object is required")
	}
	if err := checkText(body); err != nil {
		return err
	}
	if body[0] != '{' {
		if json.Valid(body) {
			return BadJSON("request body must be a JSON object")
		}
		return NotJSON("request body is not valid JSON")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field != "" {
				return BadJSON("field %q has the wrong type: expected %s", te.Field, te.Type)
			}
			return BadJSON("wrong JSON type: expected %s", te.Type)
		}
		if json.Valid(body) {
			return BadJSON("invalid request: %v", err)
		}
		return NotJSON("request body is not valid JSON")
	}
	// Every endpoint that stores JSON reads it here, whether as fields or
	// as raw values passed through to the log: checking the whole body
	// keeps values no projection can hold off the log.
	return CheckStoredJSON(body)
}

// checkText refuses request bodies that hold a NUL character, raw or as
// the JSON escape \u0000, or invalid UTF-8: no Matrix field may contain
// them, and PostgreSQL cannot store them in text, so letting one through
// would put a record on the log that no projection can apply.
//
// Invalid UTF-8 is M_NOT_JSON rather than M_BAD_JSON: JSON text exchanged
// between systems must be UTF-8 (RFC 8259 section 8.1), so such a body is
// not JSON at all, as opposed to JSON of the wrong shape.
func checkText(body []byte) error {
	if !utf8.Valid(body) {
		return NotJSON("request body is not valid UTF-8")
	}
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case 0:
			return BadJSON("request body contains a NUL character")
		case '\\':
			if i+6 <= len(body) && body[i+1] == 'u' && string(body[i+2:i+6]) == "0000" {
				return BadJSON("request body contains a NUL character (\\u0000)")
			}
			i++ // skip the escaped character, so "\\\\u0000" is not a NUL
		}
	}
	return nil
}

// CheckRequestText refuses a request whose path or query holds a NUL
// character or invalid UTF-8 (see checkText), before any handler runs.
func CheckRequestText(r *http.Request) error {
	bad := func(s string) bool { return !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 }
	if bad(r.URL.Path) {
		return InvalidParam("the request path is not valid UTF-8 or contains a NUL character")
	}
	for k, vs := range r.URL.Query() {
		if bad(k) {
			return InvalidParam("a query parameter name is not valid UTF-8 or contains a NUL character")
		}
		for _, v := range vs {
			if bad(v) {
				return InvalidParam("query parameter %s is not valid UTF-8 or contains a NUL character", k)
			}
		}
	}
	return nil
}
