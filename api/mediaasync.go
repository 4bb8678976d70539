package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"strand/eventlog"
	"strand/eventlog/matrix"
)

// Asynchronous uploads (content-repo.yaml, v1.7): a client first creates
// an mxc:// URI with POST /_matrix/media/v1/create, may send it in a
// message, and uploads the content later with PUT
// /_matrix/media/v3/upload/{serverName}/{mediaId}. Downloads of an ID
// whose content is not there yet wait for it (timeout_ms). The "created"
// fact lives in JetStream (eventlog.MediaPendingBucket), so every api
// process knows it and it survives restarts.

const (
	// DefaultMediaPendingExpiry is how long a created media ID waits for
	// its upload: the spec's recommended 24 hours.
	DefaultMediaPendingExpiry = 24 * time.Hour
	// DefaultMediaClaimLease is how long an upload's claim on a created
	// ID holds without renewal (it is renewed four times as often): an
	// upload whose process died frees the ID for another try after this.
	DefaultMediaClaimLease = time.Minute
	// DefaultMaxPendingMedia bounds a user's created, not yet uploaded IDs.
	DefaultMaxPendingMedia = 10
	// defaultMediaWait is the spec's default timeout_ms for content not
	// yet uploaded; maxMediaWait is the most Strand waits whatever is
	// asked (the spec says a server SHOULD impose a maximum).
	defaultMediaWait = 20 * time.Second
	maxMediaWait     = time.Minute
)

// createMedia serves POST /_matrix/media/v1/create.
func (s *Server) createMedia(w http.ResponseWriter, r *http.Request) error {
	user := session(r).UserID
	id := randomString(24, mediaIDAlphabet)
	expires := time.Now().Add(s.cfg.MediaPendingExpiry).Truncate(time.Millisecond)
	err := s.log.CreatePendingMedia(r.Context(), id, user, expires, s.cfg.MaxPendingMedia)
	if errors.Is(err, eventlog.ErrPendingLimit) {
		// The spec's answer for too many pending uploads. No
		// retry_after_ms: what lifts the limit is finishing an upload.
		return matrix.Errorf("M_LIMIT_EXCEEDED", http.StatusTooManyRequests,
			"too many pending media uploads (at most %d); upload to the ones created first", s.cfg.MaxPendingMedia)
	}
	if err != nil {
		s.logger.Error("create media ID failed", "err", err)
		return logUnavailable(err)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{
		"content_uri":       "mxc://" + string(s.cfg.ServerName) + "/" + id,
		"unused_expires_at": expires.UnixMilli(),
	})
	return nil
}

