package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // decoded for thumbnails
	"image/jpeg"
	"image/png"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/image/draw"
	"golang.org/x/sync/singleflight"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

// Thumbnails are the one place where a small, unauthenticated request can
// make the server do a lot of work: a file of a few hundred KiB can
// declare a canvas that decodes to hundreds of MiB. So the work is bounded
// four ways:
//
//   - only a fixed set of sizes (Config.ThumbnailSizes) is ever made and
//     stored; a request is answered with the nearest one, so an image has at
//     most len(sizes) thumbnails in the store however many sizes are asked;
//   - an image whose decoded form (estimated from its header, before any
//     pixel is decoded) is larger than Config.ThumbnailMaxDecodedBytes is
//     refused with 413 M_TOO_LARGE, the spec's answer for local content "too
//     large for the server to thumbnail";
//   - at most Config.ThumbnailJobs thumbnails are made at once per process;
//     the others wait for a slot, each for as long as its request lasts;
//   - concurrent requests for the same thumbnail share one job.

// ThumbnailSize is one size of the fixed set: a bounding box and a method,
// "crop" (cover the box, cut the middle) or "scale" (fit in the box).
type ThumbnailSize struct {
	Width, Height int
	Method        string
}

func (t ThumbnailSize) String() string {
	return fmt.Sprintf("%dx%d:%s", t.Width, t.Height, t.Method)
}

// DefaultThumbnailSizes are the sizes the spec suggests servers produce.
var DefaultThumbnailSizes = []ThumbnailSize{
	{32, 32, "crop"}, {96, 96, "crop"}, {320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"},
}

// ParseThumbnailSizes reads a list like "32x32:crop,320x240:scale".
func ParseThumbnailSizes(s string) ([]ThumbnailSize, error) {
	var out []ThumbnailSize
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		dims, method, ok := strings.Cut(item, ":")
		ws, hs, ok2 := strings.Cut(dims, "x")
		if !ok || !ok2 {
			return nil, fmt.Errorf("thumbnail size %q: want WIDTHxHEIGHT:crop or :scale", item)
		}
		w, err1 := strconv.Atoi(ws)
		h, err2 := strconv.Atoi(hs)
		if err1 != nil || err2 != nil || w < 1 || h < 1 || w > maxThumbnailSide || h > maxThumbnailSide {
			return nil, fmt.Errorf("thumbnail size %q: width and height must be 1 to %d", item, maxThumbnailSide)
		}
		if method != "crop" && method != "scale" {
			return nil, fmt.Errorf("thumbnail size %q: method must be crop or scale", item)
		}
		out = append(out, ThumbnailSize{w, h, method})
	}
	if len(out) == 0 || len(out) > maxThumbnailSizes {
		return nil, fmt.Errorf("between 1 and %d thumbnail sizes", maxThumbnailSizes)
	}
	return out, nil
}

const (
	// DefaultThumbnailMaxDecodedBytes is the default bound on an image's
	// decoded size. It admits a 4000 x 3000 8-bit RGBA PNG (46 MiB) and a
	// 40-megapixel baseline 4:2:0 JPEG (57 MiB), and refuses 16-bit images
	// of more than about 8 megapixels.
	DefaultThumbnailMaxDecodedBytes = 64 << 20
	// DefaultThumbnailJobs is the default number of thumbnails one process
	// makes at once: with the decoded bound, the peak memory thumbnailing
	// can take is about DefaultThumbnailJobs x (64 MiB + 40 MiB).
	DefaultThumbnailJobs = 2
	// maxThumbnailSizes bounds the fixed set, and so the thumbnails kept
	// per image.
	maxThumbnailSizes = 16
	// thumbnailJobTimeout bounds one job, waiting for a slot included.
	thumbnailJobTimeout = time.Minute
	// headerRecord is how much of a source is kept while its header is
	// read, to find what image.DecodeConfig does not report (PNG
	// interlacing, JPEG sampling and progressive coding).
	headerRecord = 256 << 10
)

