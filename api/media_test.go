package api_test

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"strand/api"
	"strand/api/apitest"
	"strand/eventlog"
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

// upload posts body as the client's media and returns the media ID.
func upload(t *testing.T, c *apitest.Client, contentType string, body []byte) string {
	t.Helper()
	res, got := rawRequest(t, "POST", c.Base+"/_matrix/media/v3/upload", c.Token, contentType, body)
	if res.StatusCode != 200 {
		t.Fatalf("upload: %d %s", res.StatusCode, got)
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(got, &out); err != nil || !strings.HasPrefix(out.ContentURI, "mxc://localhost/") {
		t.Fatalf("upload answer: %s", got)
	}
	return strings.TrimPrefix(out.ContentURI, "mxc://localhost/")
}

// hugePNG is a valid PNG of w x h pixels at 16-bit RGBA, all transparent
// black: a canvas that decodes to w*h*8 bytes, in a file of a few hundred
// KiB. One row is deflated once and its (self-contained, sync-flushed)
// blocks repeated for every row, which takes milliseconds where deflating
// hundreds of MiB under the race detector takes a minute; the zlib
// checksum of n zero bytes is computed directly (Adler-32: a = 1, b = n).
func hugePNG(w, h int) []byte {
	var buf bytes.Buffer
	buf.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		_ = binary.Write(&buf, binary.BigEndian, uint32(len(data)))
		buf.WriteString(typ)
		buf.Write(data)
		_ = binary.Write(&buf, binary.BigEndian, crc32.Update(crc32.ChecksumIEEE([]byte(typ)), crc32.IEEETable, data))
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 16, 6 // bit depth 16, colour type RGBA
	chunk("IHDR", ihdr)
	var row bytes.Buffer
	fw, _ := flate.NewWriter(&row, flate.BestCompression)
	_, _ = fw.Write(make([]byte, 1+w*8)) // filter byte and pixels, all 0
	_ = fw.Flush()
	var z bytes.Buffer
	z.Write([]byte{0x78, 0xDA})
	for range h {
		z.Write(row.Bytes())
	}
	z.Write([]byte{0x03, 0x00}) // an empty final block
	n := uint64(h) * uint64(1+w*8)
	_ = binary.Write(&z, binary.BigEndian, uint32((n%65521)<<16|1))
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	return buf.Bytes()
}

// fastPNG is a w x h gradient PNG, written without image.Set's per-pixel
// conversions.
func fastPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			i := y*img.Stride + x*4
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = uint8(x), uint8(y), uint8(x+y), 255
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The image: 6,300 x 6,300 pixels at 16-bit RGBA, just under the
// 40-megapixel cap, decodes to 303 MiB. Its thumbnail is refused from the
// header, before decoding, with the spec's 413 M_TOO_LARGE, and the
// request allocates less than 32 MiB (measured as the process's
// TotalAlloc across the request: the api runs in this test's process).
// Three at once are refused alike.
func TestThumbnailDecodedBytesBound(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("mona", "pw")
	pic := hugePNG(6300, 6300)
	if len(pic) > 1<<20 {
		t.Fatalf("test image is %d bytes", len(pic))
	}
	id := upload(t, a, "image/png", pic)
	url := a.Base + "/_matrix/media/v3/thumbnail/localhost/" + id + "?width=32&height=32&method=crop"

	const bound = 32 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, body := rawRequest(t, "GET", url, "", "", nil)
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > bound {
		t.Fatalf("the thumbnail request allocated %d MiB, more than %d MiB (status %d)", d>>20, bound>>20, res.StatusCode)
	}
	if res.StatusCode != 413 || !strings.Contains(string(body), "M_TOO_LARGE") {
		t.Fatalf("thumbnail of a 303 MiB canvas: %d %.200s, want 413 M_TOO_LARGE", res.StatusCode, body)
	}

	var wg sync.WaitGroup
	codes := make([]int, 3)
	runtime.ReadMemStats(&before)
	for i := range codes {
		wg.Go(func() {
			res, _ := rawRequest(t, "GET", url, "", "", nil)
			codes[i] = res.StatusCode
		})
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	if codes[0] != 413 || codes[1] != 413 || codes[2] != 413 {
		t.Fatalf("three at once: %v", codes)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > bound {
		t.Fatalf("three refused thumbnails allocated %d MiB, more than %d MiB", d>>20, bound>>20)
	}
}

// mediaObjects lists the object store's names starting with prefix.
func mediaObjects(t *testing.T, env *apitest.Env, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obs, err := env.Conn().JetStream().ObjectStore(ctx, eventlog.MediaBucket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		t.Fatal(err)
	}
	var names []string
	for _, oi := range infos {
		if strings.HasPrefix(oi.Name, prefix) {
			names = append(names, oi.Name)
		}
	}
	sort.Strings(names)
	return names
}

// Twenty requests at twenty sizes make and keep only sizes of the fixed
// set; the twenty widths 981-1000 all get the one largest scale.
func TestThumbnailFixedSizes(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("mona", "pw")
	id := upload(t, a, "image/png", fastPNG(t, 1200, 900))
	get := func(w, h int, method string) image.Image {
		t.Helper()
		res, body := rawRequest(t, "GET", fmt.Sprintf("%s/_matrix/media/v3/thumbnail/localhost/%s?width=%d&height=%d&method=%s", a.Base, id, w, h, method), "", "", nil)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "image/png" || !strings.HasPrefix(res.Header.Get("Content-Disposition"), "inline") {
			t.Fatalf("thumbnail %dx%d %s: %d %v %s", w, h, method, res.StatusCode, res.Header, body)
		}
		img, err := png.Decode(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	for w := 981; w <= 1000; w++ {
		if b := get(w, w*3/4, "scale").Bounds(); b.Dx() != 800 || b.Dy() != 600 {
			t.Fatalf("width %d: got %v, want the 800x600 scale", w, b)
		}
	}
	if got := mediaObjects(t, env, "thumb/"+id+"/"); len(got) != 1 || got[0] != "thumb/"+id+"/800x600/scale" {
		t.Fatalf("stored after widths 981-1000: %v", got)
	}

	sizes := map[string]bool{}
	for _, s := range api.DefaultThumbnailSizes {
		sizes[fmt.Sprintf("thumb/%s/%dx%d/%s", id, s.Width, s.Height, s.Method)] = true
	}
	for i := range 20 {
		method := []string{"crop", "scale"}[i%2]
		w, h := 17+i*37, 11+i*29
		b := get(w, h, method).Bounds()
		// At least the size asked for, unless the set has nothing as large.
		if (b.Dx() < w || b.Dy() < h) && w <= 800 && h <= 600 {
			t.Errorf("%dx%d %s: got %v, smaller than asked", w, h, method, b)
		}
	}
	stored := mediaObjects(t, env, "thumb/"+id+"/")
	if len(stored) > len(api.DefaultThumbnailSizes) {
		t.Fatalf("%d thumbnails stored for one image, more than the %d sizes: %v", len(stored), len(api.DefaultThumbnailSizes), stored)
	}
	for _, name := range stored {
		if !sizes[name] {
			t.Fatalf("stored %s, not a size of the set", name)
		}
	}
}

// Concurrent requests for the same thumbnail (here different sizes that
// all resolve to the 640x480 scale) share one job: one thumbnail made.
func TestThumbnailSharedJob(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	reg := prometheus.NewRegistry()
	a := apitest.NewClient(t, env.APIWithMetrics(apitest.DefaultConfig(), reg).URL)
	a.Register("mona", "pw")
	id := upload(t, a, "image/png", fastPNG(t, 2400, 1800))

	const n = 8
	start := make(chan struct{})
	bodies := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			res, body := rawRequest(t, "GET", fmt.Sprintf("%s/_matrix/media/v3/thumbnail/localhost/%s?width=%d&height=400", a.Base, id, 600+i), "", "", nil)
			if res.StatusCode != 200 {
				t.Errorf("request %d: %d %s", i, res.StatusCode, body)
			}
			bodies[i] = body
		})
	}
	close(start)
	wg.Wait()
	for i := range bodies {
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Fatalf("request %d got other bytes", i)
		}
	}
	if made := thumbnailsMade(t, reg); made != 1 {
		t.Fatalf("%v thumbnails made for %d concurrent identical requests, want 1", made, n)
	}
	// Later requests are served from the store.
	rawRequest(t, "GET", a.Base+"/_matrix/media/v3/thumbnail/localhost/"+id+"?width=640&height=480", "", "", nil)
	if made := thumbnailsMade(t, reg); made != 1 {
		t.Fatalf("%v thumbnails made after a repeat, want 1", made)
	}
}

func thumbnailsMade(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return metricValue(t, reg, "strand_thumbnails_generated_total")
}

// metricValue reads an unlabelled counter or gauge from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// With one job slot, a second thumbnail waits while the first is being
// made; a request that gives up while waiting takes its job with it (it
// is never made), and the slot is free again afterwards.
func TestThumbnailJobSlots(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	reg := prometheus.NewRegistry()
	cfg := apitest.DefaultConfig()
	cfg.ThumbnailJobs = 1
	a := apitest.NewClient(t, env.APIWithMetrics(cfg, reg).URL)
	a.Register("mona", "pw")
	id := upload(t, a, "image/png", fastPNG(t, 3000, 2250))
	thumb := func(w, h int, method string) string {
		return fmt.Sprintf("%s/_matrix/media/v3/thumbnail/localhost/%s?width=%d&height=%d&method=%s", a.Base, id, w, h, method)
	}

	first := make(chan int, 1)
	go func() {
		res, _ := rangeRequest(t, "GET", thumb(800, 600, "scale"), "")
		first <- res.StatusCode
	}()
	deadline := time.Now().Add(30 * time.Second)
	for metricValue(t, reg, "strand_thumbnail_jobs_running") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the first job never started")
		}
		time.Sleep(time.Millisecond)
	}
	// The second waits for the slot; its client gives up after 100 ms.
	impatient := &http.Client{Timeout: 100 * time.Millisecond}
	if res, err := impatient.Get(thumb(32, 32, "crop")); err == nil {
		res.Body.Close()
		t.Fatalf("the second thumbnail was made while the only slot was taken: %d", res.StatusCode)
	}
	if running := metricValue(t, reg, "strand_thumbnail_jobs_running"); running != 1 {
		t.Fatalf("%v jobs running with one slot", running)
	}
	if code := <-first; code != 200 {
		t.Fatalf("first thumbnail: %d", code)
	}
	// Had the abandoned job kept waiting, it would hold the slot now.
	time.Sleep(200 * time.Millisecond)
	if running := metricValue(t, reg, "strand_thumbnail_jobs_running"); running != 0 {
		t.Fatalf("%v jobs running after the only request left: the abandoned job ran", running)
	}
	if made := thumbnailsMade(t, reg); made != 1 {
		t.Fatalf("%v thumbnails made, want 1: the abandoned one ran", made)
	}
	if got := mediaObjects(t, env, "thumb/"+id+"/"); len(got) != 1 {
		t.Fatalf("stored: %v", got)
	}
	// The slot is free: the same thumbnail, asked again, is made.
	if res, body := rangeRequest(t, "GET", thumb(32, 32, "crop"), ""); res.StatusCode != 200 {
		t.Fatalf("second thumbnail, asked again: %d %s", res.StatusCode, body)
	}
	if made := thumbnailsMade(t, reg); made != 2 {
		t.Fatalf("%v thumbnails made, want 2", made)
	}
}

