package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"strand/api/apitest"
)

// privatePostgres is a PostgreSQL server of the test's own, so that the
// test can stop and start it without touching the machine's server that
// other tests use.
type privatePostgres struct {
	bin, dir string
	port     int
}

func pgBinDir(t *testing.T) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	t.Fatal("PostgreSQL server binaries (initdb, pg_ctl) are required for this test")
	return ""
}

// asPostgres runs a PostgreSQL tool as the postgres user when we are root
// (initdb refuses to run as root).
func asPostgres(name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	bin := pgBinDir(t)
	dir, err := os.MkdirTemp("", "strand-pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		if out, err := exec.Command("chown", "postgres", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	if out, err := asPostgres(filepath.Join(bin, "initdb"), "-D", dir+"/data", "-U", "postgres", "--auth=trust", "-N").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v %s", err, out)
	}
	port, _ := strconv.Atoi(strings.TrimPrefix(freeAddr(t), "127.0.0.1:"))
	pg := &privatePostgres{bin: bin, dir: dir, port: port}
	pg.start(t)
	t.Cleanup(func() { _ = pg.stop() })
	return pg
}

func (pg *privatePostgres) start(t *testing.T) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", pg.port, pg.dir)
	if out, err := asPostgres(filepath.Join(pg.bin, "pg_ctl"), "-D", pg.dir+"/data", "-o", opts, "-l", pg.dir+"/log", "-w", "start").CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl start: %v %s", err, out)
	}
}

func (pg *privatePostgres) stop() error {
	return asPostgres(filepath.Join(pg.bin, "pg_ctl"), "-D", pg.dir+"/data", "-m", "immediate", "-w", "stop").Run()
}

func (pg *privatePostgres) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, db)
}

// A PostgreSQL restart under load in the multi-process topology: writes
// during the outage fail with a Matrix error and are retried, the
// projector resumes from its committed position, and every acknowledged
// event is in the room exactly once.
func TestPostgresRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs its own PostgreSQL and a multi-process deployment")
	}
	pg := startPrivatePostgres(t)
	d := startRunLocalWithDB(t, 1, pg.url("strand"))
	c := apitest.NewClient(t, d.base)
	c.Register("pgfault", "pw")
	roomID := c.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}).Str("room_id")

	var a acked
	done := make(chan struct{})
	go func() { defer close(done); sendBurst(t, c, roomID, 300, 8, &a) }()
	time.Sleep(300 * time.Millisecond)
	if err := pg.stop(); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	time.Sleep(2 * time.Second)
	pg.start(t)
	<-done
	t.Logf("%d sends acknowledged, %d attempts failed retryably during the outage", len(a.ids), a.retries)
	if a.retries == 0 {
		t.Error("no send noticed the outage: the test did not exercise it")
	}
	if len(a.ids) != 300 {
		t.Fatalf("%d of 300 sends acknowledged", len(a.ids))
	}
	checkAllOnce(t, &a, roomMessageIDs(t, c, roomID))
	d.stop(t)
}
