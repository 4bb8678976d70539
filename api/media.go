package api

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

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

// GET /_matrix/media/v3/config
// GET /_matrix/client/v1/media/config
func (s *Server) mediaConfig(w http.ResponseWriter, r *http.Request) error {
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"m.upload.size": s.cfg.MaxUploadBytes})
	return nil
}

// POST /_matrix/media/v3/upload
//
// uploadMedia serves POST /_matrix/media/{r0,v3}/upload: the content
// goes under a new media ID.
func (s *Server) uploadMedia(w http.ResponseWriter, r *http.Request) error {
	info, err := uploadInfo(r)
	if err != nil {
		return err
	}
	id := randomString(24, mediaIDAlphabet)
	if _, err := s.storeUpload(r, id, info); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": "mxc://" + string(s.cfg.ServerName) + "/" + id})
	return nil
}

// uploadInfo reads an upload's content type and file name from the
// request.
func uploadInfo(r *http.Request) (eventlog.MediaInfo, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	if err := matrix.CheckMaxLength("Content-Type", ct, matrix.MaxContentTypeBytes); err != nil {
		return eventlog.MediaInfo{}, err
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return eventlog.MediaInfo{}, matrix.InvalidParam("invalid Content-Type %q", ct)
	}
	name := r.URL.Query().Get("filename")
	if err := matrix.CheckMaxLength("filename", name, matrix.MaxFileNameBytes); err != nil {
		return eventlog.MediaInfo{}, err
	}
	return eventlog.MediaInfo{ContentType: ct, FileName: name}, nil
}

// storeUpload stores the request's body as media id of the caller and
// counts it against their quota. On any error nothing stays stored.
// storedUpload is an upload that storeUpload stored and counted.
type storedUpload struct {
	user string
	size uint64
	nuid string // the object store write (eventlog.PutMediaWrite)
}

func (s *Server) storeUpload(r *http.Request, id string, info eventlog.MediaInfo) (storedUpload, error) {
	user := session(r).UserID
	quota := uint64(s.cfg.MediaQuotaBytes)
	if quota > 0 {
		// A cheap early refusal, before the body is read. The binding check
		// is the compare-and-set after the upload.
		used, err := s.log.MediaUsage(r.Context(), user)
		if err != nil {
			return storedUpload{}, logUnavailable(err)
		}
		if used >= quota || (r.ContentLength > 0 && used+uint64(r.ContentLength) > quota) {
			return storedUpload{}, quotaExceeded(used, quota)
		}
	}
	size, nuid, err := s.log.PutMediaWrite(r.Context(), id, user, info, r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return storedUpload{}, matrix.TooLarge("uploads are limited to %d bytes", s.cfg.MaxUploadBytes)
		}
		s.logger.Error("store media failed", "err", err)
		return storedUpload{}, logUnavailable(err)
	}
	// Every upload is counted, quota or not, so that a quota set later
	// sees what came before it. The upload is stored first because its
	// size is known only once the body has been read; if counting it
	// would pass the quota (another upload of the same user, perhaps on
	// another api process, was counted meanwhile) or fails, the file is
	// removed again and the client never learns its URI.
	if used, err := s.log.AddMediaUsage(r.Context(), user, size, quota); err != nil {
		s.discardUpload(r.Context(), id, nuid)
		if errors.Is(err, eventlog.ErrMediaQuota) {
			return storedUpload{}, quotaExceeded(used, quota)
		}
		s.logger.Error("count media usage failed", "err", err)
		return storedUpload{}, logUnavailable(err)
	}
	return storedUpload{user: user, size: size, nuid: nuid}, nil
}

// quotaExceeded is the spec's answer for an upload past the user's quota:
// 403 M_FORBIDDEN ("the user has reached a quota for uploaded content",
// content-repo.yaml). Not 413 M_TOO_LARGE, which is about one upload's
// size, nor 429 M_LIMIT_EXCEEDED, which is a rate limit that waiting
// lifts; waiting does not lift a quota.
func quotaExceeded(used, quota uint64) error {
	return matrix.Forbidden("media quota reached: %d of %d bytes used", used, quota)
}

// discardUpload removes an upload that will not be acknowledged, unless
// id has been written again since (write nuid): an upload that lost its
// created ID to another must not remove the other's file. It runs even
// when the request has ended, so as not to leave the file behind.
func (s *Server) discardUpload(ctx context.Context, id, nuid string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.log.DeleteMediaWrite(ctx, id, nuid); err != nil {
		s.logger.Warn("could not remove refused upload", "media_id", id, "err", err)
	}
}

