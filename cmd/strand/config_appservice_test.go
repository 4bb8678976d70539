package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"strand/api/apitest"
	"strand/projector/store/storetest"
)

const testRegistration = `id: %ID%
url: "http://127.0.0.1:9"
as_token: as_%ID%
hs_token: hs_%ID%
sender_localpart: _%ID%_bot
namespaces:
  users:
    - exclusive: true
      regex: "@_%ID%_.*:localhost"
`

func writeRegistration(t *testing.T, dir, id, content string) string {
	t.Helper()
	p := filepath.Join(dir, id+".yaml")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "%ID%", id)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// --appservice is repeatable, STRAND_APPSERVICES is a comma-separated
// default the flag replaces, and a malformed list is an error.
func TestAppserviceFlags(t *testing.T) {
	dir := t.TempDir()
	a := writeRegistration(t, dir, "a", testRegistration)
	b := writeRegistration(t, dir, "b", testRegistration)
	c, err := parseServerFlags(t, "--appservice", a, "--appservice", b)
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.appservices()
	if err != nil || len(set.All()) != 2 || set.ByASToken("as_b") == nil {
		t.Fatalf("two --appservice flags: %v", err)
	}

	t.Setenv("STRAND_APPSERVICES", a+", "+b)
	c, err = parseServerFlags(t)
	if err != nil {
		t.Fatal(err)
	}
	if set, err := c.appservices(); err != nil || len(set.All()) != 2 {
		t.Fatalf("STRAND_APPSERVICES: %v", err)
	}
	c, err = parseServerFlags(t, "--appservice", a)
	if err != nil {
		t.Fatal(err)
	}
	if set, err := c.appservices(); err != nil || len(set.All()) != 1 {
		t.Fatalf("the flag replaces the environment: %v", err)
	}

	t.Setenv("STRAND_APPSERVICES", a+",,"+b)
	c, err = parseServerFlags(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.appservices(); err == nil || !strings.Contains(err.Error(), "STRAND_APPSERVICES") {
		t.Fatalf("empty entry in STRAND_APPSERVICES: %v", err)
	}
	t.Setenv("STRAND_APPSERVICES", "")
	if _, err := parseServerFlags(t, "--appservice", ""); err == nil {
		t.Fatal("an empty --appservice was accepted")
	}
}

// A registration with an error stops every role that loads them before
// it connects to anything, naming the file and the fault.
func TestAppserviceRegistrationErrorsStopStart(t *testing.T) {
	dir := t.TempDir()
	good := writeRegistration(t, dir, "good", testRegistration)
	cases := []struct {
		name, content, want string
	}{
		{"missing", strings.Replace(testRegistration, "hs_token: hs_%ID%\n", "", 1), `missing required field "hs_token"`},
		{"regex", strings.Replace(testRegistration, `"@_%ID%_.*:localhost"`, `"@_%ID%_(.*:localhost"`, 1), "bad regex"},
		{"dupid", strings.Replace(testRegistration, "id: %ID%", "id: good", 1), `id "good" is also used`},
		{"dupas", strings.Replace(testRegistration, "as_token: as_%ID%", "as_token: as_good", 1), "as_token is also used"},
		{"duphs", strings.Replace(testRegistration, "hs_token: hs_%ID%", "hs_token: hs_good", 1), "hs_token is also used"},
	}
	ctx := context.Background()
	for _, c := range cases {
		bad := writeRegistration(t, dir, c.name, c.content)
		for _, role := range []string{"appservice", "api", "serve"} {
			// An unreachable NATS: the error must come before any connection.
			err := run(ctx, []string{role, "--appservice", good, "--appservice", bad, "--nats-url", "nats://127.0.0.1:1", "--data-dir", t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.name+".yaml") {
				t.Errorf("%s with %s: got %v, want %q naming the file", role, c.name, err, c.want)
			}
		}
	}
	if err := run(ctx, []string{"appservice", "--nats-url", "nats://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "at least one --appservice") {
		t.Errorf("appservice role without registrations: %v", err)
	}
}

// "strand serve --appservice" registers the service's sender, answers
// its as_token and delivers room events to it; after a restart of the
// whole server on the same data, delivery goes on with nothing lost or
// repeated.
func TestServeDeliversToAppservice(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{} // message bodies by transaction ID seen first
	seenTxn := map[string]bool{}
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hs_svc" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		var body struct {
			Events []struct {
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			} `json:"events"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		defer mu.Unlock()
		if txn := strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"); !seenTxn[txn] {
			seenTxn[txn] = true
			for _, e := range body.Events {
				if e.Content.Body != "" {
					got[e.Content.Body]++
				}
			}
		}
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(svc.Close)
	dir := t.TempDir()
	reg := writeRegistration(t, dir, "svc", strings.Replace(testRegistration, "http://127.0.0.1:9", svc.URL, 1))
	dataDir, dbURL, addr := t.TempDir(), storetest.NewURL(t), freeAddr(t)
	args := []string{"--listen", addr, "--data-dir", dataDir, "--database-url", dbURL, "--appservice", reg, "--metrics-on-listen"}
	stop := startServe(t, args...)
	base := "http://" + addr
	as := apitest.NewClient(t, base).As("as_svc")
	waitFor(t, func() bool {
		return as.Do("GET", "/_matrix/client/v3/account/whoami", nil).Str("user_id") == "@_svc_bot:localhost"
	})
	bob := apitest.NewClient(t, base)
	bob.Register("bob", "pw")
	room := bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	as.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), nil)
	count := func(body string) int {
		mu.Lock()
		defer mu.Unlock()
		return got[body]
	}
	bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "one"})
	waitFor(t, func() bool { return count("one") == 1 })
	bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/2", map[string]any{"msgtype": "m.text", "body": "two"})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	startServe(t, args...)
	bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/3", map[string]any{"msgtype": "m.text", "body": "three"})
	waitFor(t, func() bool { return count("three") == 1 })
	if count("one") != 1 || count("two") != 1 {
		t.Fatalf("delivered %v", got)
	}
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	metrics, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(metrics), `strand_appservice_transactions_total{appservice="svc",result="ok",stream="ROOMS"}`) ||
		!strings.Contains(string(metrics), `strand_appservice_position{appservice="svc",stream="ROOMS"}`) {
		t.Fatalf("metrics lack the deliveries:\n%s", metrics)
	}
}
