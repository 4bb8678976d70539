package api_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"strand/api/apitest"
)

// pageServer is a web server on a loopback address that counts the
// requests for each path.
type pageServer struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func (p *pageServer) Hits(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[path]
}

func (p *pageServer) Total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, h := range p.hits {
		n += h
	}
	return n
}

// startPages serves pages on addr (host:0) from a path → handler map.
func startPages(t *testing.T, addr string, pages map[string]http.HandlerFunc) *pageServer {
	t.Helper()
	p := &pageServer{hits: map[string]int{}}
	p.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.hits[r.URL.Path]++
		p.mu.Unlock()
		h, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p.Listener = ln
	p.Start()
	t.Cleanup(p.Close)
	return p
}

func htmlPage(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(body))
	}
}

func redirectTo(target string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target, http.StatusFound) }
}

func previewPath(base string, target string) string {
	return base + "?url=" + url.QueryEscape(target)
}

// URL previews read a page's OpenGraph metadata (falling back to its
// title and description), store its og:image in the media repository,
// follow redirects, read at most 1 MiB of a page, and are cached for
// every api process.
func TestPreviewURL(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.OutboundAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	a := apitest.NewClient(t, env.API(cfg).URL)
	b := apitest.NewClient(t, env.API(cfg).URL)
	a.Register("pia", "pw")
	b.Token = a.Token

	pic := testPNG(t, 279, 129)
	big := `<html><head><meta property="og:title" content="Big page"></head><body>` +
		strings.Repeat("<p>filler</p>", (3<<20)/len("<p>filler</p>")) +
		`<meta property="og:description" content="too far"></body></html>`
	web := startPages(t, "127.0.0.1:0", map[string]http.HandlerFunc{
		"/page.html": htmlPage(`<!doctype html><html prefix="og: http://ogp.me/ns#"><head>
<title>The Rock (1996)</title>
<meta property="og:title" content="The Rock" />
<meta property="og:type" content="video.movie" />
<meta property="og:url" content="http://www.imdb.com/title/tt0117500/" />
<meta property="og:description" content="  A mild-mannered   chemist &amp; an ex-con.  " />
<meta property="og:image" content="img/pic.png" />
<meta property="og:image:width" content="1" />
</head><body><p>hello</p></body></html>`),
		"/img/pic.png": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(pic)
		},
		"/plain.html": htmlPage(`<html><head><title> Plain
  page </title><meta name="description" content="All about plain pages"></head><body></body></html>`),
		"/r1":       redirectTo("/r2"),
		"/r2":       redirectTo("/plain.html"),
		"/loop":     redirectTo("/loop"),
		"/big.html": htmlPage(big),
		"/file.bin": func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Content-Type", "application/zip") },
		"/noimg":    htmlPage(`<meta property="og:title" content="No image"><meta property="og:image" content="/missing.png">`),
		"/scheme":   htmlPage(`<meta property="og:title" content="Odd image"><meta property="og:image" content="file:///etc/passwd">`),
		"/direct.png": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(pic)
		},
	})

	const v3 = "/_matrix/media/v3/preview_url"
	const v1 = "/_matrix/client/v1/media/preview_url"
	r := a.MustDo("GET", previewPath(v3, web.URL+"/page.html#section"), nil)
	for k, want := range map[string]any{
		"og:title": "The Rock", "og:type": "video.movie", "og:url": "http://www.imdb.com/title/tt0117500/",
		"og:description": "A mild-mannered chemist & an ex-con.", "og:image:type": "image/png",
		"og:image:width": 279.0, "og:image:height": 129.0, "matrix:image:size": float64(len(pic)),
	} {
		if r.Body[k] != want {
			t.Errorf("%s = %#v, want %#v (%s)", k, r.Body[k], want, r.Raw)
		}
	}
	img := r.Str("og:image")
	if !strings.HasPrefix(img, "mxc://localhost/") {
		t.Fatalf("og:image %q", img)
	}
	if got := a.Do("GET", "/_matrix/client/v1/media/download/localhost/"+strings.TrimPrefix(img, "mxc://localhost/"), nil); got.Status != 200 || !bytes.Equal(got.Raw, pic) {
		t.Fatalf("og:image from the media repository: %d (%d bytes)", got.Status, len(got.Raw))
	}
	if web.Hits("/page.html") != 1 || web.Hits("/img/pic.png") != 1 {
		t.Fatalf("fetches: page %d, image %d", web.Hits("/page.html"), web.Hits("/img/pic.png"))
	}

	// Cached: the authenticated path, on another process, with another
	// ts, fetches nothing again.
	r2 := b.MustDo("GET", previewPath(v1, web.URL+"/page.html")+"&ts=1510610716656", nil)
	if !bytes.Equal(r2.Raw, r.Raw) || web.Hits("/page.html") != 1 {
		t.Fatalf("cached preview: %s (page fetched %d times)", r2.Raw, web.Hits("/page.html"))
	}

	// Fallbacks, after redirects.
	r = b.MustDo("GET", previewPath(v1, web.URL+"/r1"), nil)
	if r.Str("og:title") != "Plain page" || r.Str("og:description") != "All about plain pages" || r.Body["og:image"] != nil {
		t.Fatalf("fallback preview: %s", r.Raw)
	}
	// Only the first MiB of a page is read.
	r = a.MustDo("GET", previewPath(v3, web.URL+"/big.html"), nil)
	if r.Str("og:title") != "Big page" || r.Body["og:description"] != nil {
		t.Fatalf("big page: %s", r.Raw)
	}
	// An image URL is its own preview; other content gives an empty one;
	// an image that cannot be had is left out.
	r = a.MustDo("GET", previewPath(v3, web.URL+"/direct.png"), nil)
	if !strings.HasPrefix(r.Str("og:image"), "mxc://localhost/") || r.Body["og:image:width"] != 279.0 {
		t.Fatalf("image preview: %s", r.Raw)
	}
	if r = a.MustDo("GET", previewPath(v3, web.URL+"/file.bin"), nil); string(r.Raw) != "{}" {
		t.Fatalf("preview of a zip file: %s", r.Raw)
	}
	for _, p := range []string{"/noimg", "/scheme"} {
		if r = a.MustDo("GET", previewPath(v3, web.URL+p), nil); r.Body["og:image"] != nil || r.Str("og:title") == "" {
			t.Fatalf("preview of %s: %s", p, r.Raw)
		}
	}

	// Pages that cannot be had are 502; bad requests 400; no token 401.
	for _, tc := range []struct {
		path    string
		status  int
		errcode string
	}{
		{previewPath(v3, web.URL+"/loop"), 502, "M_UNKNOWN"},
		{previewPath(v3, web.URL+"/gone"), 502, "M_UNKNOWN"},
		{v3, 400, "M_MISSING_PARAM"},
		{previewPath(v3, "ftp://127.0.0.1/x"), 400, "M_INVALID_PARAM"},
		{previewPath(v3, "file:///etc/passwd"), 400, "M_INVALID_PARAM"},
		{previewPath(v3, "http://"), 400, "M_INVALID_PARAM"},
		{previewPath(v3, web.URL+"/page.html") + "&ts=yesterday", 400, "M_INVALID_PARAM"},
		{previewPath(v3, "http://127.0.0.1/"+strings.Repeat("a", 5000)), 400, "M_INVALID_PARAM"},
	} {
		if r := a.Do("GET", tc.path, nil); r.Status != tc.status || r.Errcode() != tc.errcode {
			t.Errorf("GET %.80s: %d %s, want %d %s", tc.path, r.Status, r.Raw, tc.status, tc.errcode)
		}
	}
	if web.Hits("/loop") > 6 {
		t.Errorf("a redirect loop was followed %d times", web.Hits("/loop"))
	}
	anon := apitest.NewClient(t, a.Base)
	for _, p := range []string{v1, v3} {
		if r := anon.Do("GET", previewPath(p, web.URL+"/page.html"), nil); r.Status != 401 {
			t.Errorf("%s without a token: %d", p, r.Status)
		}
	}
}

