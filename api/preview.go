package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/sync/singleflight"

	"strand/api/outbound"
	"strand/eventlog"
	"strand/eventlog/matrix"
)

// URL previews: GET /_matrix/media/{r0,v3}/preview_url and
// /_matrix/client/v1/media/preview_url. Strand fetches the page (through
// the outbound client, which refuses internal addresses), reads its
// OpenGraph metadata, stores its og:image in the media repository and
// answers with the metadata and the image's mxc:// URI. Previews are
// cached per URL in JetStream (eventlog.PreviewBucket), shared by every
// api process.

const (
	// DefaultPreviewCacheTTL is how long a preview is served from the
	// cache before the page is fetched again.
	DefaultPreviewCacheTTL = time.Hour
	// MaxPreviewCacheTTL is the longest PreviewCacheTTL can be: the cache
	// bucket keeps nothing longer.
	MaxPreviewCacheTTL = eventlog.PreviewMaxAge
	// previewPageBytes is how much of a page is read: the metadata is in
	// its head, which a page larger than this has long finished.
	previewPageBytes = 1 << 20
	// previewImageBytes bounds an og:image (or an image URL previewed).
	previewImageBytes = 10 << 20
	// DefaultPreviewTimeout bounds a whole preview: page, redirects and
	// image.
	DefaultPreviewTimeout = 20 * time.Second
	// previewJobs bounds the previews one process fetches at once; more
	// wait for a slot (for as long as their request lasts).
	previewJobs = 16
	// maxPreviewURLBytes bounds the URL asked for.
	maxPreviewURLBytes = 4096
	// previewMaxProperties and previewMaxValueRunes bound what a page can
	// put in an answer (and in the cache).
	previewMaxProperties = 32
	previewMaxValueRunes = 1000
	// previewDescriptionRunes is where a long description is cut.
	previewDescriptionRunes = 500
	// previewUserAgent names Strand to the sites it fetches.
	previewUserAgent = "Strand (Matrix homeserver; URL preview)"
)

// previewer is a process's outbound client and its in-flight previews.
type previewer struct {
	client *http.Client
	group  singleflight.Group
	slots  chan struct{}
}

func newPreviewer(cfg Config) *previewer {
	return &previewer{client: outbound.NewClient(cfg.OutboundAllow), slots: make(chan struct{}, previewJobs)}
}

// GET /_matrix/media/v3/preview_url
// GET /_matrix/client/v1/media/preview_url
//
// previewURL serves the preview_url routes.
func (s *Server) previewURL(w http.ResponseWriter, r *http.Request) error {
	u, err := previewTarget(r.URL.Query())
	if err != nil {
		return err
	}
	target := u.String()
	if b, at, err := s.log.CachedPreview(r.Context(), target); err == nil && time.Since(at) < s.cfg.PreviewCacheTTL {
		matrix.WriteJSON(w, http.StatusOK, json.RawMessage(b))
		return nil
	} else if err != nil && !errors.Is(err, eventlog.ErrMediaNotFound) {
		// The cache is an optimisation; without it the page is fetched.
		s.logger.Warn("url preview cache unavailable", "err", err)
	}
	// Only a preview that is not cached costs an outbound fetch, so only
	// that is limited.
	if err := s.limitUser(r, limitPreview); err != nil {
		return err
	}
	// One fetch per URL at a time in this process, on a context of its
	// own (bounded by PreviewTimeout), since it belongs to every request
	// waiting for it, not only to the first. It takes a slot first, so
	// that slow pages never tie up more than previewJobs fetches.
	ch := s.previews.group.DoChan(target, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.PreviewTimeout)
		defer cancel()
		select {
		case s.previews.slots <- struct{}{}:
			defer func() { <-s.previews.slots }()
		case <-ctx.Done():
			return nil, matrix.Unavailable("too many URL previews under way; retry")
		}
		og, err := s.buildPreview(ctx, u)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(og)
		if err != nil {
			return nil, err
		}
		if err := s.log.CachePreview(ctx, target, b); err != nil {
			s.logger.Warn("could not cache url preview", "err", err)
		}
		return b, nil
	})
	select {
	case <-r.Context().Done():
		return r.Context().Err()
	case res := <-ch:
		if res.Err != nil {
			return res.Err
		}
		matrix.WriteJSON(w, http.StatusOK, json.RawMessage(res.Val.([]byte)))
		return nil
	}
}

