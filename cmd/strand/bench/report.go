package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Report is one run of the benchmark: what was measured, where, when.
type Report struct {
	HS        string    `json:"hs"`
	Scale     string    `json:"scale"`
	Date      time.Time `json:"date"`
	PIDs      []int     `json:"pids,omitempty"`
	Scenarios []*Result `json:"scenarios"`
	// AllOK is OK() when the run ended: every scenario passed.
	AllOK bool `json:"ok"`
}

// OK reports whether every scenario passed its correctness checks.
func (r *Report) OK() bool {
	for _, s := range r.Scenarios {
		if !s.OK() {
			return false
		}
	}
	return true
}

// Failed lists the scenarios with correctness failures.
func (r *Report) Failed() []string {
	var out []string
	for _, s := range r.Scenarios {
		if !s.OK() {
			out = append(out, s.Scenario)
		}
	}
	return out
}

// Result is one scenario's measurements and correctness verdict.
type Result struct {
	Scenario string   `json:"scenario"`
	Params   string   `json:"params"`
	Metrics  []Metric `json:"metrics"`
	// Failures are correctness failures (empty: the scenario passed).
	Failures []string `json:"failures,omitempty"`
	// FailureCount counts every failure, including those not listed.
	FailureCount int      `json:"failure_count"`
	Notes        []string `json:"notes,omitempty"`
	// Seconds is the whole scenario, set-up included.
	Seconds   float64     `json:"seconds"`
	Processes []ProcStats `json:"processes,omitempty"`
}

// OK reports whether the scenario passed its correctness checks.
func (r *Result) OK() bool { return r.FailureCount == 0 }

// Metric is one measured value.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// ProcStats is what a server process used during a scenario's measured
// phase (set-up such as registering users excluded).
type ProcStats struct {
	PID int `json:"pid"`
	// CPUSeconds is utime+stime spent during the measured phase.
	CPUSeconds float64 `json:"cpu_seconds"`
	// RSS before and after the measured phase, the highest VmRSS sampled
	// during it, and VmHWM (peak RSS since the process started) after it.
	RSSBeforeMB float64 `json:"rss_before_mb"`
	RSSAfterMB  float64 `json:"rss_after_mb"`
	RSSMaxMB    float64 `json:"rss_max_sampled_mb"`
	HWMMB       float64 `json:"vm_hwm_mb"`
	Err         string  `json:"error,omitempty"`
}

// checker collects a scenario's correctness failures from any goroutine.
type checker struct {
	mu    sync.Mutex
	list  []string
	count int
}

const maxListedFailures = 20

func (c *checker) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count++
	if len(c.list) < maxListedFailures {
		c.list = append(c.list, fmt.Sprintf(format, args...))
	}
}

// failed reports whether any failure was recorded.
func (c *checker) failed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count > 0
}

func (c *checker) into(r *Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.Failures = append(r.Failures, c.list...)
	if c.count > len(c.list) {
		r.Failures = append(r.Failures, fmt.Sprintf("… and %d more", c.count-len(c.list)))
	}
	r.FailureCount += c.count
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// ds, which it sorts.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(math.Ceil(p / 100 * float64(len(ds))))
	return ds[min(max(rank, 1), len(ds))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latencies adds p50/p99/max of ds, in milliseconds, named prefix+" p50" etc.
func (r *Result) latencies(prefix string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	r.add(prefix+" p50", ms(percentile(ds, 50)), "ms")
	r.add(prefix+" p99", ms(percentile(ds, 99)), "ms")
	r.add(prefix+" max", ms(percentile(ds, 100)), "ms")
}

func (r *Result) add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit})
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Metric returns a metric's value by name.
func (r *Result) Metric(name string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as one table per scenario.
func (r *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "strand bench  hs=%s  scale=%s  date=%s", r.HS, r.Scale, r.Date.Format(time.RFC3339))
	if len(r.PIDs) > 0 {
		fmt.Fprintf(w, "  pids=%s", joinInts(r.PIDs))
	}
	fmt.Fprintln(w)
	for _, s := range r.Scenarios {
		fmt.Fprintln(w)
		r.writeScenario(w, s)
	}
	fmt.Fprintln(w)
	if r.OK() {
		fmt.Fprintf(w, "all %d scenarios passed their correctness checks\n", len(r.Scenarios))
	} else {
		fmt.Fprintf(w, "CORRECTNESS FAILURES in: %s\n", strings.Join(r.Failed(), ", "))
	}
	return nil
}

