package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"strand/api/apitest"
)

// createMedia creates a media ID with POST /_matrix/media/v1/create and
// returns its ID and the whole answer.
func createMedia(t *testing.T, c *apitest.Client) (string, apitest.Response) {
	t.Helper()
	r := c.MustDo("POST", "/_matrix/media/v1/create", nil)
	uri := r.Str("content_uri")
	if !strings.HasPrefix(uri, "mxc://localhost/") {
		t.Fatalf("create: %s", r.Raw)
	}
	return strings.TrimPrefix(uri, "mxc://localhost/"), r
}

// Asynchronous uploads: an ID created on one api process is uploaded to on
// another, downloads wait for its content (and give up with 504
// M_NOT_YET_UPLOADED), only its creator uploads it, once, and the IDs a
// user may have waiting are limited exactly, across processes.
func TestAsyncUpload(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.MaxPendingMedia = 3
	a := apitest.NewClient(t, env.API(cfg).URL)
	b := apitest.NewClient(t, env.API(cfg).URL)
	a.Register("alma", "pw")
	b.Token, b.UserID = a.Token, a.UserID
	eve := apitest.NewClient(t, b.Base)
	eve.Register("eve", "pw")
	pic := testPNG(t, 64, 48)

	before := time.Now()
	id, created := createMedia(t, a)
	exp, _ := created.Body["unused_expires_at"].(float64)
	if want := before.Add(24 * time.Hour).UnixMilli(); int64(exp) < want || int64(exp) > want+60_000 {
		t.Fatalf("unused_expires_at %v, want about %d (24 hours on)", created.Body["unused_expires_at"], want)
	}

	// Not uploaded yet: every download path waits, then 504 on another
	// process, not 404.
	for _, path := range []string{
		"/_matrix/media/v3/download/localhost/" + id + "?timeout_ms=300",
		"/_matrix/client/v1/media/download/localhost/" + id + "?timeout_ms=300",
		"/_matrix/media/v3/thumbnail/localhost/" + id + "?width=32&height=32&timeout_ms=300",
	} {
		start := time.Now()
		r := b.Do("GET", path, nil)
		if r.Status != http.StatusGatewayTimeout || r.Errcode() != "M_NOT_YET_UPLOADED" {
			t.Fatalf("GET %s before the upload: %d %s", path, r.Status, r.Raw)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("GET %s answered after %s, before its timeout_ms", path, d)
		}
	}
	if r := b.Do("GET", "/_matrix/media/v3/download/localhost/"+id+"?timeout_ms=0", nil); r.Status != 504 || r.Errcode() != "M_NOT_YET_UPLOADED" {
		t.Fatalf("download with timeout_ms=0: %d %s", r.Status, r.Raw)
	}
	if r := b.Do("GET", "/_matrix/media/v3/download/localhost/"+id+"?timeout_ms=soon", nil); r.Status != 400 {
		t.Fatalf("bad timeout_ms: %d %s", r.Status, r.Raw)
	}

	// A download waiting on process b gets the content uploaded on a.
	type result struct {
		status int
		body   []byte
		took   time.Duration
	}
	waited := make(chan result, 1)
	go func() {
		start := time.Now()
		res, got := rawRequest(t, "GET", b.Base+"/_matrix/client/v1/media/download/localhost/"+id+"?timeout_ms=20000", a.Token, "", nil)
		waited <- result{res.StatusCode, got, time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond)

	// Only its creator uploads it.
	if res, got := rawRequest(t, "PUT", b.Base+"/_matrix/media/v3/upload/localhost/"+id, eve.Token, "image/png", pic); res.StatusCode != 403 || !strings.Contains(string(got), "M_FORBIDDEN") {
		t.Fatalf("upload by another user: %d %s", res.StatusCode, got)
	}
	if res, got := rawRequest(t, "PUT", a.Base+"/_matrix/media/v3/upload/localhost/"+id+"?filename=pic.png", a.Token, "image/png", pic); res.StatusCode != 200 || strings.TrimSpace(string(got)) != "{}" {
		t.Fatalf("upload: %d %s", res.StatusCode, got)
	}
	select {
	case w := <-waited:
		if w.status != 200 || !bytes.Equal(w.body, pic) {
			t.Fatalf("waiting download: %d (%d bytes)", w.status, len(w.body))
		}
		if w.took > 5*time.Second {
			t.Fatalf("waiting download took %s", w.took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting download never returned")
	}
	res, got := rawRequest(t, "GET", b.Base+"/_matrix/media/v3/download/localhost/"+id, "", "", nil)
	if res.StatusCode != 200 || !bytes.Equal(got, pic) || res.Header.Get("Content-Type") != "image/png" ||
		!strings.Contains(res.Header.Get("Content-Disposition"), "pic.png") {
		t.Fatalf("download after the upload: %d %v", res.StatusCode, res.Header)
	}
	if r := b.Do("GET", "/_matrix/media/v3/thumbnail/localhost/"+id+"?width=32&height=32&method=crop", nil); r.Status != 200 {
		t.Fatalf("thumbnail after the upload: %d", r.Status)
	}

	// Once: a second upload, on either process, is 409.
	for _, c := range []*apitest.Client{a, b} {
		if res, got := rawRequest(t, "PUT", c.Base+"/_matrix/media/v3/upload/localhost/"+id, a.Token, "text/plain", []byte("again")); res.StatusCode != 409 || !strings.Contains(string(got), "M_CANNOT_OVERWRITE_MEDIA") {
			t.Fatalf("second upload: %d %s", res.StatusCode, got)
		}
	}
	// Two uploads racing to one new ID, on two processes: one wins.
	id2, _ := createMedia(t, a)
	statuses := make(chan int, 2)
	for i, c := range []*apitest.Client{a, b} {
		go func() {
			res, _ := rawRequest(t, "PUT", c.Base+"/_matrix/media/v3/upload/localhost/"+id2, a.Token, "text/plain", bytes.Repeat([]byte{byte('a' + i)}, 300_000))
			statuses <- res.StatusCode
		}()
	}
	if s1, s2 := <-statuses, <-statuses; !(s1 == 200 && s2 == 409 || s1 == 409 && s2 == 200) {
		t.Fatalf("racing uploads: %d and %d, want one 200 and one 409", s1, s2)
	}
	res, got = rawRequest(t, "GET", b.Base+"/_matrix/media/v3/download/localhost/"+id2, "", "", nil)
	if res.StatusCode != 200 || len(got) != 300_000 || bytes.Count(got, got[:1]) != len(got) {
		t.Fatalf("content after racing uploads: %d, %d bytes (one upload's content expected)", res.StatusCode, len(got))
	}

	// IDs never created, and other servers' IDs, are 404.
	if r := a.Do("PUT", "/_matrix/media/v3/upload/localhost/NoSuchMediaID", "x"); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("upload to an unknown ID: %d %s", r.Status, r.Raw)
	}
	if r := a.Do("PUT", "/_matrix/media/v3/upload/elsewhere.example/"+id, "x"); r.Status != 404 {
		t.Fatalf("upload to another server's ID: %d %s", r.Status, r.Raw)
	}
	if r := a.Do("GET", "/_matrix/media/v3/download/localhost/NoSuchMediaID", nil); r.Status != 404 {
		t.Fatalf("download of an unknown ID: %d %s", r.Status, r.Raw)
	}
	// Without a token, neither creates nor uploads.
	if r := apitest.NewClient(t, a.Base).Do("POST", "/_matrix/media/v1/create", nil); r.Status != 401 {
		t.Fatalf("create without a token: %d", r.Status)
	}
}

// A failed upload (too large) gives the ID back, so the client can try
// again; an ID whose time ran out cannot be uploaded to and is 404 to
// downloads.
func TestAsyncUploadRetryAndExpiry(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.MaxUploadBytes = 1000
	a := apitest.NewClient(t, env.API(cfg).URL)
	a.Register("bo", "pw")

	id, _ := createMedia(t, a)
	if res, got := rawRequest(t, "PUT", a.Base+"/_matrix/media/v3/upload/localhost/"+id, a.Token, "text/plain", make([]byte, 5000)); res.StatusCode != 413 {
		t.Fatalf("too large: %d %s", res.StatusCode, got)
	}
	if res, got := rawRequest(t, "PUT", a.Base+"/_matrix/media/v3/upload/localhost/"+id, a.Token, "text/plain", []byte("fits")); res.StatusCode != 200 {
		t.Fatalf("retry after a failed upload: %d %s", res.StatusCode, got)
	}
	if r := a.Do("GET", "/_matrix/media/v3/download/localhost/"+id, nil); r.Status != 200 || string(r.Raw) != "fits" {
		t.Fatalf("download: %d %s", r.Status, r.Raw)
	}

	short := cfg
	short.MediaPendingExpiry = 300 * time.Millisecond
	s := apitest.NewClient(t, env.API(short).URL)
	s.Token, s.UserID = a.Token, a.UserID
	old, created := createMedia(t, s)
	if exp, _ := created.Body["unused_expires_at"].(float64); int64(exp) > time.Now().Add(time.Second).UnixMilli() {
		t.Fatalf("unused_expires_at %v with a 300 ms expiry", exp)
	}
	time.Sleep(400 * time.Millisecond)
	if r := a.Do("PUT", "/_matrix/media/v3/upload/localhost/"+old, "late"); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("upload after expiry: %d %s", r.Status, r.Raw)
	}
	if r := a.Do("GET", "/_matrix/media/v3/download/localhost/"+old+"?timeout_ms=5000", nil); r.Status != 404 {
		t.Fatalf("download after expiry: %d %s", r.Status, r.Raw)
	}
}

// The limit on pending IDs is M_LIMIT_EXCEEDED, holds exactly when
// creations race on two processes, and lifts when an upload is done or an
// ID expires.
func TestAsyncUploadPendingLimit(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.MaxPendingMedia = 3
	cfg.MediaPendingExpiry = 2 * time.Second
	a := apitest.NewClient(t, env.API(cfg).URL)
	b := apitest.NewClient(t, env.API(cfg).URL)
	a.Register("cy", "pw")
	b.Token, b.UserID = a.Token, a.UserID

	var mu sync.Mutex
	var ids []string
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 10 {
		c := []*apitest.Client{a, b}[i%2]
		wg.Go(func() {
			r := c.Do("POST", "/_matrix/media/v1/create", nil)
			mu.Lock()
			defer mu.Unlock()
			codes[r.Status]++
			if r.Status == 200 {
				ids = append(ids, strings.TrimPrefix(r.Str("content_uri"), "mxc://localhost/"))
			} else if r.Errcode() != "M_LIMIT_EXCEEDED" {
				t.Errorf("create over the limit: %d %s", r.Status, r.Raw)
			}
		})
	}
	wg.Wait()
	if codes[200] != 3 || codes[429] != 7 {
		t.Fatalf("10 racing creations with a limit of 3: %v", codes)
	}
	// Another user has a limit of their own.
	other := apitest.NewClient(t, a.Base)
	other.Register("dee", "pw")
	createMedia(t, other)

	// An upload done makes room for one more.
	a.MustDo("PUT", "/_matrix/media/v3/upload/localhost/"+ids[0], "done")
	createMedia(t, b)
	if r := a.Do("POST", "/_matrix/media/v1/create", nil); r.Status != 429 {
		t.Fatalf("create at the limit again: %d %s", r.Status, r.Raw)
	}
	// Expiry makes room for all.
	time.Sleep(2100 * time.Millisecond)
	for i := range 3 {
		if r := []*apitest.Client{a, b}[i%2].Do("POST", "/_matrix/media/v1/create", nil); r.Status != 200 {
			t.Fatalf("create %d after the pending IDs expired: %d %s", i, r.Status, r.Raw)
		}
	}
}

// Created IDs are facts in JetStream: after JetStream restarts, a new api
// process takes the upload of an ID created before, and refuses a second.
func TestAsyncUploadSurvivesRestart(t *testing.T) {
	env := apitest.New(t)
	stop := env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("di", "pw")
	id, _ := createMedia(t, a)
	done, _ := createMedia(t, a)
	a.MustDo("PUT", "/_matrix/media/v3/upload/localhost/"+done, "first")
	stop()

	dir := env.NATS.StoreDir
	env.NATS.Stop()
	env2 := &apitest.Env{T: t, NATS: logtestRestart(t, dir), DBURL: env.DBURL}
	env2.Projector()
	c := apitest.NewClient(t, env2.API(apitest.DefaultConfig()).URL).As(a.Token)
	c.MustDo("PUT", "/_matrix/media/v3/upload/localhost/"+id, "after the restart")
	if r := c.Do("GET", "/_matrix/client/v1/media/download/localhost/"+id, nil); r.Status != 200 || string(r.Raw) != "after the restart" {
		t.Fatalf("download: %d %s", r.Status, r.Raw)
	}
	if r := c.Do("PUT", "/_matrix/media/v3/upload/localhost/"+done, "second"); r.Status != 409 {
		t.Fatalf("second upload after the restart: %d %s", r.Status, r.Raw)
	}
}

// An upload's claim on an ID lapses when its process dies (it is no
// longer renewed), so the client can upload again; a slow upload, whose
// process is alive, keeps its claim however long the body takes.
func TestAsyncUploadClaimLease(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.MediaClaimLease = 400 * time.Millisecond
	a := apitest.NewClient(t, env.API(cfg).URL)
	b := apitest.NewClient(t, env.API(cfg).URL).As("")
	a.Register("eli", "pw")
	b.Token = a.Token

	// A process claims the ID for an upload and dies: nothing renews the
	// claim.
	id, _ := createMedia(t, a)
	ctx := context.Background()
	dead := env.Conn()
	p, rev, err := dead.GetPendingMedia(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.ClaimPendingMedia(ctx, p, rev, cfg.MediaClaimLease); err != nil {
		t.Fatal(err)
	}
	if r := a.Do("PUT", "/_matrix/media/v3/upload/localhost/"+id, "x"); r.Status != 409 || r.Errcode() != "M_CANNOT_OVERWRITE_MEDIA" {
		t.Fatalf("upload while another holds the claim: %d %s", r.Status, r.Raw)
	}
	if r := b.Do("GET", "/_matrix/media/v3/download/localhost/"+id+"?timeout_ms=100", nil); r.Status != 504 {
		t.Fatalf("download while the claimed upload is missing: %d %s", r.Status, r.Raw)
	}
	time.Sleep(cfg.MediaClaimLease + 100*time.Millisecond)
	a.MustDo("PUT", "/_matrix/media/v3/upload/localhost/"+id, "after the lapse")
	if r := b.Do("GET", "/_matrix/media/v3/download/localhost/"+id, nil); string(r.Raw) != "after the lapse" {
		t.Fatalf("download: %d %s", r.Status, r.Raw)
	}

	// A body that takes four leases to arrive keeps its claim.
	id2, _ := createMedia(t, a)
	pr, pw := io.Pipe()
	go func() {
		for range 16 {
			time.Sleep(cfg.MediaClaimLease / 4)
			if _, err := pw.Write([]byte("slow ")); err != nil {
				return
			}
		}
		pw.Close()
	}()
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("PUT", a.Base+"/_matrix/media/v3/upload/localhost/"+id2, pr)
		req.Header.Set("Authorization", "Bearer "+a.Token)
		req.Header.Set("Content-Type", "text/plain")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	time.Sleep(3 * cfg.MediaClaimLease)
	if r := b.Do("PUT", "/_matrix/media/v3/upload/localhost/"+id2, "cut in"); r.Status != 409 {
		t.Fatalf("upload during a slow one, after more than a lease: %d %s", r.Status, r.Raw)
	}
	if status := <-done; status != 200 {
		t.Fatalf("slow upload: %d", status)
	}
	if r := b.Do("GET", "/_matrix/media/v3/download/localhost/"+id2, nil); string(r.Raw) != strings.Repeat("slow ", 16) {
		t.Fatalf("slow upload's content: %d %s", r.Status, r.Raw)
	}
}

// An upload whose ID is taken over by another while its body is still
// arriving (its claim lapsed) is refused once the body is in, though its
// claim was not renewed in between: the client gets 409, and neither the
// file nor its size on the user's quota remains.
func TestAsyncUploadClaimTakenOverWhileStoring(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	// No renewal during the test: only the check before the answer can
	// see that the claim was taken over.
	cfg.MediaClaimLease = time.Hour
	a := apitest.NewClient(t, env.API(cfg).URL)
	a.Register("fay", "pw")
	user := a.UserID
	id, _ := createMedia(t, a)
	ctx := context.Background()
	other := env.Conn()

	pr, pw := io.Pipe()
	done := make(chan apitest.Response, 1)
	go func() {
		req, _ := http.NewRequest("PUT", a.Base+"/_matrix/media/v3/upload/localhost/"+id, pr)
		req.Header.Set("Authorization", "Bearer "+a.Token)
		req.Header.Set("Content-Type", "text/plain")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- apitest.Response{}
			return
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		done <- apitest.Response{Status: res.StatusCode, Raw: raw}
	}()
	if _, err := pw.Write([]byte("first half ")); err != nil {
		t.Fatal(err)
	}
	// Wait for the upload's claim, then take the ID over as an upload on
	// another process would once the claim had lapsed.
	for {
		p, _, err := other.GetPendingMedia(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !p.ClaimedAt.IsZero() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	p, rev, err := other.GetPendingMedia(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ClaimPendingMedia(ctx, p, rev, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write([]byte("second half")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-done
	if r.Status != 409 || !bytes.Contains(r.Raw, []byte("M_CANNOT_OVERWRITE_MEDIA")) {
		t.Fatalf("upload whose ID was taken over: %d %s", r.Status, r.Raw)
	}
	if ok, err := other.MediaExists(ctx, id); err != nil || ok {
		t.Fatalf("file of the refused upload exists: %v %v", ok, err)
	}
	if used, err := other.MediaUsage(ctx, user); err != nil || used != 0 {
		t.Fatalf("usage after the refused upload: %d %v", used, err)
	}
}