// cannotOverwrite is the spec's 409 for an upload to an ID that has (or
// is getting) content.
func cannotOverwrite(id string) error {
	return matrix.Errorf("M_CANNOT_OVERWRITE_MEDIA", http.StatusConflict, "media %s has already been uploaded", id)
}

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
//
// uploadMediaTo serves PUT /_matrix/media/{r0,v3}/upload/{serverName}/{mediaId}:
// the content of an ID the caller created. An ID is uploaded to once: a
// claim on its pending entry (compare-and-set) admits one upload, on
// whatever process, and a failed upload gives the claim back so that the
// client can try again.
func (s *Server) uploadMediaTo(w http.ResponseWriter, r *http.Request) error {
	id, err := s.localMediaID(r)
	if err != nil {
		return err
	}
	info, err := uploadInfo(r)
	if err != nil {
		return err
	}
	if ok, err := s.log.MediaExists(r.Context(), id); err != nil {
		return logUnavailable(err)
	} else if ok {
		return cannotOverwrite(id)
	}
	p, rev, err := s.log.GetPendingMedia(r.Context(), id)
	if errors.Is(err, eventlog.ErrMediaNotFound) {
		return matrix.NotFound("media ID %s was not created with /media/v1/create", id)
	}
	if err != nil {
		return logUnavailable(err)
	}
	if p.User != session(r).UserID {
		return matrix.Forbidden("media ID %s was created by another user", id)
	}
	now := time.Now()
	if p.Claimed(now, s.cfg.MediaClaimLease) {
		return cannotOverwrite(id)
	}
	if p.Expired(now) {
		return matrix.NotFound("media ID %s has expired", id)
	}
	claim, err := s.log.ClaimPendingMedia(r.Context(), p, rev, s.cfg.MediaClaimLease)
	if errors.Is(err, eventlog.ErrMediaClaimed) {
		return cannotOverwrite(id)
	}
	if err != nil {
		return logUnavailable(err)
	}
	// The claim is renewed while the body streams in, however long that
	// takes. Should it be lost all the same (renewals failing for a whole
	// lease, and another upload taking over), the store is stopped.
	storeCtx, stopStore := context.WithCancel(r.Context())
	defer stopStore()
	var lost atomic.Bool
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		claim.Keep(storeCtx, func() { lost.Store(true); stopStore() })
	}()
	stored, err := s.storeUpload(r.WithContext(storeCtx), id, info)
	stopStore()
	<-kept
	// The claim is settled even when the request has ended, so that an
	// interrupted upload does not leave the ID claimed.
	settle, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	if err == nil && !lost.Load() {
		// Keep renews only now and then: the ID may have been taken over
		// since its last renewal, while the body was still arriving.
		if cerr := claim.Confirm(settle); errors.Is(cerr, eventlog.ErrMediaClaimed) {
			lost.Store(true)
		} else if cerr != nil {
			s.logger.Warn("could not confirm media upload claim", "media_id", id, "err", cerr)
		}
	}
	if lost.Load() {
		s.logger.Warn("media upload claim lost to another upload", "media_id", id)
		if err == nil {
			// Stored and counted, but the client is told 409: neither the
			// file (unless the upload that took over wrote it again) nor
			// its size on the user's quota may remain.
			s.discardUpload(settle, id, stored.nuid)
			if rerr := s.log.RefundMediaUsage(settle, stored.user, stored.size); rerr != nil {
				s.logger.Warn("could not refund media usage", "media_id", id, "err", rerr)
			}
		}
		return matrix.Errorf("M_CANNOT_OVERWRITE_MEDIA", http.StatusConflict, "another upload to media %s took over", id)
	}
	if err != nil {
		if rerr := claim.Release(settle); rerr != nil {
			s.logger.Warn("could not release media upload claim", "media_id", id, "err", rerr)
		}
		return err
	}
	if err := claim.Finish(settle); err != nil {
		// The content is stored, which is what counts; a stale pending
		// entry is dropped when the user next reaches the limit, and
		// waiting downloads look again within a second.
		s.logger.Warn("could not finish pending media", "media_id", id, "err", err)
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// awaitUpload waits, as long as the request's timeout_ms allows, until
// the content of media id is stored. It returns nil when the content is
// there, 404 when id is not a created ID (or has expired), and the
// spec's 504 M_NOT_YET_UPLOADED when the wait runs out.
func (s *Server) awaitUpload(r *http.Request, id string) error {
	wait := defaultMediaWait
	if v := r.URL.Query().Get("timeout_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return matrix.InvalidParam("timeout_ms must be a whole number of milliseconds")
		}
		wait = min(time.Duration(min(ms, int64(maxMediaWait/time.Millisecond)))*time.Millisecond, maxMediaWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	err := s.log.WaitMedia(ctx, id)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, eventlog.ErrMediaNotFound):
		return matrix.NotFound("no media %s/%s", s.cfg.ServerName, id)
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		return matrix.Errorf("M_NOT_YET_UPLOADED", http.StatusGatewayTimeout, "media %s/%s has not been uploaded yet", s.cfg.ServerName, id)
	case r.Context().Err() != nil:
		return r.Context().Err()
	}
	return logUnavailable(err)
}
