package api

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoded for thumbnails
	"image/jpeg"
	"image/png"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/image/draw"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

// The media repository: uploads go into JetStream's object store (see
// eventlog.MediaBucket), downloads and thumbnails are read from it by any
// api process. Served under the legacy /_matrix/media/{r0,v3} paths and
// the authenticated /_matrix/client/v1/media ones.

const (
	mediaIDAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	// maxThumbnailSide bounds a requested thumbnail's width and height.
	maxThumbnailSide = 1600
	// maxThumbnailSourcePixels bounds the images Strand decodes for a
	// thumbnail (a small file can declare a huge canvas).
	maxThumbnailSourcePixels = 40_000_000
)

// isMediaUpload reports whether a request carries a media upload, whose
// body may be larger than other requests' (Config.MaxUploadBytes).
func isMediaUpload(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/_matrix/media/") && strings.Contains(r.URL.Path, "/upload")
}

func (s *Server) mediaConfig(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"m.upload.size": s.cfg.MaxUploadBytes})
	return nil
}

func (s *Server) uploadMedia(w http.ResponseWriter, r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	if err := matrix.CheckMaxLength("Content-Type", ct, matrix.MaxContentTypeBytes); err != nil {
		return err
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return matrix.InvalidParam("invalid Content-Type %q", ct)
	}
	name := r.URL.Query().Get("filename")
	if err := matrix.CheckMaxLength("filename", name, matrix.MaxFileNameBytes); err != nil {
		return err
	}
	id := randomString(24, mediaIDAlphabet)
	_, err := s.log.PutMedia(r.Context(), id, session(r).UserID, eventlog.MediaInfo{ContentType: ct, FileName: name}, r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return matrix.TooLarge("uploads are limited to %d bytes", s.cfg.MaxUploadBytes)
		}
		s.logger.Error("store media failed", "err", err)
		return logUnavailable(err)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": "mxc://" + string(s.cfg.ServerName) + "/" + id})
	return nil
}

// openMedia resolves {serverName}/{mediaId} to a stored file.
func (s *Server) openMedia(r *http.Request) (*eventlog.MediaReader, string, error) {
	server, id := pathVar(r, "serverName"), pathVar(r, "mediaId")
	if id == "" || len(id) > matrix.MaxMediaIDBytes || strings.ContainsAny(id, "/.") {
		return nil, "", matrix.InvalidParam("invalid media ID")
	}
	if server != string(s.cfg.ServerName) {
		// Media of other servers would come over federation.
		return nil, "", matrix.NotFound("no media %s/%s on this server", server, id)
	}
	m, err := s.log.GetMedia(r.Context(), id)
	if errors.Is(err, eventlog.ErrMediaNotFound) {
		return nil, "", matrix.NotFound("no media %s/%s", server, id)
	}
	if err != nil {
		return nil, "", logUnavailable(err)
	}
	return m, id, nil
}

// inlineTypes are served inline; anything else is an attachment, so a
// browser does not render uploaded HTML or SVG on the homeserver's origin.
var inlineTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true, "image/apng": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mpeg": true, "audio/ogg": true, "audio/wav": true, "audio/webm": true, "audio/aac": true, "audio/flac": true, "audio/mp4": true,
	"text/plain": true, "text/csv": true, "application/json": true, "application/ld+json": true,
}

func setMediaHeaders(w http.ResponseWriter, contentType, fileName string, size int64) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	if size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	disp := "attachment"
	if inlineTypes[mt] {
		disp = "inline"
	}
	if fileName != "" {
		if v := mime.FormatMediaType(disp, map[string]string{"filename": fileName}); v != "" {
			disp = v
		}
	}
	h.Set("Content-Disposition", disp)
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Cache-Control", "public, max-age=86400, immutable")
}

func (s *Server) downloadMedia(w http.ResponseWriter, r *http.Request) error {
	m, _, err := s.openMedia(r)
	if err != nil {
		return err
	}
	defer m.Close()
	name := m.Info.FileName
	if n := pathVar(r, "fileName"); n != "" {
		name = n
	}
	ct := m.Info.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	setMediaHeaders(w, ct, name, int64(m.Info.Size))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	if _, err := io.Copy(w, m); err != nil {
		// The status line is out; all that is left is to cut the body
		// short, which the client sees against Content-Length.
		s.logger.Warn("media download cut short", "path", r.URL.Path, "err", err)
	}
	return nil
}

