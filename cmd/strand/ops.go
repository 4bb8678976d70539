package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"strand/eventlog"
	"strand/projector"
)

// readyLag is how many records a projection may trail its stream by and
// still count as caught up: under steady writes it is never exactly level.
const readyLag = 100

// opsHandler serves /metrics, /health and /ready for any role.
func opsHandler(reg *prometheus.Registry, d *deps) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeOps(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		checks := map[string]string{}
		ok := true
		fail := func(name, why string) { checks[name], ok = why, false }
		if d.nc.Status() != nats.CONNECTED {
			fail("nats", d.nc.Status().String())
		} else {
			checks["nats"] = "ok"
		}
		if err := d.store.Pool().Ping(ctx); err != nil {
			fail("postgres", err.Error())
		} else {
			checks["postgres"] = "ok"
		}
		// Per lane: a ROOMS lane is caught up when it has applied (nearly)
		// its own newest record, whatever the other lanes hold.
		for _, s := range projector.Lanes {
			var head uint64
			var err error
			if i := eventlog.LaneIndex(s); i >= 0 {
				head, err = d.log.LastSeq(ctx, eventlog.StreamRooms, eventlog.LaneFilter(i))
			} else {
				head, err = d.log.Head(ctx, s)
			}
			if err != nil {
				fail("projector "+s, "log unavailable")
				continue
			}
			pos, err := d.store.Position(ctx, s)
			if err != nil {
				fail("projector "+s, "database unavailable")
				continue
			}
			if head > pos+readyLag {
				fail("projector "+s, "catching up")
				continue
			}
			checks["projector "+s] = "ok"
		}
		status := http.StatusOK
		if !ok {
			status = http.StatusServiceUnavailable
		}
		writeOps(w, status, map[string]any{"ready": ok, "checks": checks})
	})
	return mux
}

func writeOps(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// withOps serves some ops paths on the role's own listener (/health and
// /ready if health, /metrics if metrics) and the rest from h.
func withOps(ops, h http.Handler, health, metrics bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/metrics" && metrics, (r.URL.Path == "/health" || r.URL.Path == "/ready") && health:
			ops.ServeHTTP(w, r)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// newRegistry is a registry with the Go runtime and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// pprofHandler exposes net/http/pprof, for a separate loopback listener.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