// pickThumbnail chooses the size in the set to answer a request for a
// width x height thumbnail made by method. The spec asks for a thumbnail
// at least as large as requested where possible, never a smaller one
// unless that is impossible, and lets servers answer from precomputed
// sizes. So: the smallest size of the same method that covers the
// request; else the smallest of the other method that covers it (a
// scaled image the client can crop is better than a crop too small);
// else, no size being large enough, the largest of the same method, or
// the largest of all.
func pickThumbnail(sizes []ThumbnailSize, width, height int, method string) ThumbnailSize {
	area := func(t ThumbnailSize) int { return t.Width * t.Height }
	var best, sameLargest, largest *ThumbnailSize
	var other *ThumbnailSize
	for i := range sizes {
		t := &sizes[i]
		covers := t.Width >= width && t.Height >= height
		switch {
		case covers && t.Method == method:
			if best == nil || area(*t) < area(*best) {
				best = t
			}
		case covers:
			if other == nil || area(*t) < area(*other) {
				other = t
			}
		}
		if t.Method == method && (sameLargest == nil || area(*t) > area(*sameLargest)) {
			sameLargest = t
		}
		if largest == nil || area(*t) > area(*largest) {
			largest = t
		}
	}
	for _, t := range []*ThumbnailSize{best, other, sameLargest, largest} {
		if t != nil {
			return *t
		}
	}
	return DefaultThumbnailSizes[0] // unreachable: the set is never empty
}

func thumbnailKey(id string, t ThumbnailSize) string {
	return fmt.Sprintf("thumb/%s/%dx%d/%s", id, t.Width, t.Height, t.Method)
}

// thumbnailer runs thumbnail jobs: at most cap(sem) at once, one per key.
type thumbnailer struct {
	sem     chan struct{}
	group   singleflight.Group
	made    prometheus.Counter
	running prometheus.Gauge

	mu   sync.Mutex
	jobs map[string]*thumbJob // keyed like the flights in group
}

// thumbJob is the context one flight runs with, and how many requests are
// waiting for it. singleflight runs a job with one caller's context, but
// the job belongs to all of them: it must outlive the request that
// started it (others may be waiting) and end once nobody is.
type thumbJob struct {
	ctx    context.Context
	cancel context.CancelFunc
	refs   int
}

type thumbResult struct {
	data        []byte
	contentType string
}

func newThumbnailer(jobs int) *thumbnailer {
	return &thumbnailer{sem: make(chan struct{}, jobs), jobs: map[string]*thumbJob{},
		made: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strand_thumbnails_generated_total", Help: "Thumbnails made (decoded and scaled), as opposed to served from the store.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strand_thumbnail_jobs_running", Help: "Thumbnail jobs holding a slot (decoding and scaling) now.",
		})}
}

// do returns the result of job for key, sharing one run among every
// request asking for the same key meanwhile. A request stops waiting when
// its own context ends; the job is cancelled only when every request
// waiting for it has gone.
func (t *thumbnailer) do(ctx context.Context, key string, job func(ctx context.Context) (thumbResult, error)) (thumbResult, error) {
	t.mu.Lock()
	j := t.jobs[key]
	if j == nil {
		jctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), thumbnailJobTimeout)
		j = &thumbJob{ctx: jctx, cancel: cancel}
		t.jobs[key] = j
	}
	j.refs++
	t.mu.Unlock()
	defer t.leave(key, j)

	ch := t.group.DoChan(key, func() (any, error) {
		defer t.finish(key, j)
		return job(j.ctx)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return thumbResult{}, res.Err
		}
		r, _ := res.Val.(thumbResult)
		return r, nil
	case <-ctx.Done():
		return thumbResult{}, ctx.Err()
	}
}

// leave drops one waiter; the last one cancels the job and makes the key
// free for a new flight.
func (t *thumbnailer) leave(key string, j *thumbJob) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j.refs--
	if j.refs > 0 {
		return
	}
	j.cancel()
	if t.jobs[key] == j {
		delete(t.jobs, key)
		t.group.Forget(key)
	}
}

// finish is called when a flight's job returns.
func (t *thumbnailer) finish(key string, j *thumbJob) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.jobs[key] == j {
		delete(t.jobs, key)
	}
}