func (r *Report) writeScenario(w io.Writer, s *Result) {
	verdict := "ok"
	if !s.OK() {
		verdict = fmt.Sprintf("FAILED (%d)", s.FailureCount)
	}
	fmt.Fprintf(w, "== %s  [%s]  %s  (%.1f s with set-up)\n", s.Scenario, s.Params, verdict, s.Seconds)
	var rows [][3]string
	for _, m := range s.Metrics {
		rows = append(rows, [3]string{m.Name, formatValue(m.Value), m.Unit})
	}
	for _, p := range s.Processes {
		if p.Err != "" {
			rows = append(rows, [3]string{fmt.Sprintf("pid %d", p.PID), p.Err, ""})
			continue
		}
		rows = append(rows,
			[3]string{fmt.Sprintf("pid %d cpu", p.PID), formatValue(p.CPUSeconds), "s"},
			[3]string{fmt.Sprintf("pid %d rss before/after/max", p.PID),
				formatValue(p.RSSBeforeMB) + " / " + formatValue(p.RSSAfterMB) + " / " + formatValue(p.RSSMaxMB), "MB"},
			[3]string{fmt.Sprintf("pid %d VmHWM", p.PID), formatValue(p.HWMMB), "MB"})
	}
	nameW, valW := 0, 0
	for _, r := range rows {
		nameW, valW = max(nameW, len(r[0])), max(valW, len(r[1]))
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s  %*s %s\n", nameW, r[0], valW, r[1], r[2])
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, f := range s.Failures {
		fmt.Fprintf(w, "  FAIL: %s\n", f)
	}
}

func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case v == math.Trunc(v) && a < 1e12:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// procSample is one reading of a process's /proc files.
type procSample struct {
	cpuTicks uint64
	rssKB    uint64
	hwmKB    uint64
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// Linux fixes it at 100 for user space on every architecture Go runs on.
const clockTicks = 100

func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is parenthesised and may hold spaces:
	// fields are counted from the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	s.cpuTicks = ut + st
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "VmRSS":
			dst = &s.rssKB
		case "VmHWM":
			dst = &s.hwmKB
		default:
			continue
		}
		fs := strings.Fields(v)
		if len(fs) > 0 {
			*dst, _ = strconv.ParseUint(fs[0], 10, 64)
		}
	}
	return s, nil
}

func kbToMB(kb uint64) float64 { return float64(kb) / 1024 }

// procWatch measures the server processes over a measured phase: CPU and
// RSS at its start and end, and VmRSS sampled every 100 ms in between.
type procWatch struct {
	pids   []int
	before []procSample
	errs   []error
	maxRSS []uint64
	stop   chan struct{}
	done   chan struct{}
}

func startProcWatch(pids []int) *procWatch {
	w := &procWatch{pids: pids, before: make([]procSample, len(pids)), errs: make([]error, len(pids)),
		maxRSS: make([]uint64, len(pids)), stop: make(chan struct{}), done: make(chan struct{})}
	for i, pid := range pids {
		w.before[i], w.errs[i] = readProc(pid)
		w.maxRSS[i] = w.before[i].rssKB
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				for i, pid := range w.pids {
					if s, err := readProc(pid); err == nil {
						w.maxRSS[i] = max(w.maxRSS[i], s.rssKB)
					}
				}
			}
		}
	}()
	return w
}

func (w *procWatch) finish() []ProcStats {
	close(w.stop)
	<-w.done
	out := make([]ProcStats, len(w.pids))
	for i, pid := range w.pids {
		out[i].PID = pid
		after, err := readProc(pid)
		if w.errs[i] != nil {
			err = w.errs[i]
		}
		if err != nil {
			out[i].Err = err.Error()
			continue
		}
		out[i].CPUSeconds = float64(after.cpuTicks-w.before[i].cpuTicks) / clockTicks
		out[i].RSSBeforeMB = kbToMB(w.before[i].rssKB)
		out[i].RSSAfterMB = kbToMB(after.rssKB)
		out[i].RSSMaxMB = kbToMB(max(w.maxRSS[i], after.rssKB))
		out[i].HWMMB = kbToMB(after.hwmKB)
	}
	return out
}

// rssSumKB is the current VmRSS summed over pids.
func rssSumKB(pids []int) (uint64, error) {
	var sum uint64
	for _, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			return 0, err
		}
		sum += s.rssKB
	}
	return sum, nil
}

// cpuSumTicks is utime+stime summed over pids.
func cpuSumTicks(pids []int) (uint64, error) {
	var sum uint64
	for _, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			return 0, err
		}
		sum += s.cpuTicks
	}
	return sum, nil
}

// CPUSeconds is the user+system CPU time process pid has used, for
// measurements the scenarios here do not make (strand bench's replay).
func CPUSeconds(pid int) (float64, error) {
	s, err := readProc(pid)
	if err != nil {
		return 0, err
	}
	return float64(s.cpuTicks) / clockTicks, nil
}
