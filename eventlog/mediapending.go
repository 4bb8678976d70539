package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MediaPendingBucket is the key-value bucket of media IDs created with
// POST /_matrix/media/v1/create whose content has not been uploaded yet.
// The "created" fact has to be shared by every api process (any of them
// may receive the upload or a download waiting for it) and survive
// restarts, so it lives in JetStream. A KV bucket rather than a stream
// record: the fact is small mutable state with a lifetime (pending, being
// uploaded, gone after expiry), which is what compare-and-set on a key's
// revision and the bucket's max age give directly, and nothing needs to
// be projected or replayed (the upload itself, in the media bucket, is the
// lasting fact).
//
// Keys: "id.<media ID>" holds one created ID (its creator, expiry and
// whether an upload has claimed it); "user.<b64 user>" holds the IDs a
// user has pending, so that the limit on pending IDs is one
// compare-and-set per creation whichever process serves it.
const MediaPendingBucket = "strand_media_pending"

// mediaPendingMaxAge is how long the bucket keeps an entry after its last
// write. The expiry that counts is the one written in the entry; this only
// bounds what is kept, and is longer than any ID's lifetime plus an upload.
const mediaPendingMaxAge = 72 * time.Hour

// ErrPendingLimit is returned by CreatePendingMedia when the user already
// has as many pending media IDs as allowed.
var ErrPendingLimit = errors.New("too many pending media uploads")

// ErrMediaClaimed is returned by ClaimPendingMedia when another upload
// already claimed the ID.
var ErrMediaClaimed = errors.New("media upload already under way")

// PendingMedia is a created media ID whose content is not stored yet.
type PendingMedia struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// ClaimedAt is when an upload claimed the ID or last renewed its
	// claim (zero: no claim). While the claim holds, a second upload is
	// refused; a failed upload gives it back, and one whose process died
	// stops renewing it, so that it lapses after its lease.
	ClaimedAt time.Time `json:"claimed_at,omitzero"`
}

// Expired reports whether the ID can no longer be uploaded to at now.
func (p PendingMedia) Expired(now time.Time) bool { return !now.Before(p.Expires) }

// Claimed reports whether an upload holds the ID at now, its claim being
// renewed within lease.
func (p PendingMedia) Claimed(now time.Time, lease time.Duration) bool {
	return !p.ClaimedAt.IsZero() && now.Sub(p.ClaimedAt) < lease
}

type pendingList struct {
	Pending []PendingMedia `json:"pending"`
}

func ensureMediaPending(ctx context.Context, js jetstream.JetStream, replicas int) error {
	kv, err := js.KeyValue(ctx, MediaPendingBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: MediaPendingBucket,
			Description: "Strand media IDs created but not uploaded yet", Storage: jetstream.FileStorage,
			Replicas: replicas, TTL: mediaPendingMaxAge}); err != nil {
			return fmt.Errorf("declare media pending bucket: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("declare media pending bucket: %w", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("declare media pending bucket: %w", err)
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo().Config.Replicas != replicas {
		return fmt.Errorf("media pending bucket has %d replicas, but this process was started with --replicas %d", bs.StreamInfo().Config.Replicas, replicas)
	}
	return nil
}

func (l *Log) mediaPending(ctx context.Context) (jetstream.KeyValue, error) {
	l.mediaStore.mu.Lock()
	defer l.mediaStore.mu.Unlock()
	if l.mediaStore.pending == nil {
		kv, err := l.js.KeyValue(ctx, MediaPendingBucket)
		if err != nil {
			return nil, fmt.Errorf("open media pending bucket: %w", err)
		}
		l.mediaStore.pending = kv
	}
	return l.mediaStore.pending, nil
}

// pendingIDKey encodes the media ID like a subject key: a media ID in a
// request path may hold any character, and a key with one NATS does not
// allow in keys would fail the lookup instead of finding nothing.
func pendingIDKey(id string) string     { return "id." + key(id) }
func pendingUserKey(user string) string { return "user." + key(user) }

// CreatePendingMedia records id as created by user, pending until
// expires, unless user already has limit pending IDs (ErrPendingLimit).
// The user's list is updated first, with compare-and-set, so that
// concurrent creations on any number of processes never pass the limit; a
// process that dies before writing the ID itself leaves an entry that
// counts until the limit is next reached, when entries are checked (see
// pruneUser).
func (l *Log) CreatePendingMedia(ctx context.Context, id, user string, expires time.Time, limit int) error {
	kv, err := l.mediaPending(ctx)
	if err != nil {
		return err
	}
	p := PendingMedia{ID: id, User: user, Created: time.Now(), Expires: expires}
	err = l.updateUserPending(ctx, kv, user, func(list []PendingMedia, checked bool) ([]PendingMedia, error) {
		if limit > 0 && len(list) >= limit {
			if !checked {
				return nil, errCheckEntries
			}
			return nil, ErrPendingLimit
		}
		return append(list, p), nil
	})
	if err != nil {
		return err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := kv.Create(ctx, pendingIDKey(id), b); err != nil {
		return fmt.Errorf("create pending media %s: %w", id, err)
	}
	return nil
}

// pendingCreateGrace is how long after its entry in the user's list a
// creation may take to write its ID key; an entry without one after that
// was left by a process that died.
const pendingCreateGrace = time.Minute

// errCheckEntries asks updateUserPending to check the list's entries
// against the ID keys and the media bucket before deciding again.
var errCheckEntries = errors.New("check pending entries")

// updateUserPending applies change to user's list of pending IDs, with
// expired ones already dropped, and writes the result with compare-and-set,
// reading again after a lost race. change may ask (errCheckEntries) for
// entries that are no longer pending to be dropped first, which costs a
// read per entry and so happens only when a limit is reached.
func (l *Log) updateUserPending(ctx context.Context, kv jetstream.KeyValue, user string, change func([]PendingMedia, bool) ([]PendingMedia, error)) error {
	k := pendingUserKey(user)
	checked := false
	for range mediaUsageAttempts {
		var list pendingList
		var rev uint64
		e, err := kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("pending media of %s: %w", user, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &list); err != nil {
				return fmt.Errorf("pending media of %s: %w", user, err)
			}
		}
		now := time.Now()
		list.Pending = slices.DeleteFunc(list.Pending, func(p PendingMedia) bool { return p.Expired(now) })
		if checked {
			if list.Pending, err = l.stillPending(ctx, kv, list.Pending); err != nil {
				return err
			}
		}
		next, err := change(list.Pending, checked)
		if errors.Is(err, errCheckEntries) {
			checked = true
			continue
		}
		if err != nil {
			return err
		}
		b, err := json.Marshal(pendingList{Pending: next})
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, k, b)
		} else {
			_, err = kv.Update(ctx, k, b, rev)
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return fmt.Errorf("pending media of %s: %w", user, err)
		}
		return nil
	}
	return fmt.Errorf("pending media of %s: %w", user, ErrConflict)
}

