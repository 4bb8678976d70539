package eventlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PreviewBucket is the key-value bucket caching URL previews (the
// OpenGraph JSON of a page, whose image is already in the media bucket),
// one key per URL. It is a cache, not a fact: losing it costs fetching
// the pages again. It lives in JetStream rather than in each process's
// memory so that every api process answers from one copy and a page's
// image is fetched and stored once per expiry, not once per process.
const PreviewBucket = "strand_url_previews"

// PreviewMaxAge is the longest a preview is kept; a deployment may serve
// them for less (api.Config.PreviewCacheTTL), never for more.
const PreviewMaxAge = 24 * time.Hour

// previewMaxBytes bounds the cache. When it is full, new previews are not
// cached (a key-value bucket refuses new writes rather than dropping old
// ones) until old ones age out.
const previewMaxBytes = 256 << 20

func ensurePreviews(ctx context.Context, js jetstream.JetStream, replicas int) error {
	_, err := js.KeyValue(ctx, PreviewBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: PreviewBucket,
			Description: "Strand URL preview cache", Storage: jetstream.FileStorage,
			Replicas: replicas, TTL: PreviewMaxAge, MaxBytes: previewMaxBytes})
	}
	if err != nil {
		return fmt.Errorf("declare url preview bucket: %w", err)
	}
	return nil
}

func (l *Log) previews(ctx context.Context) (jetstream.KeyValue, error) {
	l.mediaStore.mu.Lock()
	defer l.mediaStore.mu.Unlock()
	if l.mediaStore.previews == nil {
		kv, err := l.js.KeyValue(ctx, PreviewBucket)
		if err != nil {
			return nil, fmt.Errorf("open url preview bucket: %w", err)
		}
		l.mediaStore.previews = kv
	}
	return l.mediaStore.previews, nil
}

// previewKey is a URL's key: its SHA-256, since a URL holds characters
// no key may.
func previewKey(url string) string {
	h := sha256.Sum256([]byte(url))
	return hex.EncodeToString(h[:])
}

// CachedPreview returns the preview cached for url and when it was
// stored, or ErrMediaNotFound.
func (l *Log) CachedPreview(ctx context.Context, url string) ([]byte, time.Time, error) {
	kv, err := l.previews(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	e, err := kv.Get(ctx, previewKey(url))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, time.Time{}, ErrMediaNotFound
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("url preview: %w", err)
	}
	return e.Value(), e.Created(), nil
}

// CachePreview stores the preview of url.
func (l *Log) CachePreview(ctx context.Context, url string, preview []byte) error {
	kv, err := l.previews(ctx)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, previewKey(url), preview); err != nil {
		return fmt.Errorf("cache url preview: %w", err)
	}
	return nil
}
