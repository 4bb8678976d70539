package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// MediaBucket is the JetStream object store holding uploaded media. Media
// content is durable data like any record, so it lives in JetStream too
// (chunked, replicated like the streams), not in Postgres or on a local
// disk: every api process serves every file, and nothing about media needs
// a projection, so a replay has nothing to rebuild.
const MediaBucket = "strand_media"

// ErrMediaNotFound is returned for a media ID the store does not hold.
var ErrMediaNotFound = errors.New("media not found")

// MediaInfo describes a stored file.
type MediaInfo struct {
	ContentType string
	FileName    string
	Size        uint64
}

const (
	metaContentType = "content_type"
	metaFileName    = "file_name"
	metaUploader    = "uploader"
)

func mediaConfig(o StreamOptions) jetstream.ObjectStoreConfig {
	r := o.Replicas
	if r == 0 {
		r = 1
	}
	return jetstream.ObjectStoreConfig{Bucket: MediaBucket, Description: "Strand uploaded media",
		Storage: jetstream.FileStorage, Replicas: r}
}

// ensureMedia declares the media bucket, refusing a replica count other
// than the bucket's as EnsureStreams does for the streams.
func ensureMedia(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	cfg := mediaConfig(o)
	obs, err := js.ObjectStore(ctx, MediaBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateObjectStore(ctx, cfg); err != nil {
			return fmt.Errorf("declare media bucket: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("declare media bucket: %w", err)
	}
	st, err := obs.Status(ctx)
	if err != nil {
		return fmt.Errorf("declare media bucket: %w", err)
	}
	if have := st.Replicas(); have != cfg.Replicas {
		return fmt.Errorf("media bucket has %d replicas, but this process was started with --replicas %d", have, cfg.Replicas)
	}
	return nil
}

// mediaStore is the bucket's handle, opened on first use (and again after
// a failed attempt).
type mediaStore struct {
	mu  sync.Mutex
	obs jetstream.ObjectStore
}

func (l *Log) media(ctx context.Context) (jetstream.ObjectStore, error) {
	l.mediaStore.mu.Lock()
	defer l.mediaStore.mu.Unlock()
	if l.mediaStore.obs == nil {
		obs, err := l.js.ObjectStore(ctx, MediaBucket)
		if err != nil {
			return nil, fmt.Errorf("open media bucket: %w", err)
		}
		l.mediaStore.obs = obs
	}
	return l.mediaStore.obs, nil
}

// PutMedia stores a file under name, streaming r in chunks, and returns
// its size. It is durable in JetStream when PutMedia returns.
func (l *Log) PutMedia(ctx context.Context, name, uploader string, info MediaInfo, r io.Reader) (uint64, error) {
	obs, err := l.media(ctx)
	if err != nil {
		return 0, err
	}
	oi, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: map[string]string{
		metaContentType: info.ContentType, metaFileName: info.FileName, metaUploader: uploader,
	}}, r)
	if err != nil {
		return 0, err
	}
	return oi.Size, nil
}

// MediaReader is a stored file being read.
type MediaReader struct {
	io.ReadCloser
	Info MediaInfo
}

// GetMedia opens a stored file, or returns ErrMediaNotFound.
func (l *Log) GetMedia(ctx context.Context, name string) (*MediaReader, error) {
	obs, err := l.media(ctx)
	if err != nil {
		return nil, err
	}
	res, err := obs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrMediaNotFound
	}
	if err != nil {
		return nil, err
	}
	oi, err := res.Info()
	if err != nil {
		_ = res.Close()
		return nil, err
	}
	return &MediaReader{ReadCloser: res, Info: MediaInfo{
		ContentType: oi.Metadata[metaContentType], FileName: oi.Metadata[metaFileName], Size: oi.Size,
	}}, nil
}