// rangeRequest GETs url with a Range header.
func rangeRequest(t *testing.T, method, url, rng string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
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

// Downloads answer Range requests: the first bytes, a middle range that
// crosses the object store's 128 KiB chunks, a suffix, an open-ended
// range, two ranges at once; 416 for a range past the end. Served by an
// api process other than the one the file was uploaded through.
func TestRangeRequests(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	b := env.API(apitest.DefaultConfig()).URL
	a.Register("mona", "pw")
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	id := upload(t, a, "video/mp4", data)
	url := b + "/_matrix/media/v3/download/localhost/" + id
	size := len(data)

	res, got := rangeRequest(t, "GET", url, "")
	if res.StatusCode != 200 || !bytes.Equal(got, data) || res.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("whole file: %d %v (%d bytes)", res.StatusCode, res.Header, len(got))
	}
	for _, tc := range []struct {
		rng        string
		start, end int // the bytes expected, end exclusive
	}{
		{"bytes=0-99", 0, 100},
		{"bytes=131000-263999", 131000, 264000},
		{"bytes=-500", size - 500, size},
		{"bytes=299990-", 299990, size},
		{"bytes=299990-400000", 299990, size},
	} {
		res, got := rangeRequest(t, "GET", url, tc.rng)
		want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end-1, size)
		if res.StatusCode != 206 || res.Header.Get("Content-Range") != want || !bytes.Equal(got, data[tc.start:tc.end]) ||
			res.Header.Get("Content-Length") != strconv.Itoa(tc.end-tc.start) || res.Header.Get("Accept-Ranges") != "bytes" ||
			res.Header.Get("Content-Type") != "video/mp4" {
			t.Errorf("%s: %d %v (%d bytes), want 206 %s", tc.rng, res.StatusCode, res.Header, len(got), want)
		}
	}
	// Two ranges, the second before the first: a multipart answer.
	res, got = rangeRequest(t, "GET", url, "bytes=200000-200009,10-19")
	if res.StatusCode != 206 || !strings.HasPrefix(res.Header.Get("Content-Type"), "multipart/byteranges") ||
		!bytes.Contains(got, data[200000:200010]) || !bytes.Contains(got, data[10:20]) {
		t.Errorf("two ranges: %d %v", res.StatusCode, res.Header)
	}
	for _, rng := range []string{fmt.Sprintf("bytes=%d-", size), "bytes=400000-400010"} {
		res, _ := rangeRequest(t, "GET", url, rng)
		if res.StatusCode != 416 || res.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
			t.Errorf("%s: %d %v, want 416", rng, res.StatusCode, res.Header)
		}
	}
	// HEAD reports the length and that ranges are accepted; a resumed
	// download (If-Range with the ETag) gets the rest.
	res, got = rangeRequest(t, "HEAD", url, "")
	if res.StatusCode != 200 || res.Header.Get("Content-Length") != strconv.Itoa(size) || res.Header.Get("Accept-Ranges") != "bytes" || len(got) != 0 {
		t.Fatalf("HEAD: %d %v", res.StatusCode, res.Header)
	}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Range", "bytes=150000-")
	req.Header.Set("If-Range", res.Header.Get("ETag"))
	res2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(res2.Body)
	res2.Body.Close()
	if res.Header.Get("ETag") == "" || res2.StatusCode != 206 || !bytes.Equal(got, data[150000:]) {
		t.Fatalf("If-Range resume: %d (%d bytes), ETag %q", res2.StatusCode, len(got), res.Header.Get("ETag"))
	}
	// The authenticated endpoint too.
	req, _ = http.NewRequest("GET", b+"/_matrix/client/v1/media/download/localhost/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+a.Token)
	req.Header.Set("Range", "bytes=-10")
	res2, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(res2.Body)
	res2.Body.Close()
	if res2.StatusCode != 206 || !bytes.Equal(got, data[size-10:]) {
		t.Fatalf("v1 range: %d (%d bytes)", res2.StatusCode, len(got))
	}
}