// acquire waits for a job slot as long as ctx allows.
func (t *thumbnailer) acquire(ctx context.Context) (release func(), err error) {
	select {
	case t.sem <- struct{}{}:
		t.running.Inc()
		return func() { t.running.Dec(); <-t.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// cannotThumbnail is the spec's answer for content the server cannot
// thumbnail.
func cannotThumbnail(format string, a ...any) error {
	return matrix.Errorf("M_UNKNOWN", http.StatusBadRequest, format, a...)
}

// GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}
// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
//
// thumbnailMedia serves GET /_matrix/media/{r0,v3}/thumbnail/{serverName}/{mediaId}
// and /_matrix/client/v1/media/thumbnail/...: the nearest size of the
// fixed set, from the store if it was made before.
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
	id, err := s.localMediaID(r)
	if err != nil {
		return err
	}
	size := pickThumbnail(s.cfg.ThumbnailSizes, width, height, method)
	key := thumbnailKey(id, size)
	if t, err := s.log.GetMedia(r.Context(), key); err == nil {
		defer t.Close()
		setMediaHeaders(w, t.Info.ContentType, thumbnailFileName(t.Info.ContentType), int64(t.Info.Size))
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, t)
		return nil
	}
	// The source may have been created (POST /media/v1/create) and not
	// uploaded yet: wait for it as a download does.
	if err := s.awaitUpload(r, id); err != nil {
		return err
	}
	res, err := s.thumbs.do(r.Context(), key, func(ctx context.Context) (thumbResult, error) {
		return s.makeThumbnail(ctx, id, key, size)
	})
	if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
		return matrix.Unavailable("thumbnailing is busy; retry")
	}
	if err != nil {
		return err
	}
	setMediaHeaders(w, res.contentType, thumbnailFileName(res.contentType), int64(len(res.data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.data)
	return nil
}

func thumbnailFileName(contentType string) string {
	if contentType == "image/jpeg" {
		return "thumbnail.jpg"
	}
	return "thumbnail.png"
}

// makeThumbnail is one job: check the source's header against the
// bounds, wait for a slot, decode, scale, encode and keep the result.
// The header is checked before waiting, so a refusal never queues.
func (s *Server) makeThumbnail(ctx context.Context, id, key string, size ThumbnailSize) (thumbResult, error) {
	src, err := s.openLocalMedia(ctx, id)
	if err != nil {
		return thumbResult{}, err
	}
	mt, _, _ := mime.ParseMediaType(src.Info.ContentType)
	if mt != "image/png" && mt != "image/jpeg" && mt != "image/gif" {
		src.Close()
		return thumbResult{}, cannotThumbnail("no thumbnail for media of type %q", src.Info.ContentType)
	}
	head := &recorder{r: src, limit: headerRecord}
	cfg, format, err := image.DecodeConfig(bufio.NewReader(head))
	src.Close()
	if err != nil {
		return thumbResult{}, cannotThumbnail("no thumbnail: the media is not an image Strand can read")
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxThumbnailSourcePixels {
		return thumbResult{}, matrix.TooLarge("content is too large to thumbnail (more than %d pixels)", maxThumbnailSourcePixels)
	}
	if cost := decodeCost(cfg, format, head.buf.Bytes()); cost > s.cfg.ThumbnailMaxDecodedBytes {
		return thumbResult{}, matrix.TooLarge("content is too large to thumbnail (%d bytes decoded, the limit is %d)", cost, s.cfg.ThumbnailMaxDecodedBytes)
	}

	release, err := s.thumbs.acquire(ctx)
	if err != nil {
		return thumbResult{}, err
	}
	defer release()
	src, err = s.openLocalMedia(ctx, id)
	if err != nil {
		return thumbResult{}, err
	}
	img, _, err := image.Decode(bufio.NewReader(src))
	src.Close()
	if err != nil {
		return thumbResult{}, cannotThumbnail("no thumbnail: the image cannot be decoded")
	}
	out, err := resize(ctx, img, size)
	img = nil // the decoded source is the bulk of the job's memory
	if err != nil {
		return thumbResult{}, err
	}
	var buf bytes.Buffer
	res := thumbResult{contentType: "image/png"}
	if format == "jpeg" {
		res.contentType = "image/jpeg"
		err = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 80})
	} else {
		err = png.Encode(&buf, out)
	}
	if err != nil {
		return thumbResult{}, fmt.Errorf("encode thumbnail: %w", err)
	}
	res.data = buf.Bytes()
	s.thumbs.made.Inc()
	if _, err := s.log.PutMedia(ctx, key, "", eventlog.MediaInfo{ContentType: res.contentType}, bytes.NewReader(res.data)); err != nil {
		s.logger.Warn("could not keep thumbnail", "key", key, "err", err)
	}
	return res, nil
}

// recorder keeps the first limit bytes read through it.
type recorder struct {
	r     io.Reader
	buf   bytes.Buffer
	limit int
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if room := c.limit - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(n, room)])
	}
	return n, err
}