func (s *Server) thumbnailMedia(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	width, err1 := strconv.Atoi(q.Get("width"))
	height, err2 := strconv.Atoi(q.Get("height"))
	if err1 != nil || err2 != nil || width <= 0 || height <= 0 || width > maxThumbnailSide || height > maxThumbnailSide {
		return matrix.InvalidParam("width and height must be whole numbers from 1 to %d", maxThumbnailSide)
	}
	method := q.Get("method")
	switch method {
	case "":
		method = "scale"
	case "scale", "crop":
	default:
		return matrix.InvalidParam("method must be crop or scale")
	}
	m, id, err := s.openMedia(r)
	if err != nil {
		return err
	}
	defer m.Close()

	// A thumbnail made once is kept next to its original.
	key := fmt.Sprintf("thumb/%s/%dx%d/%s", id, width, height, method)
	if t, err := s.log.GetMedia(r.Context(), key); err == nil {
		defer t.Close()
		setMediaHeaders(w, t.Info.ContentType, "", int64(t.Info.Size))
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, t)
		return nil
	}

	mt, _, _ := mime.ParseMediaType(m.Info.ContentType)
	if mt != "image/png" && mt != "image/jpeg" && mt != "image/gif" {
		return matrix.NotFound("no thumbnail for media of type %q", m.Info.ContentType)
	}
	src, err := io.ReadAll(io.LimitReader(m, int64(s.cfg.MaxUploadBytes)+1))
	if err != nil {
		return logUnavailable(err)
	}
	thumb, thumbType, err := makeThumbnail(src, width, height, method)
	if err != nil {
		return err
	}
	if _, err := s.log.PutMedia(r.Context(), key, "", eventlog.MediaInfo{ContentType: thumbType}, bytes.NewReader(thumb)); err != nil {
		s.logger.Warn("could not keep thumbnail", "key", key, "err", err)
	}
	setMediaHeaders(w, thumbType, "", int64(len(thumb)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(thumb)
	return nil
}

// makeThumbnail scales an image to fit within width x height ("scale")
// or to cover it and then cuts out the middle ("crop"), never enlarging.
// PNG and GIF sources give PNG (keeping transparency), JPEG gives JPEG.
func makeThumbnail(src []byte, width, height int, method string) ([]byte, string, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(src))
	if err != nil {
		return nil, "", matrix.NotFound("no thumbnail: the media is not an image Strand can read")
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxThumbnailSourcePixels {
		return nil, "", matrix.NotFound("no thumbnail: the image is too large to scale")
	}
	img, _, err := image.Decode(bytes.NewReader(src))
	if err != nil {
		return nil, "", matrix.NotFound("no thumbnail: the image cannot be decoded")
	}
	b := img.Bounds()
	sw, sh := float64(b.Dx()), float64(b.Dy())
	var ratio float64
	if method == "crop" {
		ratio = max(float64(width)/sw, float64(height)/sh)
	} else {
		ratio = min(float64(width)/sw, float64(height)/sh)
	}
	ratio = min(ratio, 1)
	tw, th := max(1, int(sw*ratio+0.5)), max(1, int(sh*ratio+0.5))
	scaled := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.CatmullRom.Scale(scaled, scaled.Bounds(), img, b, draw.Src, nil)
	var out image.Image = scaled
	if method == "crop" {
		cw, ch := min(tw, width), min(th, height)
		x0, y0 := (tw-cw)/2, (th-ch)/2
		out = scaled.SubImage(image.Rect(x0, y0, x0+cw, y0+ch))
	}
	var buf bytes.Buffer
	if format == "jpeg" {
		err = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 80})
		return buf.Bytes(), "image/jpeg", err
	}
	err = png.Encode(&buf, out)
	return buf.Bytes(), "image/png", err
}
