package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strand/projector/store/storetest"
)

// jssdkDir holds the Node project (package.json, package-lock.json,
// flow.mjs) that drives Strand with the real matrix-js-sdk.
const jssdkDir = "testdata/jssdk"

// TestMatrixJSSDK runs testdata/jssdk/flow.mjs, matrix-js-sdk's own client
// code, against "strand serve": registration through UIA, password login,
// rooms joined by ID and by alias, live /sync, messages, back-pagination,
// presence, typing, read receipts, a media upload and authenticated
// download, an end-to-end encrypted message sent and
// decrypted by the SDK's Rust crypto (keys upload, query and claim,
// to-device room keys, device lists), and logout. It needs node and npm; the
// first run installs the locked packages with "npm ci". A machine without
// them fails the test; it never skips.
func TestMatrixJSSDK(t *testing.T) {
	node := lookPath(t, "node")
	installJSSDK(t)

	addr := freeAddr(t)
	// With the default rate limits, as a server on the internet runs.
	startServe(t, "--listen", addr, "--data-dir", t.TempDir(), "--database-url", storetest.NewURL(t), "--rate-limits", "on")

	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "flow.mjs", "http://"+addr)
	cmd.Dir = jssdkDir
	cmd.Env = append(os.Environ(), "STRAND_JSSDK_TIMEOUT_MS=70000")
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("node flow.mjs did not finish within %v:\n%s", time.Since(start).Round(time.Second), out.String())
	}
	if err != nil {
		t.Fatalf("node flow.mjs against strand serve failed (%v):\n%s", err, out.String())
	}
	t.Logf("node flow.mjs (%v):\n%s", time.Since(start).Round(time.Millisecond), out.String())
}

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (%v): TestMatrixJSSDK needs Node.js 20+ and npm on PATH", name, err)
	}
	return p
}

// installJSSDK runs "npm ci" in testdata/jssdk unless node_modules already
// holds the matrix-js-sdk version package.json pins.
func installJSSDK(t *testing.T) {
	t.Helper()
	want := pinnedJSSDKVersion(t)
	installed := func() (string, error) {
		b, err := os.ReadFile(filepath.Join(jssdkDir, "node_modules", "matrix-js-sdk", "package.json"))
		if err != nil {
			return "", err
		}
		var p struct{ Version string }
		if err := json.Unmarshal(b, &p); err != nil {
			return "", err
		}
		return p.Version, nil
	}
	if v, err := installed(); err == nil && v == want {
		return
	}
	npm := lookPath(t, "npm")
	args := []string{"ci", "--no-audit", "--no-fund", "--loglevel=error"}
	if _, err := os.Stat(filepath.Join(jssdkDir, "package-lock.json")); errors.Is(err, os.ErrNotExist) {
		args[0] = "install"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, args...)
	cmd.Dir = jssdkDir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm %s in %s failed (%v); TestMatrixJSSDK needs the npm registry once to install matrix-js-sdk %s:\n%s",
			strings.Join(args, " "), jssdkDir, err, want, out)
	}
	v, err := installed()
	if err != nil || v != want {
		t.Fatalf("after npm %s, node_modules has matrix-js-sdk %q (%v), want %s", args[0], v, err, want)
	}
	t.Logf("npm %s: matrix-js-sdk %s installed in %v", args[0], v, time.Since(start).Round(time.Millisecond))
}

func pinnedJSSDKVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(jssdkDir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s/package.json: %v", jssdkDir, err)
	}
	v := p.Dependencies["matrix-js-sdk"]
	if v == "" {
		t.Fatalf("%s/package.json does not depend on matrix-js-sdk", jssdkDir)
	}
	return v
}
