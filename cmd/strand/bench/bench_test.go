package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/api/outbound"
	"strand/api/pushgateway"
	"strand/eventlog"
)

// Every scenario at tiny scale against what "strand serve" runs (api and
// sync worker over HTTP, a projector, real JetStream and Postgres), in
// this process: correctness only, no timing assertions.
func TestBenchTinyAllScenarios(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	srv := env.Serve(apitest.DefaultConfig())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Options{
		HS: srv.URL, Scale: "tiny", Scenarios: []string{"all"},
		// The server runs in this process: exercise the /proc readings.
		PIDs: []int{os.Getpid()}, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + text.String())
	all := 0
	for _, sc := range scenarios {
		if !sc.whenNamed {
			all++
		}
	}
	if len(rep.Scenarios) != all {
		t.Fatalf("ran %d scenarios, want %d", len(rep.Scenarios), all)
	}
	for _, s := range rep.Scenarios {
		if !s.OK() {
			t.Errorf("scenario %s failed its correctness checks:\n  %s", s.Scenario, strings.Join(s.Failures, "\n  "))
			continue
		}
		if len(s.Metrics) == 0 {
			t.Errorf("scenario %s measured nothing", s.Scenario)
		}
		if len(s.Processes) != 1 || s.Processes[0].Err != "" || s.Processes[0].RSSAfterMB <= 0 {
			t.Errorf("scenario %s: process stats %+v", s.Scenario, s.Processes)
		}
	}
	if !rep.OK() {
		t.Logf("progress:\n%s", progress.String())
	}
	if v, ok := metric(rep, "delivery", "missed events"); !ok || v != 0 {
		t.Errorf("delivery missed events = %v (reported %v)", v, ok)
	}
	if v, ok := metric(rep, "heldpolls", "missed events"); !ok || v != 0 {
		t.Errorf("heldpolls missed events = %v (reported %v)", v, ok)
	}

	// The JSON form carries the same report.
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.HS != srv.URL || back.Scale != "tiny" || back.Date.IsZero() || len(back.Scenarios) != len(rep.Scenarios) || back.AllOK != rep.OK() {
		t.Errorf("JSON report header: hs %q scale %q date %v ok %v, %d scenarios", back.HS, back.Scale, back.Date, back.AllOK, len(back.Scenarios))
	}
}

func metric(rep *Report, scenario, name string) (float64, bool) {
	for _, s := range rep.Scenarios {
		if s.Scenario == scenario {
			return s.Metric(name)
		}
	}
	return 0, false
}

// A correctness failure (here: a homeserver that is not there) fails the
// scenario and the report, and the bad options are refused.
func TestBenchReportsFailures(t *testing.T) {
	ctx := context.Background()
	rep, err := Run(ctx, Options{HS: "http://127.0.0.1:1", Scale: "tiny", Scenarios: []string{"register"}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Scenarios) != 1 || len(rep.Scenarios[0].Failures) == 0 {
		t.Fatalf("unreachable server: report OK=%v %+v", rep.OK(), rep.Scenarios)
	}
	if _, err := Run(ctx, Options{HS: "http://x", Scale: "huge"}); err == nil {
		t.Error("unknown scale accepted")
	}
	if _, err := Run(ctx, Options{HS: "http://x", Scale: "tiny", Scenarios: []string{"replay"}}); err == nil {
		t.Error("unknown scenario accepted")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{50: 50, 99: 99, 100: 100, 1: 1} {
		if got := percentile(ds, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
}

// runTiny runs one named scenario at tiny scale against srv and fails
// the test unless it passed its correctness checks.
func runTiny(t *testing.T, srvURL, scenario string) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Options{HS: srvURL, Scale: "tiny", Scenarios: []string{scenario}, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 1 || !rep.OK() {
		t.Fatalf("%s scenario failed: %+v\nprogress:\n%s", scenario, rep.Scenarios, progress.String())
	}
	return rep
}

// The push scenario at tiny scale, against "strand serve" with its pusher
// role allowed to reach the bench's gateway on loopback: every message
// reaches every other member's pusher once.
func TestBenchTinyPush(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	srv := env.Serve(apitest.DefaultConfig())
	l := env.Conn()
	st := env.Store()
	wm, err := eventlog.NewWatermark(l.Conn(), st.Position)
	if err != nil {
		t.Fatal(err)
	}
	p := &pushgateway.Pusher{Log: l, Store: st, Watermark: wm, Logger: apitest.Logger(),
		Client: outbound.NewClient([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})}
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(pctx) }()
	t.Cleanup(func() { stop(); <-done })

	rep := runTiny(t, srv.URL, "push")
	want := float64(Scales["tiny"].PushMsgs * (Scales["tiny"].PushMembers - 1))
	if v, ok := metric(rep, "push", "notifications"); !ok || v != want {
		t.Errorf("notifications = %v (reported %v), want %v", v, ok, want)
	}
	if _, ok := metric(rep, "push", "pushes/s"); !ok {
		t.Error("no push delivery rate")
	}
}

// The holds scenario (run only when named) at tiny scale: every user's
// one long-poll gets the message once.
func TestBenchTinyHolds(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	srv := env.Serve(apitest.DefaultConfig())
	rep := runTiny(t, srv.URL, "holds")
	if v, ok := metric(rep, "holds", "missed events"); !ok || v != 0 {
		t.Errorf("holds missed events = %v (reported %v)", v, ok)
	}
	if v, ok := metric(rep, "holds", "long-polls"); !ok || v != float64(Scales["tiny"].HoldUsers) {
		t.Errorf("holds long-polls = %v (reported %v), want %d", v, ok, Scales["tiny"].HoldUsers)
	}
}

// The bigroom scenario at tiny scale: every measure is taken and every
// check (lazy-loaded first sync, /members, deliveries, sends) passes.
func TestBenchTinyBigRoom(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	srv := env.Serve(apitest.DefaultConfig())
	rep := runTiny(t, srv.URL, "bigroom")
	for _, m := range []string{"new member join p50", "first lazy sync p50", "first lazy sync size max", "/members p50",
		"last member p50", "send rate, big room", "send rate, 2-member room", "big room / 2-member room"} {
		if _, ok := metric(rep, "bigroom", m); !ok {
			t.Errorf("bigroom did not report %q", m)
		}
	}
	if v, ok := metric(rep, "bigroom", "missed events"); !ok || v != 0 {
		t.Errorf("bigroom missed events = %v (reported %v)", v, ok)
	}
}

// Short codes go into user names and transaction IDs so that scenarios
// of one run never collide: no two scenarios may share one.
func TestScenarioShortCodesUnique(t *testing.T) {
	seen := map[string]string{}
	for _, s := range scenarios {
		if other, ok := seen[s.short]; ok {
			t.Errorf("scenarios %s and %s share the short code %q", other, s.name, s.short)
		}
		seen[s.short] = s.name
	}
	if len(seen) < 10 {
		t.Errorf("only %d scenarios checked", len(seen))
	}
}
