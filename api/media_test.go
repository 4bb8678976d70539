package api_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"

	"strand/api/apitest"
)

// rawRequest sends body with a content type and returns the response with
// its body read.
func rawRequest(t *testing.T, method, url, token, contentType string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := 0; x < w; x++ {
		for y := 0; y < h; y++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 200, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Media uploaded through one api process is served by another (the
// files live in JetStream), with safe headers; thumbnails are scaled or
// cropped, and bad requests are 4xx.
func TestMediaRepository(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.MaxUploadBytes = 200 << 10
	a := apitest.NewClient(t, env.API(cfg).URL)
	b := env.API(cfg).URL
	a.Register("mona", "pw")

	pic := testPNG(t, 400, 200)
	res, body := rawRequest(t, "POST", a.Base+"/_matrix/media/v3/upload?filename=pic.png", a.Token, "image/png", pic)
	if res.StatusCode != 200 {
		t.Fatalf("upload: %d %s", res.StatusCode, body)
	}
	uri := string(body)
	i := strings.Index(uri, "mxc://localhost/")
	if i < 0 {
		t.Fatalf("upload answer: %s", body)
	}
	id := strings.TrimRight(strings.SplitN(uri[i+len("mxc://localhost/"):], `"`, 2)[0], "}")

	res, got := rawRequest(t, "GET", b+"/_matrix/media/v3/download/localhost/"+id, "", "", nil)
	if res.StatusCode != 200 || !bytes.Equal(got, pic) || res.Header.Get("Content-Type") != "image/png" ||
		!strings.HasPrefix(res.Header.Get("Content-Disposition"), "inline") || !strings.Contains(res.Header.Get("Content-Disposition"), "pic.png") ||
		res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("download on another process: %d %v (%d bytes)", res.StatusCode, res.Header, len(got))
	}
	res, _ = rawRequest(t, "GET", b+"/_matrix/media/r0/download/localhost/"+id+"/other.png", "", "", nil)
	if !strings.Contains(res.Header.Get("Content-Disposition"), "other.png") {
		t.Fatalf("file name from the path: %v", res.Header)
	}
	// The authenticated endpoint wants a token.
	if res, _ := rawRequest(t, "GET", b+"/_matrix/client/v1/media/download/localhost/"+id, "", "", nil); res.StatusCode != 401 {
		t.Fatalf("v1 download without a token: %d", res.StatusCode)
	}
	if res, got := rawRequest(t, "GET", b+"/_matrix/client/v1/media/download/localhost/"+id, a.Token, "", nil); res.StatusCode != 200 || !bytes.Equal(got, pic) {
		t.Fatalf("v1 download: %d", res.StatusCode)
	}

	for _, tc := range []struct {
		query string
		w, h  int
	}{
		// Answered from the fixed set (32x32 and 96x96 crop; 320x240,
		// 640x480 and 800x600 scale), never enlarged.
		{"width=32&height=32&method=crop", 32, 32},
		{"width=90&height=60&method=crop", 96, 96},
		{"width=90&height=60&method=crop", 96, 96},
		{"width=100&height=100&method=scale", 320, 160},
		// No crop covers 100x100: the smallest scale that does.
		{"width=100&height=100&method=crop", 320, 160},
		// Nothing covers 1000x1000: the largest scale, here the original size.
		{"width=1000&height=1000", 400, 200},
	} {
		res, got := rawRequest(t, "GET", a.Base+"/_matrix/media/v3/thumbnail/localhost/"+id+"?"+tc.query, "", "", nil)
		if res.StatusCode != 200 {
			t.Fatalf("thumbnail %s: %d %s", tc.query, res.StatusCode, got)
		}
		img, err := png.Decode(bytes.NewReader(got))
		if err != nil || img.Bounds().Dx() != tc.w || img.Bounds().Dy() != tc.h {
			t.Fatalf("thumbnail %s: %v %v, want %dx%d", tc.query, err, img.Bounds(), tc.w, tc.h)
		}
	}

	// A thumbnail made once is kept next to its original.
	kept, err := env.Conn().GetMedia(context.Background(), "thumb/"+id+"/96x96/crop")
	if err != nil {
		t.Fatalf("crop thumbnail not kept: %v", err)
	}
	if kept.Info.ContentType != "image/png" {
		t.Fatalf("kept thumbnail type %q", kept.Info.ContentType)
	}
	kept.Close()

	// Uploaded HTML is never rendered on the homeserver's origin.
	res, body = rawRequest(t, "POST", a.Base+"/_matrix/media/v3/upload", a.Token, "text/html", []byte("<script>alert(1)</script>"))
	if res.StatusCode != 200 {
		t.Fatalf("upload html: %d %s", res.StatusCode, body)
	}
	htmlID := strings.TrimSuffix(strings.TrimPrefix(string(body), `{"content_uri":"mxc://localhost/`), `"}`)
	res, _ = rawRequest(t, "GET", a.Base+"/_matrix/media/v3/download/localhost/"+htmlID, "", "", nil)
	if !strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment") || !strings.Contains(res.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Fatalf("html download headers: %v", res.Header)
	}

	if r := a.MustDo("GET", "/_matrix/media/v3/config", nil); r.Body["m.upload.size"] != float64(200<<10) {
		t.Fatalf("config: %s", r.Raw)
	}
	for _, tc := range []struct {
		method, path, token, ct string
		body                    []byte
		status                  int
		code                    string
	}{
		{"GET", "/_matrix/media/v3/download/localhost/nosuchmedia", "", "", nil, 404, "M_NOT_FOUND"},
		{"GET", "/_matrix/media/v3/download/elsewhere.org/" + id, "", "", nil, 404, "M_NOT_FOUND"},
		{"GET", "/_matrix/media/v3/thumbnail/localhost/" + id + "?width=0&height=10", "", "", nil, 400, "M_INVALID_PARAM"},
		{"GET", "/_matrix/media/v3/thumbnail/localhost/" + id + "?width=10&height=10&method=stretch", "", "", nil, 400, "M_INVALID_PARAM"},
		{"GET", "/_matrix/media/v3/thumbnail/localhost/" + htmlID + "?width=10&height=10", "", "", nil, 400, "M_UNKNOWN"},
		{"GET", "/_matrix/media/v3/thumbnail/localhost/nosuchmedia?width=10&height=10", "", "", nil, 404, "M_NOT_FOUND"},
		{"POST", "/_matrix/media/v3/upload", "", "image/png", pic, 401, "M_MISSING_TOKEN"},
		{"POST", "/_matrix/media/v3/upload", a.Token, "not a type;;", pic, 400, "M_INVALID_PARAM"},
		{"POST", "/_matrix/media/v3/upload", a.Token, "application/octet-stream", make([]byte, 300<<10), 413, "M_TOO_LARGE"},
	} {
		res, body := rawRequest(t, tc.method, a.Base+tc.path, tc.token, tc.ct, tc.body)
		if res.StatusCode != tc.status || !strings.Contains(string(body), tc.code) {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, res.StatusCode, body, tc.status, tc.code)
		}
	}
}
