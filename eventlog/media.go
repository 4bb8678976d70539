package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// MediaBucket is the JetStream object store holding uploaded media. Media
// content is durable data like any record, so it lives in JetStream too
// (chunked, replicated like the streams), not in Postgres or on a local
// disk: every api process serves every file, and nothing about media needs
// a projection, so a replay has nothing to rebuild.
const MediaBucket = "strand_media"

// MediaUsageBucket is the key-value bucket holding each user's total of
// uploaded bytes, the figure the upload quota is checked against. It is
// derived data: the uploads themselves, each with its uploader in its
// metadata, are the facts, and the totals could be recounted from them.
// It lives in JetStream rather than in a projection so that every api
// process updates one counter per user with compare-and-set (see
// AddMediaUsage), with no projector in the path of an upload.
const MediaUsageBucket = "strand_media_usage"

// ErrMediaNotFound is returned for a media ID the store does not hold.
var ErrMediaNotFound = errors.New("media not found")

// ErrMediaQuota is returned by AddMediaUsage when the addition would take a
// user past their quota; nothing was added.
var ErrMediaQuota = errors.New("media quota exceeded")

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
		return ensureMediaBuckets(ctx, js, cfg.Replicas)
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
	return ensureMediaBuckets(ctx, js, cfg.Replicas)
}

// ensureMediaBuckets declares the key-value buckets beside the media.
func ensureMediaBuckets(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if err := ensureMediaUsage(ctx, js, replicas); err != nil {
		return err
	}
	if err := ensureMediaPending(ctx, js, replicas); err != nil {
		return err
	}
	return ensurePreviews(ctx, js, replicas)
}

// ensureMediaUsage declares the usage bucket. One revision per key is
// enough: a total is only ever read as it is now.
func ensureMediaUsage(ctx context.Context, js jetstream.JetStream, replicas int) error {
	kv, err := js.KeyValue(ctx, MediaUsageBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: MediaUsageBucket,
			Description: "Strand bytes uploaded per user", Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
			return fmt.Errorf("declare media usage bucket: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("declare media usage bucket: %w", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("declare media usage bucket: %w", err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if ok && bs.StreamInfo().Config.Replicas != replicas {
		return fmt.Errorf("media usage bucket has %d replicas, but this process was started with --replicas %d", bs.StreamInfo().Config.Replicas, replicas)
	}
	return nil
}

// mediaStore is the buckets' handles, opened on first use (and again after
// a failed attempt).
type mediaStore struct {
	mu       sync.Mutex
	obs      jetstream.ObjectStore
	usage    jetstream.KeyValue
	pending  jetstream.KeyValue
	previews jetstream.KeyValue
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

func (l *Log) mediaUsage(ctx context.Context) (jetstream.KeyValue, error) {
	l.mediaStore.mu.Lock()
	defer l.mediaStore.mu.Unlock()
	if l.mediaStore.usage == nil {
		kv, err := l.js.KeyValue(ctx, MediaUsageBucket)
		if err != nil {
			return nil, fmt.Errorf("open media usage bucket: %w", err)
		}
		l.mediaStore.usage = kv
	}
	return l.mediaStore.usage, nil
}

// DeleteMedia removes a stored file; a missing one is not an error.
func (l *Log) DeleteMedia(ctx context.Context, name string) error {
	obs, err := l.media(ctx)
	if err != nil {
		return err
	}
	if err := obs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete media %s: %w", name, err)
	}
	return nil
}

// MediaUsage returns the bytes user has uploaded (0 for none).
func (l *Log) MediaUsage(ctx context.Context, user string) (uint64, error) {
	used, _, err := l.readMediaUsage(ctx, user)
	return used, err
}

func (l *Log) readMediaUsage(ctx context.Context, user string) (used, rev uint64, err error) {
	kv, err := l.mediaUsage(ctx)
	if err != nil {
		return 0, 0, err
	}
	e, err := kv.Get(ctx, key(user))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("media usage of %s: %w", user, err)
	}
	used, err = strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("media usage of %s: %w", user, err)
	}
	return used, e.Revision(), nil
}