// localMediaID checks {serverName}/{mediaId} and returns the media ID.
func (s *Server) localMediaID(r *http.Request) (string, error) {
	server, id := pathVar(r, "serverName"), pathVar(r, "mediaId")
	if id == "" || len(id) > matrix.MaxMediaIDBytes || strings.ContainsAny(id, "/.") {
		return "", matrix.InvalidParam("invalid media ID")
	}
	if server != string(s.cfg.ServerName) {
		// Media of other servers would come over federation.
		return "", matrix.NotFound("no media %s/%s on this server", server, id)
	}
	return id, nil
}

// openLocalMedia opens this server's file id.
func (s *Server) openLocalMedia(ctx context.Context, id string) (*eventlog.MediaReader, error) {
	m, err := s.log.GetMedia(ctx, id)
	if errors.Is(err, eventlog.ErrMediaNotFound) {
		return nil, matrix.NotFound("no media %s/%s", s.cfg.ServerName, id)
	}
	if err != nil {
		return nil, logUnavailable(err)
	}
	return m, nil
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

// GET /_matrix/media/v3/download/{serverName}/{mediaId}
// GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}
// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}
// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}
//
// downloadMedia serves GET and HEAD /_matrix/media/{r0,v3}/download/...
// and /_matrix/client/v1/media/download/..., with Range requests.
func (s *Server) downloadMedia(w http.ResponseWriter, r *http.Request) error {
	id, err := s.localMediaID(r)
	if err != nil {
		return err
	}
	m, err := s.openLocalMedia(r.Context(), id)
	if me, ok := matrix.AsError(err); ok && me.Code == "M_NOT_FOUND" {
		// Perhaps created (POST /media/v1/create) and not uploaded yet.
		if err := s.awaitUpload(r, id); err != nil {
			return err
		}
		m, err = s.openLocalMedia(r.Context(), id)
	}
	if err != nil {
		return err
	}
	name := m.Info.FileName
	if n := pathVar(r, "fileName"); n != "" {
		name = n
	}
	ct := m.Info.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	// http.ServeContent answers Range, If-Range and If-None-Match, sets
	// Content-Length and Accept-Ranges, and sends 206 or 416. A media ID
	// names immutable content, so it is a strong ETag.
	setMediaHeaders(w, ct, name, -1)
	w.Header().Set("ETag", `"`+id+`"`)
	if n := strings.Count(r.Header.Get("Range"), ","); n >= maxRanges {
		// Every range of a multipart answer may mean reading the file
		// again from its start (see mediaSeeker); RFC 9110 lets a server
		// ignore Range, and it answers with the whole file.
		r.Header.Del("Range")
	}
	rs := &mediaSeeker{r: m, size: int64(m.Info.Size), open: func() (io.ReadCloser, error) {
		again, err := s.openLocalMedia(r.Context(), id)
		if err != nil {
			return nil, err
		}
		return again, nil
	}}
	defer rs.Close()
	http.ServeContent(w, r, "", time.Time{}, rs)
	if rs.err != nil && r.Context().Err() == nil {
		// The status line is out; all that is left is to cut the body
		// short, which the client sees against Content-Length.
		s.logger.Warn("media download cut short", "path", r.URL.Path, "err", rs.err)
	}
	return nil
}

// maxRanges bounds the ranges of one request that are honoured.
const maxRanges = 4

// mediaSeeker is the io.ReadSeeker http.ServeContent needs, over a stored
// file that can only be read from its start (the object store streams an
// object's chunks in order and cannot start in the middle). Seek only
// notes the offset; Read then gets there by reading forward and
// discarding, or, for an offset behind the current one, by opening the
// file again. Memory stays at one chunk whatever the file's size; the
// price of a range near the end of a large file is reading the file up to
// it, once.
type mediaSeeker struct {
	r    io.ReadCloser // positioned at pos
	pos  int64
	off  int64 // where the next Read starts
	size int64
	open func() (io.ReadCloser, error)
	err  error // the first read error, for the log
}

func (m *mediaSeeker) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += m.off
	case io.SeekEnd:
		offset += m.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start of the file")
	}
	m.off = offset
	return offset, nil
}

func (m *mediaSeeker) Read(p []byte) (int, error) {
	if m.off >= m.size {
		return 0, io.EOF
	}
	if m.off < m.pos || m.r == nil {
		if m.r != nil {
			_ = m.r.Close()
			m.r = nil
		}
		r, err := m.open()
		if err != nil {
			m.err = err
			return 0, err
		}
		m.r, m.pos = r, 0
	}
	if skip := m.off - m.pos; skip > 0 {
		n, err := io.CopyN(io.Discard, m.r, skip)
		m.pos += n
		if err != nil {
			m.err = err
			return 0, err
		}
	}
	n, err := m.r.Read(p)
	m.pos += int64(n)
	m.off = m.pos
	if err != nil && err != io.EOF {
		m.err = err
	}
	return n, err
}

func (m *mediaSeeker) Close() error {
	if m.r == nil {
		return nil
	}
	return m.r.Close()
}