// decodeCost estimates the bytes Go's decoders allocate for an image,
// from its header alone: the pixel buffer its colour model needs, plus
// what the format's decoder keeps beside it. Unknown details count at
// their worst.
func decodeCost(cfg image.Config, format string, head []byte) int64 {
	px := int64(cfg.Width) * int64(cfg.Height)
	switch format {
	case "png":
		cost := px * bytesPerPixel(cfg.ColorModel)
		// An interlaced PNG is decoded pass by pass into images of its
		// own, then merged: up to twice the pixel buffer at once.
		if len(head) <= 28 || head[28] != 0 {
			cost *= 2
		}
		return cost
	case "jpeg":
		if c, ok := jpegCost(head); ok {
			return c
		}
		// No frame header seen: three full planes, the CMYK conversion
		// and progressive coefficients for four full components.
		return px * (3 + 4 + 4*4)
	case "gif":
		return px // one paletted frame: Decode stops after the first
	}
	return px * 8
}

func bytesPerPixel(m color.Model) int64 {
	switch m {
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.Gray16Model, color.Alpha16Model:
		return 2
	case color.RGBAModel, color.NRGBAModel:
		return 4
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 8 // RGBA64, NRGBA64, and anything unforeseen
}

// jpegCost walks a JPEG's markers to its frame header and returns what
// image/jpeg allocates for it: one byte per sample of each component at
// its own sampling, 256 bytes (64 int32 coefficients) per block for
// progressive images, and a 4-byte-per-pixel CMYK image for four
// components.
func jpegCost(b []byte) (int64, bool) {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 0, false
	}
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xFF {
			return 0, false
		}
		marker := b[i+1]
		if marker == 0xFF { // fill byte
			i++
			continue
		}
		if marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7) {
			// Stuffed byte, TEM and RSTn carry no length; image/jpeg
			// steps over them, so this walk must too.
			i += 2
			continue
		}
		n := int(binary.BigEndian.Uint16(b[i+2:]))
		if n < 2 {
			return 0, false // the caller assumes the worst case
		}
		if marker >= 0xC0 && marker <= 0xC2 { // baseline, extended, progressive
			seg := b[i+4 : min(len(b), i+2+n)]
			if len(seg) < 6 {
				return 0, false
			}
			h, w, nc := int64(binary.BigEndian.Uint16(seg[1:])), int64(binary.BigEndian.Uint16(seg[3:])), int(seg[5])
			if len(seg) < 6+3*nc || nc == 0 {
				return 0, false
			}
			var hmax, vmax int64 = 1, 1
			for c := range nc {
				f := seg[6+3*c+1]
				hmax, vmax = max(hmax, int64(f>>4)), max(vmax, int64(f&0x0F))
			}
			mcuX, mcuY := (w+8*hmax-1)/(8*hmax), (h+8*vmax-1)/(8*vmax)
			var cost int64
			for c := range nc {
				f := seg[6+3*c+1]
				blocks := mcuX * int64(f>>4) * mcuY * int64(f&0x0F)
				cost += blocks * 64
				if marker == 0xC2 {
					cost += blocks * 256
				}
			}
			if nc == 4 {
				cost += w * h * 4
			}
			return cost, true
		}
		i += 2 + n
	}
	return 0, false
}