// Without --outbound-allow, previews reach no loopback address, whether
// named by address or by a name that resolves to one; with an allow-list,
// what it does not cover stays out of reach, also through a redirect or an
// og:image: every connection is checked on the address dialled.
func TestPreviewURLRefusesInternalAddresses(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	inner := startPages(t, "127.0.0.2:0", map[string]http.HandlerFunc{
		"/secret": htmlPage(`<meta property="og:title" content="secret">`),
		"/s.png":  func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Content-Type", "image/png") },
	})
	web := startPages(t, "127.0.0.1:0", map[string]http.HandlerFunc{
		"/page.html": htmlPage(`<meta property="og:title" content="Page">`),
		"/hop":       redirectTo(inner.URL + "/secret"),
		"/img.html":  htmlPage(fmt.Sprintf(`<meta property="og:title" content="Image inside"><meta property="og:image" content="%s/s.png">`, inner.URL)),
	})
	_, port, _ := net.SplitHostPort(web.Listener.Addr().String())

	closed := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	closed.Register("rex", "pw")
	for _, target := range []string{
		web.URL + "/page.html",
		"http://localhost:" + port + "/page.html",
		"http://[::1]:" + port + "/page.html",
		"http://[::ffff:127.0.0.1]:" + port + "/page.html",
		"http://0.0.0.0:" + port + "/page.html",
		inner.URL + "/secret",
	} {
		r := closed.Do("GET", previewPath("/_matrix/client/v1/media/preview_url", target), nil)
		if r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("preview of %s without an allow-list: %d %s", target, r.Status, r.Raw)
		}
	}
	if web.Total() != 0 || inner.Total() != 0 {
		t.Fatalf("refused previews reached the servers: %d and %d requests", web.Total(), inner.Total())
	}

	cfg := apitest.DefaultConfig()
	cfg.OutboundAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	open := apitest.NewClient(t, env.API(cfg).URL).As(closed.Token)
	if r := open.MustDo("GET", previewPath("/_matrix/media/v3/preview_url", web.URL+"/page.html"), nil); r.Str("og:title") != "Page" {
		t.Fatalf("allowed preview: %s", r.Raw)
	}
	if r := open.Do("GET", previewPath("/_matrix/media/v3/preview_url", web.URL+"/hop"), nil); r.Status != http.StatusForbidden {
		t.Fatalf("redirect to an address outside the allow-list: %d %s", r.Status, r.Raw)
	}
	if r := open.MustDo("GET", previewPath("/_matrix/media/v3/preview_url", web.URL+"/img.html"), nil); r.Str("og:title") != "Image inside" || r.Body["og:image"] != nil {
		t.Fatalf("og:image outside the allow-list: %s", r.Raw)
	}
	if web.Hits("/hop") != 1 || inner.Total() != 0 {
		t.Fatalf("hop fetched %d times; the server outside the allow-list got %d requests", web.Hits("/hop"), inner.Total())
	}
}