// previewTarget checks the url and ts parameters and returns the URL to
// fetch, without its fragment (which never reaches the server and would
// split the cache).
func previewTarget(q url.Values) (*url.URL, error) {
	raw := q.Get("url")
	if raw == "" {
		return nil, matrix.MissingParam("missing url")
	}
	if len(raw) > maxPreviewURLBytes {
		return nil, matrix.InvalidParam("url is longer than %d bytes", maxPreviewURLBytes)
	}
	if ts := q.Get("ts"); ts != "" {
		// Strand keeps one version of a page, the latest it fetched, which
		// the spec allows ("may return a newer version").
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			return nil, matrix.InvalidParam("ts must be a timestamp in milliseconds")
		}
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, matrix.InvalidParam("url must be an http or https URL")
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// previewFailed is the answer when the page cannot be had: the spec names
// no error for it; like a gateway, Strand answers 502.
func previewFailed(format string, a ...any) error {
	return matrix.Errorf("M_UNKNOWN", http.StatusBadGateway, format, a...)
}

// outboundGet fetches u with the outbound client. A destination that is
// not allowed is 403; any other failure 502.
func (s *Server) outboundGet(ctx context.Context, u string, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, matrix.InvalidParam("invalid url")
	}
	req.Header.Set("User-Agent", previewUserAgent)
	req.Header.Set("Accept", accept)
	res, err := s.previews.client.Do(req)
	if err != nil {
		if outbound.IsForbidden(err) {
			return nil, matrix.Forbidden("url previews may not reach that address")
		}
		s.logger.Debug("url preview fetch failed", "err", err)
		return nil, previewFailed("could not fetch the URL")
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		res.Body.Close()
		return nil, previewFailed("the URL answered with status %d", res.StatusCode)
	}
	return res, nil
}

// buildPreview fetches u and returns its preview.
func (s *Server) buildPreview(ctx context.Context, u *url.URL) (map[string]any, error) {
	res, err := s.outboundGet(ctx, u.String(), "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.5")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	og := map[string]any{}
	switch {
	case mt == "text/html" || mt == "application/xhtml+xml":
		props, err := parseOpenGraph(io.LimitReader(res.Body, previewPageBytes))
		if err != nil && len(props) == 0 {
			// Cut short (the timeout, the connection) before anything
			// was found; what was found before a cut is kept.
			return nil, previewFailed("could not read the page")
		}
		img := props["og:image"]
		if img == "" {
			img = props["og:image:url"]
		}
		if img == "" {
			img = props["og:image:secure_url"]
		}
		delete(props, "og:image")
		for _, k := range []string{"og:image:width", "og:image:height", "og:image:type", "og:image:secure_url", "og:image:url"} {
			delete(props, k) // describe the page's image, not the stored one
		}
		for k, v := range props {
			og[k] = v
		}
		if img == "" {
			break
		}
		ref, err := res.Request.URL.Parse(img) // relative to the page's final URL
		if err != nil || (ref.Scheme != "http" && ref.Scheme != "https") {
			break
		}
		if err := s.previewImage(ctx, ref.String(), og); err != nil {
			// A page without its image is still a preview.
			s.logger.Debug("url preview image not stored", "err", err)
		}
	case strings.HasPrefix(mt, "image/"):
		// The URL is an image itself: the preview is that image.
		if err := s.storePreviewImage(ctx, res, og); err != nil {
			return nil, err
		}
	}
	return og, nil
}

// previewImage fetches the image at u, stores it in the media repository
// and describes it in og.
func (s *Server) previewImage(ctx context.Context, u string, og map[string]any) error {
	res, err := s.outboundGet(ctx, u, "image/*")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	return s.storePreviewImage(ctx, res, og)
}