// resize makes size's thumbnail of img: "scale" fits it in the box,
// "crop" cuts the middle of img to the box's proportions and fits that;
// neither enlarges. Large reductions go first through a box filter that
// reads img a row at a time, so the resampler's buffers stay the size of
// the thumbnail rather than of the source (x/image/draw's kernels keep a
// float64 buffer of destination width x source height).
func resize(ctx context.Context, img image.Image, size ThumbnailSize) (image.Image, error) {
	r := img.Bounds()
	sw, sh := r.Dx(), r.Dy()
	if size.Method == "crop" {
		// The largest centred rectangle of the box's proportions.
		cw, ch := sw, sw*size.Height/size.Width
		if ch > sh {
			cw, ch = sh*size.Width/size.Height, sh
		}
		cw, ch = max(cw, 1), max(ch, 1)
		x0, y0 := r.Min.X+(sw-cw)/2, r.Min.Y+(sh-ch)/2
		r = image.Rect(x0, y0, x0+cw, y0+ch)
		sw, sh = cw, ch
	}
	ratio := min(1, float64(size.Width)/float64(sw), float64(size.Height)/float64(sh))
	tw, th := max(1, int(float64(sw)*ratio+0.5)), max(1, int(float64(sh)*ratio+0.5))
	if kx, ky := sw/tw, sh/th; kx > 1 || ky > 1 {
		reduced, err := boxReduce(ctx, img, r, kx, ky)
		if err != nil {
			return nil, err
		}
		img, r = reduced, reduced.Bounds()
	}
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	if r.Dx() == tw && r.Dy() == th {
		draw.Draw(dst, dst.Bounds(), img, r.Min, draw.Src)
	} else {
		draw.CatmullRom.Scale(dst, dst.Bounds(), img, r, draw.Src, nil)
	}
	return dst, nil
}

// boxReduce averages each kx x ky block of r in src into one pixel. The
// last r.Dx() mod kx columns and r.Dy() mod ky rows, less than one output
// pixel, are left out. Premultiplied RGBA is averaged, so transparent
// pixels do not darken their neighbours. Source rows are converted a
// segment at a time (about boxSegment pixels), so a very wide image needs
// no row buffer of its width.
func boxReduce(ctx context.Context, src image.Image, r image.Rectangle, kx, ky int) (*image.RGBA, error) {
	ow, oh := r.Dx()/kx, r.Dy()/ky
	out := image.NewRGBA(image.Rect(0, 0, ow, oh))
	cols := max(1, boxSegment/kx) // output columns per segment
	seg := image.NewRGBA(image.Rect(0, 0, cols*kx, 1))
	acc := make([]uint64, ow*4)
	n := uint64(kx * ky)
	for oy := range oh {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		clear(acc)
		for dy := range ky {
			y := r.Min.Y + oy*ky + dy
			for c0 := 0; c0 < ow; c0 += cols {
				c1 := min(ow, c0+cols)
				draw.Draw(seg, image.Rect(0, 0, (c1-c0)*kx, 1), src, image.Pt(r.Min.X+c0*kx, y), draw.Src)
				for ox := c0; ox < c1; ox++ {
					a := acc[ox*4 : ox*4+4 : ox*4+4]
					px := seg.Pix[(ox-c0)*kx*4 : (ox-c0+1)*kx*4]
					for i := 0; i < len(px); i += 4 {
						a[0] += uint64(px[i])
						a[1] += uint64(px[i+1])
						a[2] += uint64(px[i+2])
						a[3] += uint64(px[i+3])
					}
				}
			}
		}
		o := out.Pix[oy*out.Stride : oy*out.Stride+ow*4]
		for i, v := range acc {
			o[i] = uint8((v + n/2) / n)
		}
	}
	return out, nil
}

// boxSegment is how many source pixels boxReduce converts at a time.
const boxSegment = 4096
