package api_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"strand/api/apitest"
)

// e2eeSync is the part of a /sync response end-to-end encryption uses.
type e2eeSync struct {
	NextBatch string `json:"next_batch"`
	ToDevice  struct {
		Events []struct {
			Type    string         `json:"type"`
			Sender  string         `json:"sender"`
			Content map[string]any `json:"content"`
		} `json:"events"`
	} `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCounts       map[string]int `json:"device_one_time_keys_count"`
	UnusedFallbacks []string       `json:"device_unused_fallback_key_types"`
}

func e2eeSyncOf(t *testing.T, c *apitest.Client, since string) e2eeSync {
	t.Helper()
	q := "?timeout=0"
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	var s e2eeSync
	if err := json.Unmarshal(c.MustDo("GET", "/_matrix/client/v3/sync"+q, nil).Raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func deviceKeysFor(user, device string) map[string]any {
	return map[string]any{
		"user_id": user, "device_id": device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + device: "curve-" + device, "ed25519:" + device: "ed-" + device},
		"signatures": map[string]any{user: map[string]string{"ed25519:" + device: "sig-" + device}},
	}
}

func signedKey(n int, user, device string) map[string]any {
	return map[string]any{"key": fmt.Sprintf("otk-%d", n),
		"signatures": map[string]any{user: map[string]string{"ed25519:" + device: fmt.Sprintf("otksig-%d", n)}}}
}

// The keys a device publishes reach the users it shares rooms with: they
// learn of the change in /sync, read the keys with /keys/query, and claim
// one-time keys, each handed out once (from two api processes at once),
// then the fallback key; to-device messages arrive once.
func TestEndToEndEncryptionKeysAndToDevice(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	other := env.API(apitest.DefaultConfig()).URL
	a.Register("alice", "pw")
	b := apitest.NewClient(t, a.Base)
	b.Register("bob", "pw")
	aliceDev := a.MustDo("GET", "/_matrix/client/v3/account/whoami", nil).Str("device_id")
	room := a.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	b.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), nil)
	bobSince := e2eeSyncOf(t, b, "").NextBatch
	firstBob := bobSince
	aliceSince := e2eeSyncOf(t, a, "").NextBatch

	// Upload: identity keys, five one-time keys, a fallback key.
	otks := map[string]any{}
	for i := range 5 {
		otks[fmt.Sprintf("signed_curve25519:K%d", i)] = signedKey(i, a.UserID, aliceDev)
	}
	up := a.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{
		"device_keys":   deviceKeysFor(a.UserID, aliceDev),
		"one_time_keys": otks,
		"fallback_keys": map[string]any{"signed_curve25519:F1": signedKey(99, a.UserID, aliceDev)},
	})
	if n := up.Body["one_time_key_counts"].(map[string]any)["signed_curve25519"]; n != float64(5) {
		t.Fatalf("counts after upload: %s", up.Raw)
	}
	// The same keys again (a retry) change nothing; a different key
	// under a used ID is refused.
	a.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": otks})
	if r := a.Do("POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{
		"signed_curve25519:K0": signedKey(7, a.UserID, aliceDev)}}); r.Status != 400 {
		t.Fatalf("changed one-time key: %d %s", r.Status, r.Raw)
	}

	s := e2eeSyncOf(t, b, bobSince)
	if !slices.Contains(s.DeviceLists.Changed, a.UserID) {
		t.Fatalf("bob not told alice's devices changed: %+v", s.DeviceLists)
	}
	bobSince = s.NextBatch
	as := e2eeSyncOf(t, a, aliceSince)
	if as.OTKCounts["signed_curve25519"] != 5 || !slices.Equal(as.UnusedFallbacks, []string{"signed_curve25519"}) {
		t.Fatalf("alice's counts in sync: %+v %v", as.OTKCounts, as.UnusedFallbacks)
	}
	aliceSince = as.NextBatch

	q := b.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a.UserID: []string{}}})
	dk := q.Body["device_keys"].(map[string]any)[a.UserID].(map[string]any)[aliceDev].(map[string]any)
	if dk["device_id"] != aliceDev || dk["keys"].(map[string]any)["ed25519:"+aliceDev] != "ed-"+aliceDev {
		t.Fatalf("queried keys: %s", q.Raw)
	}

	// Claims from two api processes at once: five one-time keys, each to
	// one claimer, then the fallback key to everyone after.
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := b
			if i%2 == 1 {
				c = apitest.NewClient(t, other).As(b.Token)
			}
			r := c.Do("POST", "/_matrix/client/v3/keys/claim", map[string]any{
				"one_time_keys": map[string]any{a.UserID: map[string]string{aliceDev: "signed_curve25519"}}})
			if r.Status != 200 {
				t.Errorf("claim: %d %s", r.Status, r.Raw)
				return
			}
			keys := r.Body["one_time_keys"].(map[string]any)[a.UserID].(map[string]any)[aliceDev].(map[string]any)
			mu.Lock()
			defer mu.Unlock()
			for id := range keys {
				got[id]++
			}
		}()
	}
	wg.Wait()
	for i := range 5 {
		if n := got[fmt.Sprintf("signed_curve25519:K%d", i)]; n != 1 {
			t.Fatalf("one-time key K%d handed out %d times: %v", i, n, got)
		}
	}
	if got["signed_curve25519:F1"] != 3 {
		t.Fatalf("claims after the one-time keys ran out: %v", got)
	}
	as = e2eeSyncOf(t, a, aliceSince)
	if as.OTKCounts["signed_curve25519"] != 0 || len(as.UnusedFallbacks) != 0 {
		t.Fatalf("alice's counts after the claims: %+v %v", as.OTKCounts, as.UnusedFallbacks)
	}
	aliceSince = as.NextBatch

	// To-device: delivered once, also when the send is retried.
	msg := map[string]any{"messages": map[string]any{a.UserID: map[string]any{aliceDev: map[string]any{"ciphertext": "c1"}}}}
	b.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", msg)
	b.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", msg)
	b.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/t2", map[string]any{"messages": map[string]any{
		a.UserID: map[string]any{"*": map[string]any{"action": "request"}}}})
	as = e2eeSyncOf(t, a, aliceSince)
	if len(as.ToDevice.Events) != 2 || as.ToDevice.Events[0].Type != "m.room.encrypted" || as.ToDevice.Events[0].Sender != b.UserID ||
		as.ToDevice.Events[0].Content["ciphertext"] != "c1" || as.ToDevice.Events[1].Type != "m.room_key_request" {
		t.Fatalf("to-device delivery: %+v", as.ToDevice.Events)
	}
	// The same token again (a lost response) gets them again; the next
	// one does not, nor does a fresh initial sync.
	if again := e2eeSyncOf(t, a, aliceSince); len(again.ToDevice.Events) != 2 {
		t.Fatalf("retried sync: %+v", again.ToDevice.Events)
	}
	if next := e2eeSyncOf(t, a, as.NextBatch); len(next.ToDevice.Events) != 0 {
		t.Fatalf("acknowledged messages delivered again: %+v", next.ToDevice.Events)
	}
	if initial := e2eeSyncOf(t, a, ""); len(initial.ToDevice.Events) != 0 {
		t.Fatalf("acknowledged messages in an initial sync: %+v", initial.ToDevice.Events)
	}

	// /keys/changes between two tokens.
	ch := b.MustDo("GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(firstBob)+"&to="+url.QueryEscape(bobSince), nil)
	if changed, _ := ch.Body["changed"].([]any); !slices.Contains(changed, any(a.UserID)) {
		t.Fatalf("keys/changes does not name alice: %s", ch.Raw)
	}

	// Alice leaves the only room she shares with bob: he is told to stop
	// tracking her devices.
	before := e2eeSyncOf(t, b, "").NextBatch
	a.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", nil)
	after := e2eeSyncOf(t, b, before)
	if !slices.Contains(after.DeviceLists.Left, a.UserID) {
		t.Fatalf("bob not told alice left: %+v", after.DeviceLists)
	}
	kc := b.MustDo("GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(before)+"&to="+url.QueryEscape(after.NextBatch), nil)
	if left, _ := kc.Body["left"].([]any); len(left) != 1 || left[0] != a.UserID {
		t.Fatalf("keys/changes after alice left: %s", kc.Raw)
	}
}

// Cross-signing: the first upload needs only the access token, replacing
// keys needs the password; user-signing keys are shown only to their
// owner, and signatures are merged into the keys they sign.
func TestCrossSigning(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	a.Register("carol", "pw")
	b := apitest.NewClient(t, a.Base)
	b.Register("dan", "pw")
	dev := a.MustDo("GET", "/_matrix/client/v3/account/whoami", nil).Str("device_id")
	a.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": deviceKeysFor(a.UserID, dev)})
	csKey := func(usage, pub string) map[string]any {
		return map[string]any{"user_id": a.UserID, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
	}
	keys := map[string]any{"master_key": csKey("master", "M1"), "self_signing_key": csKey("self_signing", "S1"), "user_signing_key": csKey("user_signing", "U1")}
	a.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", keys)
	a.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", keys) // the same again: no auth needed

	replace := map[string]any{"master_key": csKey("master", "M2")}
	if r := a.Do("POST", "/_matrix/client/v3/keys/device_signing/upload", replace); r.Status != 401 || r.Body["flows"] == nil {
		t.Fatalf("replacing without auth: %d %s", r.Status, r.Raw)
	}
	replace["auth"] = map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": a.UserID}, "password": "pw"}
	a.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", replace)

	// The self-signing key signs the device.
	signed := deviceKeysFor(a.UserID, dev)
	signed["signatures"] = map[string]any{a.UserID: map[string]string{"ed25519:S1": "selfsig"}}
	a.MustDo("POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{a.UserID: map[string]any{dev: signed}})

	for _, c := range []*apitest.Client{a, b} {
		q := c.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a.UserID: []string{dev}}})
		master, _ := q.Body["master_keys"].(map[string]any)[a.UserID].(map[string]any)
		if master == nil || master["keys"].(map[string]any)["ed25519:M2"] != "M2" {
			t.Fatalf("master key: %s", q.Raw)
		}
		_, hasUS := q.Body["user_signing_keys"].(map[string]any)[a.UserID]
		if hasUS != (c == a) {
			t.Fatalf("user-signing key shown to %s: %v", c.UserID, hasUS)
		}
		d := q.Body["device_keys"].(map[string]any)[a.UserID].(map[string]any)[dev].(map[string]any)
		sigs := d["signatures"].(map[string]any)[a.UserID].(map[string]any)
		if sigs["ed25519:S1"] != "selfsig" || sigs["ed25519:"+dev] != "sig-"+dev {
			t.Fatalf("device signatures: %v", sigs)
		}
	}
}

// Malformed key uploads and to-device sends are 400s, never 500s.
func TestEndToEndEncryptionBadInput(t *testing.T) {
	_, c := newServer(t)
	c.Register("erin", "pw")
	dev := c.MustDo("GET", "/_matrix/client/v3/account/whoami", nil).Str("device_id")
	for _, tc := range []struct {
		method, path string
		body         any
		code         string
	}{
		{"POST", "/keys/upload", map[string]any{"device_keys": deviceKeysFor(c.UserID, "OTHER")}, "M_INVALID_PARAM"},
		{"POST", "/keys/upload", map[string]any{"device_keys": "nope"}, "M_BAD_JSON"},
		{"POST", "/keys/upload", map[string]any{"device_keys": map[string]any{"user_id": c.UserID, "device_id": dev}}, "M_BAD_JSON"},
		{"POST", "/keys/upload", map[string]any{"one_time_keys": map[string]any{"nocolon": "k"}}, "M_INVALID_PARAM"},
		{"POST", "/keys/upload", map[string]any{"one_time_keys": map[string]any{"curve25519:A": 5}}, "M_BAD_JSON"},
		{"POST", "/keys/upload", `{"one_time_keys": [1]}`, "M_BAD_JSON"},
		{"POST", "/keys/query", map[string]any{"device_keys": map[string]any{"not-a-user": []string{}}}, "M_INVALID_PARAM"},
		{"POST", "/keys/claim", map[string]any{"one_time_keys": "x"}, "M_BAD_JSON"},
		{"GET", "/keys/changes?from=bogus&to=s1_1_1_1", nil, "M_INVALID_PARAM"},
		{"PUT", "/sendToDevice/m.x/t1", map[string]any{"messages": map[string]any{c.UserID: map[string]any{dev: "text"}}}, "M_BAD_JSON"},
		{"PUT", "/sendToDevice/m.x/t2", `{"messages": 3}`, "M_BAD_JSON"},
		{"POST", "/keys/device_signing/upload", map[string]any{"master_key": map[string]any{"user_id": "@someone:else", "usage": []string{"master"}, "keys": map[string]string{"ed25519:X": "X"}}}, "M_INVALID_PARAM"},
		{"GET", "/room_keys/version", nil, "M_NOT_FOUND"},
	} {
		r := c.Do(tc.method, "/_matrix/client/v3"+tc.path, tc.body)
		if r.Status/100 != 4 || r.Errcode() != tc.code {
			t.Errorf("%s %s %v: %d %s, want 4xx %s", tc.method, tc.path, tc.body, r.Status, r.Raw, tc.code)
		}
	}
}

// Keys, claims, to-device messages and their acknowledgements, cross-
// signing and signatures replay into exactly the live projection.
func TestReplayEquivalenceEndToEndEncryption(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	a.Register("fay", "pw")
	b := apitest.NewClient(t, a.Base)
	b.Register("gus", "pw")
	dev := a.MustDo("GET", "/_matrix/client/v3/account/whoami", nil).Str("device_id")
	a.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{
		"device_keys":   deviceKeysFor(a.UserID, dev),
		"one_time_keys": map[string]any{"signed_curve25519:A": signedKey(1, a.UserID, dev), "signed_curve25519:B": signedKey(2, a.UserID, dev)},
		"fallback_keys": map[string]any{"signed_curve25519:F": signedKey(3, a.UserID, dev)},
	})
	b.MustDo("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{a.UserID: map[string]string{dev: "signed_curve25519"}}})
	b.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/x1", map[string]any{"messages": map[string]any{a.UserID: map[string]any{"*": map[string]any{"n": 1}}}})
	since := e2eeSyncOf(t, a, "").NextBatch
	b.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/x2", map[string]any{"messages": map[string]any{a.UserID: map[string]any{dev: map[string]any{"n": 2}}}})
	e2eeSyncOf(t, a, since) // acknowledges the first
	a.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
		"user_id": a.UserID, "usage": []string{"master"}, "keys": map[string]string{"ed25519:M": "M"}}})
	a.MustDo("POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{a.UserID: map[string]any{"M": map[string]any{
		"signatures": map[string]any{a.UserID: map[string]string{"ed25519:" + dev: "msig"}}}}})
	// A second device, then its logout: its keys go with it.
	second := apitest.NewClient(t, a.Base)
	second.Token = a.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": a.UserID, "password": "pw", "device_id": "SECOND"}).Str("access_token")
	second.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": deviceKeysFor(a.UserID, "SECOND")})
	second.MustDo("POST", "/_matrix/client/v3/logout", nil)

	liveDump := projectionReplays(t, env, 2)
	for _, want := range []string{"== device_keys", "== to_device", "== key_signatures", `"msig"`, "== fallback_keys"} {
		if !strings.Contains(liveDump, want) {
			t.Fatalf("dump lacks %q:\n%s", want, liveDump)
		}
	}
	if strings.Contains(liveDump, "ed-SECOND") {
		t.Fatalf("keys of a logged-out device kept:\n%s", liveDump)
	}
}

// A sync worker's fast path answers "nothing new" without a build; it
// still tells the device its key counts, those of its last built
// response (a change to them would have made this a build).
func TestKeyCountsOnTheFastPath(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("yan", "pw")
	dev := a.MustDo("GET", "/_matrix/client/v3/account/whoami", nil).Str("device_id")
	a.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{
		"signed_curve25519:A": signedKey(1, a.UserID, dev), "signed_curve25519:B": signedKey(2, a.UserID, dev)}})
	srv, h, _ := env.SyncWorkerHandler()
	onWorker := a.As(a.Token)
	onWorker.Base = srv.URL
	syncOffline := func(since string) e2eeSync {
		q := "?timeout=0&set_presence=offline"
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		var s e2eeSync
		if err := json.Unmarshal(onWorker.MustDo("GET", "/_matrix/client/v3/sync"+q, nil).Raw, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := syncOffline("")
	idleBefore, _, _ := h.Paths()
	again := syncOffline(first.NextBatch)
	if idleAfter, _, _ := h.Paths(); idleAfter != idleBefore+1 {
		t.Fatalf("the second sync was not answered by the fast path (idle %d -> %d)", idleBefore, idleAfter)
	}
	if again.OTKCounts["signed_curve25519"] != 2 || again.UnusedFallbacks == nil {
		t.Fatalf("fast-path answer without the key counts: %+v %v", again.OTKCounts, again.UnusedFallbacks)
	}
}