// stillPending keeps the entries whose ID is still created and not
// uploaded: it drops those whose content is stored (a process died
// between storing an upload and taking it off the list) and those whose
// ID key was never written (a process died in CreatePendingMedia), once
// that is older than any creation still under way can be.
func (l *Log) stillPending(ctx context.Context, kv jetstream.KeyValue, list []PendingMedia) ([]PendingMedia, error) {
	obs, err := l.media(ctx)
	if err != nil {
		return nil, err
	}
	var keep []PendingMedia
	for _, p := range list {
		if _, err := obs.GetInfo(ctx, p.ID); err == nil {
			continue
		} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, fmt.Errorf("media %s: %w", p.ID, err)
		}
		if _, err := kv.Get(ctx, pendingIDKey(p.ID)); errors.Is(err, jetstream.ErrKeyNotFound) {
			if time.Since(p.Created) > pendingCreateGrace {
				continue
			}
		} else if err != nil {
			return nil, fmt.Errorf("pending media %s: %w", p.ID, err)
		}
		keep = append(keep, p)
	}
	return keep, nil
}

// GetPendingMedia returns the created ID id and its key's revision, or
// ErrMediaNotFound if it was never created (or is long gone). An expired
// ID is returned as it is; the caller decides with Expired.
func (l *Log) GetPendingMedia(ctx context.Context, id string) (PendingMedia, uint64, error) {
	kv, err := l.mediaPending(ctx)
	if err != nil {
		return PendingMedia{}, 0, err
	}
	e, err := kv.Get(ctx, pendingIDKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return PendingMedia{}, 0, ErrMediaNotFound
	}
	if err != nil {
		return PendingMedia{}, 0, fmt.Errorf("pending media %s: %w", id, err)
	}
	var p PendingMedia
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return PendingMedia{}, 0, fmt.Errorf("pending media %s: %w", id, err)
	}
	return p, e.Revision(), nil
}

// MediaClaim is an upload's hold on a created ID.
type MediaClaim struct {
	l     *Log
	lease time.Duration
	mu    sync.Mutex
	p     PendingMedia
	rev   uint64 // the ID key's revision as this claim last wrote it
}

// ClaimPendingMedia claims p (read at revision rev) for an upload, so that
// of two uploads to one ID, on any processes, one proceeds and the other
// gets ErrMediaClaimed. A claim lapses unless renewed (MediaClaim.Keep)
// within lease; a lapsed one can be taken over.
func (l *Log) ClaimPendingMedia(ctx context.Context, p PendingMedia, rev uint64, lease time.Duration) (*MediaClaim, error) {
	now := time.Now()
	if p.Claimed(now, lease) {
		return nil, ErrMediaClaimed
	}
	p.ClaimedAt = now
	next, err := l.putPending(ctx, p, rev)
	if err != nil {
		return nil, err
	}
	return &MediaClaim{l: l, lease: lease, p: p, rev: next}, nil
}