// storePreviewImage reads an image response (at most previewImageBytes),
// stores it and sets og:image (its mxc:// URI), og:image:type,
// og:image:width and og:image:height (when Strand can read its header)
// and matrix:image:size.
func (s *Server) storePreviewImage(ctx context.Context, res *http.Response, og map[string]any) error {
	ct := res.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !strings.HasPrefix(mt, "image/") {
		return previewFailed("og:image is not an image")
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, previewImageBytes+1))
	if err != nil {
		return previewFailed("could not read the image")
	}
	if len(body) > previewImageBytes {
		return previewFailed("the image is larger than %d bytes", previewImageBytes)
	}
	// Stored with no uploader (the server fetched it, so it counts
	// against nobody's quota), under an ID that is the hash of its type
	// and bytes: an image already stored, for another page or an earlier
	// fetch of this one, is not stored again.
	sum := sha256.Sum256(append([]byte(mt+"\x00"), body...))
	id := "preview" + hex.EncodeToString(sum[:20])
	size := uint64(len(body))
	if ok, err := s.log.MediaExists(ctx, id); err != nil {
		return logUnavailable(err)
	} else if !ok {
		if _, err := s.log.PutMedia(ctx, id, "", eventlog.MediaInfo{ContentType: mt, FileName: previewFileName(res.Request.URL)}, bytes.NewReader(body)); err != nil {
			return logUnavailable(err)
		}
	}
	og["og:image"] = "mxc://" + string(s.cfg.ServerName) + "/" + id
	og["og:image:type"] = mt
	og["matrix:image:size"] = size
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(body)); err == nil {
		og["og:image:width"], og["og:image:height"] = cfg.Width, cfg.Height
	}
	return nil
}

// previewFileName is the last path segment of an image's URL, if it makes
// a plausible file name.
func previewFileName(u *url.URL) string {
	name := u.Path[strings.LastIndexByte(u.Path, '/')+1:]
	if len(name) > 128 || !utf8.ValidString(name) {
		return ""
	}
	return name
}

// parseOpenGraph reads a page's OpenGraph properties (<meta property="og:…"
// content="…">, also given as name=), falling back to <title> for
// og:title and <meta name="description"> for og:description. The page is
// tokenised, not built into a tree, to the end of the
// (bounded) input: metadata belongs in the head, but pages put some in
// the body too. The error is the reader's, if it failed before its end.
func parseOpenGraph(r io.Reader) (map[string]string, error) {
	props := map[string]string{}
	var title, description string
	inTitle := false
	z := html.NewTokenizer(r)
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			err := z.Err()
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return finishOpenGraph(props, title, description), err
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch atom.Lookup(name) {
			case atom.Title:
				inTitle = tt == html.StartTagToken && title == ""
			case atom.Meta:
				if !hasAttr {
					continue
				}
				var prop, content string
				hasContent := false
				for {
					k, v, more := z.TagAttr()
					switch string(k) {
					case "property", "name":
						if prop == "" {
							prop = strings.ToLower(strings.TrimSpace(string(v)))
						}
					case "content":
						content, hasContent = string(v), true
					}
					if !more {
						break
					}
				}
				switch {
				case !hasContent:
				case prop == "description":
					if description == "" {
						description = content
					}
				case strings.HasPrefix(prop, "og:"):
					// The first value of a property wins: for arrays
					// (several og:image), the first is the main one.
					if _, seen := props[prop]; !seen && len(props) < previewMaxProperties && len(prop) <= 64 {
						props[prop] = content
					}
				}
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); atom.Lookup(name) == atom.Title {
				inTitle = false
			}
		case html.TextToken:
			if inTitle {
				title += string(z.Text())
			}
		}
	}
}

// finishOpenGraph applies the fallbacks and tidies every value.
func finishOpenGraph(props map[string]string, title, description string) map[string]string {
	if _, ok := props["og:title"]; !ok && strings.TrimSpace(title) != "" {
		props["og:title"] = title
	}
	if _, ok := props["og:description"]; !ok && strings.TrimSpace(description) != "" {
		props["og:description"] = description
	}
	for k, v := range props {
		limit := previewMaxValueRunes
		if k == "og:description" {
			limit = previewDescriptionRunes
		}
		v = tidyText(v, limit)
		if v == "" {
			delete(props, k)
			continue
		}
		props[k] = v
	}
	return props
}

// tidyText makes v valid UTF-8 with its whitespace collapsed, cut to at
// most limit runes (with an ellipsis when cut).
func tidyText(v string, limit int) string {
	v = strings.Join(strings.Fields(strings.ToValidUTF8(v, "\uFFFD")), " ")
	if utf8.RuneCountInString(v) <= limit {
		return v
	}
	rs := []rune(v)
	return strings.TrimSpace(string(rs[:limit-1])) + "…"
}
