package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/projector/store"
	"strand/projector/store/storetest"
)

// acked collects the event IDs the server acknowledged with 200.
type acked struct {
	mu      sync.Mutex
	ids     map[string]bool
	retries int           // failed attempts that were retried
	slowest time.Duration // longest time from a send's first attempt to its acknowledgement
}

func (a *acked) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

func (a *acked) add(id string, took time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ids == nil {
		a.ids = map[string]bool{}
	}
	a.ids[id] = true
	a.slowest = max(a.slowest, took)
}

// sendBurst sends n messages, inflight at a time, retrying each (same
// transaction ID) until it is acknowledged or attempts run out. A non-200
// must be a Matrix error the client can retry: 5xx with an errcode, or a
// connection error while a process is down. It returns after all sends.
func sendBurst(t *testing.T, c *apitest.Client, roomID string, n, inflight int, a *acked) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, inflight)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/burst%d", url.PathEscape(roomID), i)
			start := time.Now()
			for attempt := 0; attempt < 200; attempt++ {
				status, id, errcode, err := trySend(c, path, i)
				switch {
				case err == nil && status == 200:
					a.add(id, time.Since(start))
					return
				case err == nil && status >= 500 && errcode == "":
					t.Errorf("send %d: %d without an errcode", i, status)
					return
				case err == nil && status == 500:
					// Outages must read as 503 (retry), not as a server bug.
					t.Errorf("send %d: 500 %s during an outage; want 503", i, errcode)
					return
				case err == nil && status < 500:
					t.Errorf("send %d: unexpected %d %s", i, status, errcode)
					return
				}
				a.mu.Lock()
				a.retries++
				a.mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
			t.Errorf("send %d never acknowledged", i)
		}()
	}
	wg.Wait()
}

func trySend(c *apitest.Client, path string, i int) (status int, eventID, errcode string, err error) {
	body := fmt.Sprintf(`{"msgtype":"m.text","body":"%d"}`, i)
	req, err := http.NewRequest("PUT", c.Base+path, strings.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer res.Body.Close()
	var out struct {
		EventID string `json:"event_id"`
		Errcode string `json:"errcode"`
	}
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out.EventID, out.Errcode, nil
}

// roomMessageIDs pages the whole room backwards and counts message IDs.
func roomMessageIDs(t *testing.T, c *apitest.Client, roomID string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	from := ""
	for range 1000 {
		q := "?dir=b&limit=100"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		r := c.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages"+q, nil)
		for _, e := range r.Body["chunk"].([]any) {
			ev := e.(map[string]any)
			if ev["type"] == "m.room.message" {
				seen[ev["event_id"].(string)]++
			}
		}
		if from = r.Str("end"); from == "" {
			return seen
		}
	}
	t.Fatal("paging did not end")
	return nil
}

func checkAllOnce(t *testing.T, a *acked, seen map[string]int) {
	t.Helper()
	for id := range a.ids {
		if seen[id] != 1 {
			t.Errorf("acknowledged event %s is in the room %d times", id, seen[id])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s is in the room %d times", id, n)
		}
	}
}

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
)

// strandBinary builds the strand command once per test binary.
func strandBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "strand-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtPath = filepath.Join(dir, "strand")
		out, err := exec.Command("go", "build", "-o", builtPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtPath
}

// startServeProcess runs "strand serve" as a separate process.
func startServeProcess(t *testing.T, addr, dataDir, dbURL string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(strandBinary(t), "serve", "--listen", addr, "--data-dir", dataDir, "--database-url", dbURL,
		"--bcrypt-cost", "4", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if res, err := http.Get("http://" + addr + "/ready"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("strand serve did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill -9 of "strand serve" right after a burst of acknowledged sends:
// after a restart every acknowledged event is there, exactly once.
func TestServeKill9AfterBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs strand as a separate process")
	}
	addr, dataDir, dbURL := freeAddr(t), t.TempDir(), storetest.NewURL(t)
	proc := startServeProcess(t, addr, dataDir, dbURL)
	c := apitest.NewClient(t, "http://"+addr)
	c.Register("burst", "pw")
	roomID := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")
	var a acked
	sendBurst(t, c, roomID, 300, 16, &a)
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = proc.Process.Wait()

	startServeProcess(t, addr, dataDir, dbURL)
	if len(a.ids) != 300 {
		t.Fatalf("%d of 300 sends acknowledged", len(a.ids))
	}
	checkAllOnce(t, &a, roomMessageIDs(t, c, roomID))
}

// In the multi-process topology, SIGKILL the projector and then the NATS
// server while clients send: writes during the outages fail with a
// retryable Matrix error (never a false success), and afterwards every
// acknowledged event is in the room exactly once, and the projection
// equals a replay of the log.
func TestMultiProcessFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and starts a multi-process deployment")
	}
	d := startRunLocal(t, 2)
	c := apitest.NewClient(t, d.base)
	c.Register("faulty", "pw")
	roomID := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")

	// The kills follow the burst's progress rather than a clock, so that
	// they land mid-burst however fast the sends are.
	const total = 600
	var a acked
	done := make(chan struct{})
	go func() { defer close(done); sendBurst(t, c, roomID, total, 8, &a) }()
	waitFor(t, func() bool { return a.count() >= 100 })
	d.kill9(t, "projector")
	waitFor(t, func() bool { return a.count() >= 250 })
	d.kill9(t, "nats")
	<-done
	t.Logf("%d sends acknowledged, %d attempts failed retryably during the outages, slowest send %v", len(a.ids), a.retries, a.slowest)
	// A send either failed and was retried, or waited for the part that
	// was down (an append held until NATS was back, an answer held until
	// the projector had applied it); a burst that neither failed nor
	// waited did not overlap the outages. Sends take a few ms otherwise.
	if a.retries == 0 && a.slowest < 300*time.Millisecond {
		t.Errorf("the outages were not noticed by any send (no retries, slowest %v): the test did not exercise them", a.slowest)
	}
	checkAllOnce(t, &a, roomMessageIDs(t, c, roomID))
	if len(a.ids) != total {
		t.Fatalf("%d of %d sends acknowledged", len(a.ids), total)
	}

	// The live projection equals a replay of the log into a new database.
	dbURL, natsURL := d.dbURL, d.natsURL
	replayURL := storetest.NewURL(t)
	out, err := exec.Command(filepath.Join(d.work, "bin", "strand"), "replay", "--nats-url", natsURL, "--database-url", replayURL).CombinedOutput()
	if err != nil {
		t.Fatalf("replay: %v: %s", err, out)
	}
	ctx := context.Background()
	live, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	replayed, err := store.Open(ctx, replayURL)
	if err != nil {
		t.Fatal(err)
	}
	defer replayed.Close()
	waitFor(t, func() bool {
		a, _ := live.Dump(ctx)
		b, _ := replayed.Dump(ctx)
		return a == b
	})
	d.stop(t)
}