// Keep renews the claim four times a lease until ctx ends. If the claim
// was lost (taken over after renewals failed to arrive for a whole lease),
// it calls lost and returns. A renewal that fails otherwise (NATS away for
// a moment) is tried again at the next tick: the claim holds for the rest
// of its lease meanwhile.
func (c *MediaClaim) Keep(ctx context.Context, lost func()) {
	t := time.NewTicker(c.lease / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if errors.Is(c.renew(ctx), ErrMediaClaimed) {
			lost()
			return
		}
	}
}

// renew writes the claim again; ErrMediaClaimed means another upload took
// it over.
func (c *MediaClaim) renew(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.p
	p.ClaimedAt = time.Now()
	next, err := c.l.putPending(ctx, p, c.rev)
	if err == nil {
		c.p, c.rev = p, next
	}
	return err
}

// Confirm checks, once the content is stored and before it is
// acknowledged, that the claim is still this upload's (and renews it, so
// that it holds until Finish): ErrMediaClaimed means another upload took
// the ID over since Keep's last renewal, and the stored content must not
// be acknowledged.
func (c *MediaClaim) Confirm(ctx context.Context) error {
	return c.renew(ctx)
}

// Release gives the claim of a failed upload back, so the client can try
// again.
func (c *MediaClaim) Release(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.p
	p.ClaimedAt = time.Time{}
	next, err := c.l.putPending(ctx, p, c.rev)
	if err == nil {
		c.p, c.rev = p, next
	}
	return err
}

// Finish is called once the content is stored: it takes the ID off its
// creator's pending list and tells waiting downloads (WaitMedia) on every
// process that the content is there. The ID key stays until the bucket's
// max age removes it; the stored object is what answers from now on.
func (c *MediaClaim) Finish(ctx context.Context) error {
	c.mu.Lock()
	p := c.p
	c.mu.Unlock()
	return c.l.finishPendingMedia(ctx, p)
}

func (l *Log) putPending(ctx context.Context, p PendingMedia, rev uint64) (uint64, error) {
	kv, err := l.mediaPending(ctx)
	if err != nil {
		return 0, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return 0, err
	}
	next, err := kv.Update(ctx, pendingIDKey(p.ID), b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, ErrMediaClaimed
	}
	if err != nil {
		return 0, fmt.Errorf("pending media %s: %w", p.ID, err)
	}
	return next, nil
}

func (l *Log) finishPendingMedia(ctx context.Context, p PendingMedia) error {
	if err := l.nc.Publish(mediaUploadedSubject(p.ID), nil); err != nil {
		return fmt.Errorf("announce media %s: %w", p.ID, err)
	}
	kv, err := l.mediaPending(ctx)
	if err != nil {
		return err
	}
	return l.updateUserPending(ctx, kv, p.User, func(list []PendingMedia, _ bool) ([]PendingMedia, error) {
		return slices.DeleteFunc(list, func(q PendingMedia) bool { return q.ID == p.ID }), nil
	})
}

// mediaUploadedSubject encodes the media ID: one from a request path may
// hold "*", ">" or a space, which would subscribe to a wildcard or fail.
func mediaUploadedSubject(id string) string { return "strand.media.uploaded." + key(id) }

// mediaWaitPoll is how often WaitMedia looks for the content even without
// an announcement (one may be lost, or the uploading process may have died
// after storing the content but before announcing it).
const mediaWaitPoll = time.Second

// WaitMedia waits until id's content is stored, ctx ends (its error is
// returned) or the ID turns out not to be pending any more
// (ErrMediaNotFound: expired, or never created). It is woken by the
// announcement MediaClaim.Finish publishes, and looks every
// mediaWaitPoll in any case.
func (l *Log) WaitMedia(ctx context.Context, id string) error {
	// Stored already is the common case (every thumbnail asks): answer it
	// without a subscription.
	if ok, err := l.MediaExists(ctx, id); err != nil || ok {
		return err
	}
	ch := make(chan *nats.Msg, 1)
	sub, err := l.nc.ChanSubscribe(mediaUploadedSubject(id), ch)
	if err != nil {
		return fmt.Errorf("wait for media %s: %w", id, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	obs, err := l.media(ctx)
	if err != nil {
		return err
	}
	t := time.NewTicker(mediaWaitPoll)
	defer t.Stop()
	for {
		// Subscribed first, then looked: an upload finishing in between is
		// either seen here or announced to the subscription.
		if _, err := obs.GetInfo(ctx, id); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("media %s: %w", id, err)
		}
		p, _, err := l.GetPendingMedia(ctx, id)
		if err != nil {
			return err
		}
		if p.Expired(time.Now()) && p.ClaimedAt.IsZero() {
			// Nobody can upload it any more. (A claim taken before the
			// expiry may still finish; one whose process died leaves
			// downloads waiting until their timeout.)
			return ErrMediaNotFound
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-t.C:
		}
	}
}