// A page or image that never finishes costs a preview at most its
// timeout: the page is a 502, a page whose image hangs is previewed
// without it.
func TestPreviewURLTimeout(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	hang := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html><head>"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	}
	web := startPages(t, "127.0.0.1:0", map[string]http.HandlerFunc{
		"/hang.html": hang,
		"/hang.png":  hang,
		"/page.html": htmlPage(`<meta property="og:title" content="Slow image"><meta property="og:image" content="/hang.png">`),
	})
	cfg := apitest.DefaultConfig()
	cfg.OutboundAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.PreviewTimeout = 500 * time.Millisecond
	c := apitest.NewClient(t, env.API(cfg).URL)
	c.Register("tim", "pw")

	start := time.Now()
	if r := c.Do("GET", previewPath("/_matrix/media/v3/preview_url", web.URL+"/hang.html"), nil); r.Status != 502 {
		t.Fatalf("hanging page: %d %s", r.Status, r.Raw)
	}
	r := c.MustDo("GET", previewPath("/_matrix/media/v3/preview_url", web.URL+"/page.html"), nil)
	if r.Str("og:title") != "Slow image" || r.Body["og:image"] != nil {
		t.Fatalf("page with a hanging image: %s", r.Raw)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("two previews bounded at 500 ms took %s", d)
	}
}

// A preview image is stored under the hash of its type and bytes: the
// same image for two pages (or for one page fetched again) is one file,
// and one mxc:// URI, not a new file per preview.
func TestPreviewImageStoredOnce(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.OutboundAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	a := apitest.NewClient(t, env.API(cfg).URL)
	a.Register("pim", "pw")
	pic := testPNG(t, 20, 10)
	png := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(pic)
	}
	web := startPages(t, "127.0.0.1:0", map[string]http.HandlerFunc{
		"/a.html":  htmlPage(`<meta property="og:image" content="/one.png">`),
		"/b.html":  htmlPage(`<meta property="og:image" content="/two.png">`),
		"/one.png": png, "/two.png": png,
	})
	const v3 = "/_matrix/media/v3/preview_url"
	first := a.MustDo("GET", previewPath(v3, web.URL+"/a.html"), nil).Str("og:image")
	second := a.MustDo("GET", previewPath(v3, web.URL+"/b.html"), nil).Str("og:image")
	if first == "" || first != second {
		t.Fatalf("one image, two previews: %q and %q", first, second)
	}
	if got := a.Do("GET", "/_matrix/client/v1/media/download/localhost/"+strings.TrimPrefix(first, "mxc://localhost/"), nil); got.Status != 200 || !bytes.Equal(got.Raw, pic) {
		t.Fatalf("preview image: %d (%d bytes)", got.Status, len(got.Raw))
	}
}