// The upload quota is per user and holds across api processes: uploads
// through two processes add up, an upload past it is refused with 403
// M_FORBIDDEN (content-repo.yaml) and leaves nothing stored, and of
// concurrent uploads that would together pass it only those that fit are
// kept. Other users are not affected.
func TestMediaQuota(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.MediaQuotaBytes = 100_000
	a := apitest.NewClient(t, env.API(cfg).URL)
	b := apitest.NewClient(t, env.API(cfg).URL)
	a.Register("mona", "pw")
	b.Token, b.UserID = a.Token, a.UserID

	upload(t, a, "application/octet-stream", make([]byte, 60_000))
	for _, c := range []*apitest.Client{a, b} {
		res, body := rawRequest(t, "POST", c.Base+"/_matrix/media/v3/upload", c.Token, "application/octet-stream", make([]byte, 60_000))
		if res.StatusCode != 403 || !strings.Contains(string(body), "M_FORBIDDEN") {
			t.Fatalf("upload past the quota: %d %s, want 403 M_FORBIDDEN", res.StatusCode, body)
		}
	}
	upload(t, b, "application/octet-stream", make([]byte, 40_000)) // exactly at the quota
	if res, body := rawRequest(t, "POST", a.Base+"/_matrix/media/v3/upload", a.Token, "text/plain", []byte("x")); res.StatusCode != 403 {
		t.Fatalf("one byte past the quota: %d %s", res.StatusCode, body)
	}
	if used, err := env.Conn().MediaUsage(context.Background(), a.UserID); err != nil || used != 100_000 {
		t.Fatalf("usage %d %v, want 100000", used, err)
	}

	// Ten concurrent uploads of 30,000 bytes through two processes: three
	// fit in 100,000 bytes, and only three are kept.
	c := apitest.NewClient(t, a.Base)
	c.Register("carl", "pw")
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	for i := range 10 {
		base := []string{a.Base, b.Base}[i%2]
		wg.Go(func() {
			res, body := rawRequest(t, "POST", base+"/_matrix/media/v3/upload", c.Token, "application/octet-stream", make([]byte, 30_000))
			mu.Lock()
			defer mu.Unlock()
			switch res.StatusCode {
			case 200:
				ok++
			case 403:
				refused++
			default:
				t.Errorf("concurrent upload: %d %s", res.StatusCode, body)
			}
		})
	}
	wg.Wait()
	if ok != 3 || refused != 7 {
		t.Fatalf("concurrent uploads: %d kept, %d refused; want 3 and 7", ok, refused)
	}
	if n := uploadsBy(t, env, c.UserID); n != 3 {
		t.Fatalf("%d uploads of %s stored, want 3 (refused ones removed)", n, c.UserID)
	}
	if used, err := env.Conn().MediaUsage(context.Background(), c.UserID); err != nil || used != 90_000 {
		t.Fatalf("usage %d %v, want 90000", used, err)
	}
}

// uploadsBy counts the stored files whose uploader is user.
func uploadsBy(t *testing.T, env *apitest.Env, user string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obs, err := env.Conn().JetStream().ObjectStore(ctx, eventlog.MediaBucket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, oi := range infos {
		if oi.Metadata["uploader"] == user {
			n++
		}
	}
	return n
}
