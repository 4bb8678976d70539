package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
)

// hotRoutes matches the busiest routes (sending a message, /sync) without
// the router. gorilla/mux tries every route's regular expression in the
// order they were added, and these come after a hundred others under
// both API prefixes: on the send path that was a tenth of the server's
// CPU. A hot route is also added to the router, and the dispatcher uses
// it only for a path the router would give it: the same method, the same
// literal segments, and each variable one non-empty segment of the
// escaped path (mux's default [^/]+). No route added before a hot one may
// match its paths (TestHotRoutesAgreeWithRouter checks the router picks
// the same route and variables).
type hotRoutes []hotRoute

type hotRoute struct {
	method   string   // "" for any
	segs     []string // after the leading "/"; "" marks a variable
	names    []string // the variables' names, in order
	template string
	h        http.Handler
}

// add registers template (variables as {name} only) for method.
func (hr *hotRoutes) add(method, template string, h http.Handler) {
	rt := hotRoute{method: method, template: template, h: h}
	for _, seg := range strings.Split(strings.TrimPrefix(template, "/"), "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			name := seg[1 : len(seg)-1]
			if strings.ContainsAny(name, ":{}") {
				panic(fmt.Sprintf("hot route %s: only plain variables", template)) // a programming error at start-up
			}
			rt.segs = append(rt.segs, "")
			rt.names = append(rt.names, name)
			continue
		}
		if seg == "" || strings.ContainsAny(seg, "{}") {
			panic(fmt.Sprintf("hot route %s: bad segment %q", template, seg))
		}
		rt.segs = append(rt.segs, seg)
	}
	*hr = append(*hr, rt)
}

// match returns the hot route for r and its variables, as mux would.
func (hr hotRoutes) match(r *http.Request) (*hotRoute, map[string]string, bool) {
	path := r.URL.EscapedPath()
	if len(path) == 0 || path[0] != '/' {
		return nil, nil, false
	}
	path = path[1:]
	for i := range hr {
		rt := &hr[i]
		if rt.method != "" && rt.method != r.Method {
			continue
		}
		if vars, ok := rt.matchPath(path); ok {
			return rt, vars, true
		}
	}
	return nil, nil, false
}

// matchPath matches path (without its leading "/") segment by segment.
func (rt *hotRoute) matchPath(path string) (map[string]string, bool) {
	var vars map[string]string
	v := 0
	for i, lit := range rt.segs {
		seg, rest, more := strings.Cut(path, "/")
		if more != (i < len(rt.segs)-1) {
			return nil, false // too few or too many segments, or a trailing slash
		}
		switch {
		case lit != "":
			if seg != lit {
				return nil, false
			}
		case seg == "":
			return nil, false
		default:
			if vars == nil {
				vars = make(map[string]string, len(rt.names))
			}
			vars[rt.names[v]] = seg
			v++
		}
		path = rest
	}
	return vars, true
}

// serve runs rt's handler as the router would: with its variables and
// its template for the latency metric.
func (rt *hotRoute) serve(w http.ResponseWriter, r *http.Request, vars map[string]string) {
	if h, ok := r.Context().Value(routeKey{}).(*routeHolder); ok {
		h.template = rt.template
	}
	rt.h.ServeHTTP(w, mux.SetURLVars(r, vars))
}
