package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/projector/store/storetest"
)

// The multi-process topology of deploy/run-local.sh (nats-server, api,
// projector, two sync workers behind nginx) runs the client flows: a chain
// of syncs through the proxy, which alternates between the workers, sees
// every message exactly once, also after one worker is killed with
// SIGKILL in the middle of it.
// localDeployment is a running deploy/run-local.sh.
type localDeployment struct {
	base, work     string
	dbURL, natsURL string
	cmd            *exec.Cmd
	exited         chan error
}

// startRunLocal starts deploy/run-local.sh with the given number of sync
// workers and waits until it reports ready.
func startRunLocal(t *testing.T, syncWorkers int) *localDeployment {
	t.Helper()
	return startRunLocalWithDB(t, syncWorkers, storetest.NewURL(t))
}

// startRunLocalWithDB is startRunLocal on a given database.
func startRunLocalWithDB(t *testing.T, syncWorkers int, dbURL string) *localDeployment {
	t.Helper()
	work := t.TempDir()
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, "bash", "../../deploy/run-local.sh", "--sync", strconv.Itoa(syncWorkers), "--port", port,
		"--database-url", dbURL, "--workdir", work)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &localDeployment{base: "http://127.0.0.1:" + port, work: work, dbURL: dbURL, cmd: cmd, exited: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, "Strand is ready at") {
				ready <- line
			}
		}
		d.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM) })
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// Show the roles' error lines: the work directory goes with the test.
		logs, _ := filepath.Glob(filepath.Join(work, "logs", "*.log"))
		for _, f := range logs {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, `"level":"ERROR"`) {
					t.Logf("%s: %s", filepath.Base(f), line)
				}
			}
		}
	})
	select {
	case line := <-ready:
		t.Log(line)
		if _, rest, ok := strings.Cut(line, "nats "); ok {
			d.natsURL, _, _ = strings.Cut(rest, ";")
		}
	case err := <-d.exited:
		t.Fatalf("run-local.sh exited before it was ready: %v (logs in %s/logs)", err, work)
	case <-ctx.Done():
		t.Fatal("run-local.sh did not become ready")
	}
	return d
}

// kill9 sends SIGKILL to the current process of a supervised role.
func (d *localDeployment) kill9(t *testing.T, role string) {
	t.Helper()
	pid, err := os.ReadFile(filepath.Join(d.work, role+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
	if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", role, err)
	}
}

// stop sends SIGTERM and checks that nothing is left running.
func (d *localDeployment) stop(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			t.Errorf("run-local.sh exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run-local.sh did not stop on SIGTERM")
	}
	if out, _ := exec.Command("pgrep", "-f", d.work+"/bin/").Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("processes left running after SIGTERM: %s", out)
	}
}

func TestRunLocalTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and starts a multi-process deployment")
	}
	d := startRunLocal(t, 2)
	base, work := d.base, d.work
	alice := apitest.NewClient(t, base)
	alice.Register("alice", "wordpass")
	bob := apitest.NewClient(t, base)
	bob.Register("bob", "wordpass")
	roomID := alice.MustDo("POST", "/_matrix/client/r0/createRoom", `{"room_alias_name":"tutorial"}`).Str("room_id")
	alice.MustDo("POST", "/_matrix/client/r0/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": bob.UserID})
	bob.MustDo("POST", "/_matrix/client/r0/join/"+url.PathEscape("#tutorial:localhost"), `{}`)

	// A body over nginx's 16 KB buffer goes through its temp files, which
	// its worker must be able to write (run as root, the worker is nobody
	// and the work directory is 0700): 1 MB up and back down.
	blob := make([]byte, 1<<20)
	for i := range blob {
		blob[i] = byte('a' + i%26)
	}
	mxc := alice.MustDo("POST", "/_matrix/media/v3/upload?filename=big.bin", blob).Str("content_uri")
	serverAndID := strings.TrimPrefix(mxc, "mxc://")
	if got := bob.Do("GET", "/_matrix/client/v1/media/download/"+serverAndID, nil); got.Status != http.StatusOK || !bytes.Equal(got.Raw, blob) {
		t.Fatalf("download of a 1 MB upload through the proxy: status %d, %d bytes, equal %v", got.Status, len(got.Raw), bytes.Equal(got.Raw, blob))
	}

	next := bob.MustDo("GET", "/_matrix/client/v3/sync?set_presence=offline", nil).Str("next_batch")
	// The proxy keeps a client on one worker; find bob's, to kill it.
	bobsWorker := syncWorkerOf(t, d, func() {
		bob.MustDo("GET", "/_matrix/client/v3/sync?set_presence=offline&since="+url.QueryEscape(next), nil)
	})
	const n = 60
	sent := map[string]bool{}
	var mu sync.Mutex
	go func() {
		for i := range n {
			id := alice.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", url.PathEscape(roomID), i),
				map[string]any{"msgtype": "m.text", "body": strconv.Itoa(i)}).Str("event_id")
			mu.Lock()
			sent[id] = true
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	seen := map[string]int{}
	killed := false
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := bob.MustDo("GET", "/_matrix/client/v3/sync?set_presence=offline&timeout=1000&since="+url.QueryEscape(next), nil)
		var s struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							EventID string `json:"event_id"`
							Type    string `json:"type"`
						} `json:"events"`
						Limited bool `json:"limited"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(r.Raw, &s); err != nil {
			t.Fatal(err)
		}
		tl := s.Rooms.Join[roomID].Timeline
		if tl.Limited {
			t.Fatal("incremental sync was limited")
		}
		for _, e := range tl.Events {
			if e.Type == "m.room.message" {
				seen[e.EventID]++
			}
		}
		next = s.NextBatch
		if !killed && len(seen) >= n/3 {
			// SIGKILL bob's sync worker; nginx sends the next syncs to the other.
			d.kill9(t, bobsWorker)
			killed = true
		}
		mu.Lock()
		done := len(sent) == n && len(seen) >= n
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("saw %d of %d messages", len(seen), n)
		}
	}
	for id, c := range seen {
		if c != 1 || !sent[id] {
			t.Errorf("event %s seen %d times (sent: %v)", id, c, sent[id])
		}
	}
	// The killed worker was restarted by its supervisor under a new PID.
	pid, _ := os.ReadFile(filepath.Join(work, bobsWorker+".pid"))
	if p, _ := strconv.Atoi(strings.TrimSpace(string(pid))); p == 0 || syscall.Kill(p, 0) != nil {
		t.Errorf("%s was not restarted (pid file %q)", bobsWorker, pid)
	}
	// The deployment stops cleanly on SIGTERM, leaving no process behind.
	d.stop(t)
}

// syncWorkerOf returns the name ("sync-1", ...) of the sync worker that
// serves the sync request do makes: the one whose response count grows.
// The workers' addresses are the proxy's upstream list, in order.
func syncWorkerOf(t *testing.T, d *localDeployment, do func()) string {
	t.Helper()
	conf, err := os.ReadFile(filepath.Join(d.work, "nginx", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	_, upstream, _ := strings.Cut(string(conf), "upstream strand_sync {")
	upstream, _, _ = strings.Cut(upstream, "}")
	var addrs []string
	for _, line := range strings.Split(upstream, "\n") {
		if f := strings.Fields(strings.TrimSuffix(strings.TrimSpace(line), ";")); len(f) == 2 && f[0] == "server" {
			addrs = append(addrs, f[1])
		}
	}
	if len(addrs) == 0 {
		t.Fatalf("no sync workers in the proxy configuration:\n%s", conf)
	}
	responses := func(addr string) float64 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		total := 0.0
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "strand_sync_responses_total{") {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				total += v
			}
		}
		return total
	}
	before := make([]float64, len(addrs))
	for i, a := range addrs {
		before[i] = responses(a)
	}
	do()
	for i, a := range addrs {
		if responses(a) > before[i] {
			return fmt.Sprintf("sync-%d", i+1)
		}
	}
	t.Fatal("no sync worker answered the request")
	return ""
}