// mediaUsageAttempts bounds the compare-and-set retries of AddMediaUsage:
// each lost race means another upload of the same user was counted in
// between, so running out takes that many simultaneous uploads.
const mediaUsageAttempts = 16

// AddMediaUsage adds n bytes to user's total, unless that would take it
// past quota (0: no quota), in which case it adds nothing and returns
// ErrMediaQuota. The check and the addition are one compare-and-set on
// the user's key, so api processes racing to count uploads of the same
// user can never together pass the quota: the loser re-reads and checks
// again.
func (l *Log) AddMediaUsage(ctx context.Context, user string, n, quota uint64) (uint64, error) {
	kv, err := l.mediaUsage(ctx)
	if err != nil {
		return 0, err
	}
	for range mediaUsageAttempts {
		used, rev, err := l.readMediaUsage(ctx, user)
		if err != nil {
			return 0, err
		}
		if quota > 0 && used+n > quota {
			return used, ErrMediaQuota
		}
		_, err = kv.Update(ctx, key(user), []byte(strconv.FormatUint(used+n, 10)), rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("count media usage of %s: %w", user, err)
		}
		return used + n, nil
	}
	return 0, fmt.Errorf("count media usage of %s: %w", user, ErrConflict)
}

// PutMedia stores a file under name, streaming r in chunks, and returns
// its size. It is durable in JetStream when PutMedia returns.
func (l *Log) PutMedia(ctx context.Context, name, uploader string, info MediaInfo, r io.Reader) (uint64, error) {
	size, _, err := l.PutMediaWrite(ctx, name, uploader, info, r)
	return size, err
}

// PutMediaWrite is PutMedia that also returns the write's NUID, which
// names this one write of name: another write of the same name (an
// upload that took over the ID) gets another. DeleteMediaWrite takes it.
func (l *Log) PutMediaWrite(ctx context.Context, name, uploader string, info MediaInfo, r io.Reader) (size uint64, nuid string, err error) {
	obs, err := l.media(ctx)
	if err != nil {
		return 0, "", err
	}
	oi, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: map[string]string{
		metaContentType: info.ContentType, metaFileName: info.FileName, metaUploader: uploader,
	}}, r)
	if err != nil {
		return 0, "", err
	}
	return oi.Size, oi.NUID, nil
}

// DeleteMediaWrite removes file name only while it is still the write
// nuid (PutMediaWrite), so that an upload that lost its media ID to
// another never removes the other's file; gone or rewritten is not an
// error.
func (l *Log) DeleteMediaWrite(ctx context.Context, name, nuid string) error {
	obs, err := l.media(ctx)
	if err != nil {
		return err
	}
	oi, err := obs.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("media %s: %w", name, err)
	}
	if oi.NUID != nuid {
		return nil
	}
	if err := obs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete media %s: %w", name, err)
	}
	return nil
}

// RefundMediaUsage takes n bytes off user's total (never below 0): the
// size of an upload that was counted and then not kept.
func (l *Log) RefundMediaUsage(ctx context.Context, user string, n uint64) error {
	kv, err := l.mediaUsage(ctx)
	if err != nil {
		return err
	}
	for range mediaUsageAttempts {
		used, rev, err := l.readMediaUsage(ctx, user)
		if err != nil {
			return err
		}
		_, err = kv.Update(ctx, key(user), []byte(strconv.FormatUint(used-min(n, used), 10)), rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("refund media usage of %s: %w", user, err)
		}
		return nil
	}
	return fmt.Errorf("refund media usage of %s: %w", user, ErrConflict)
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

// MediaExists reports whether a file is stored under name.
func (l *Log) MediaExists(ctx context.Context, name string) (bool, error) {
	obs, err := l.media(ctx)
	if err != nil {
		return false, err
	}
	_, err = obs.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("media %s: %w", name, err)
	}
	return true, nil
}
