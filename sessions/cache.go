// Package sessions resolves access tokens to sessions for the api and the
// sync workers: a cache over the projection's devices that follows the
// ACCOUNTS stream, so that repeat lookups need no database round trip and
// a revocation still holds at once (Cache), and the mapping of what it
// finds to the Matrix errors a client sees (Authenticate).
package sessions

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"strand/eventlog"
	"strand/projector/store"
)

// Cache resolves access tokens like store.SessionByToken, answering repeat
// lookups from memory: every authenticated request (every /sync poll
// included) needs its session, and a database round trip for it is the
// largest part of an idle sync and a fifth of a send.
//
// The cache is kept exact by the log, not by a timeout. Follow reads the
// ACCOUNTS stream from its head and drops every cached session of a user
// whose record could revoke one (a device deleted or given a new token,
// a password change that logs devices out, a deactivation). A cached
// session is used only while this reader has read at least as far as the
// accounts projection is known to have applied (the Watermark), so once a
// logout has been applied and this process knows it, the token is gone
// from this process's cache too. In one process (strand serve) that makes
// revocation exact. Between processes it holds once the other process has
// heard that the projection applied the logout; the revocation record
// reaches its reader as soon as it is stored, before the projector
// commits it, so in practice before the logout is even answered.
type Cache struct {
	store     *store.Store
	log       *eventlog.Log
	watermark *eventlog.Watermark
	logger    *slog.Logger
	wait      time.Duration

	mu             sync.RWMutex
	byHash         map[string]store.Session
	byUser         map[string][]string // user -> token hashes cached for them
	consumed       uint64              // ACCOUNTS records read (and evicted) through here
	revokedThrough uint64              // the last ACCOUNTS record read that evicted sessions
	following      bool                // Follow is reading and current
	evictions      uint64              // bumped by every eviction, to spot racing fills

	readers *eventlog.Readers // reports this cache's position to every process
	// beforeEvict, when set (tests), runs before a batch's evictions.
	beforeEvict func(seq uint64)
	// evictWait, when set (tests), replaces the const evictWait.
	evictWait time.Duration
}

// sessionsMax bounds the cache; when full it starts over.
const sessionsMax = 200000

// Config is what a Cache needs.
type Config struct {
	Store     *store.Store
	Log       *eventlog.Log
	Watermark *eventlog.Watermark
	// Readers carries this cache's position to every process, and theirs
	// to it (AwaitEvicted).
	Readers *eventlog.Readers
	Logger  *slog.Logger
	// Wait bounds how long a lookup that finds nothing waits for the
	// accounts projection to catch up with the log (Resolve);
	// DefaultWait when 0. A process's api and sync worker share it.
	Wait time.Duration
}

// DefaultWait is Config.Wait's default, the api's default apply timeout.
const DefaultWait = 10 * time.Second

// New returns a cache. Until Follow runs, every lookup goes to the
// database.
func New(cfg Config) *Cache {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	return &Cache{store: cfg.Store, log: cfg.Log, watermark: cfg.Watermark, readers: cfg.Readers, logger: cfg.Logger,
		wait: cfg.Wait, byHash: map[string]store.Session{}, byUser: map[string][]string{}}
}

// Lookup resolves the SHA-256 of an access token, or store.ErrNotFound.
func (c *Cache) Lookup(ctx context.Context, hash []byte) (store.Session, error) {
	key := string(hash)
	applied := c.watermark.Applied(eventlog.StreamAccounts)
	c.mu.RLock()
	usable := c.following && c.consumed >= applied && c.log.Connected()
	ss, hit := c.byHash[key]
	evictions := c.evictions
	c.mu.RUnlock()
	if usable && hit {
		return ss, nil
	}
	ss, err := c.store.SessionByToken(ctx, hash)
	if err != nil || !usable {
		return ss, err
	}
	// The row read reflects every revocation through `applied`. It is
	// kept only if the reader has evicted for nothing beyond that
	// (revokedThrough <= applied, checked below; records that revoke
	// nothing, like to-device messages and key uploads, do not hold fills
	// back): a revocation the reader has
	// read but the projection has not applied would otherwise be missed
	// for good. (Revocations the api waits for, like logout, are applied
	// before anyone relies on them; the first use of a refreshed token
	// revokes its predecessor without waiting.) A revocation read since
	// the lookup began bumped evictions, and the fill is dropped rather
	// than caching what that revocation may have ended.
	c.mu.Lock()
	if c.following && c.evictions == evictions && c.revokedThrough <= applied {
		if len(c.byHash) >= sessionsMax {
			c.clearLocked()
		}
		if _, ok := c.byHash[key]; !ok {
			c.byHash[key] = ss
			c.byUser[ss.UserID] = append(c.byUser[ss.UserID], key)
		}
	}
	c.mu.Unlock()
	return ss, nil
}

// ErrCatchingUp is returned by Resolve when the accounts projection did not
// reach the log's head in time to tell whether a token exists.
var ErrCatchingUp = errors.New("sessions: the accounts projection is catching up with the log")

// Resolve is Lookup that does not answer "not found" from a projection
// that is behind the log: it waits (up to wait) for the accounts
// projection to reach the log's head and looks again. An unknown token
// logs a client out for good, so a projector catching up after a restart
// or a rebuild must not produce one.
//
// A token issued with a refresh token is refused with ErrTokenExpired once
// its time is up. The first use of a token from a refresh revokes the
// token it replaced (see retirePrevious).
func (c *Cache) Resolve(ctx context.Context, hash []byte) (store.Session, error) {
	ss, err := c.resolve(ctx, hash)
	if err != nil {
		return ss, err
	}
	if ss.ExpiresTS != 0 && time.Now().UnixMilli() >= ss.ExpiresTS {
		return ss, ErrTokenExpired
	}
	if ss.RetiresPrevious {
		c.retirePrevious(ctx, ss, hash)
	}
	return ss, nil
}

func (c *Cache) resolve(ctx context.Context, hash []byte) (store.Session, error) {
	ss, err := c.Lookup(ctx, hash)
	if !errors.Is(err, store.ErrNotFound) {
		return ss, err
	}
	wctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	waited, werr := c.watermark.CatchUp(wctx, c.log, eventlog.StreamAccounts)
	switch {
	case werr != nil:
		return ss, ErrCatchingUp
	case waited:
		return c.Lookup(ctx, hash)
	}
	return ss, err
}

// ErrTokenExpired is returned by Resolve for an access token past its
// expiry: the client should use its refresh token (a soft logout).
var ErrTokenExpired = errors.New("sessions: the access token has expired")

// retirePrevious appends token.used for the first use of a refreshed
// token, which revokes the token it replaced (the spec keeps that one
// valid only until the new one is used). It happens here because every
// authenticated request, on the api and on sync workers, resolves its
// token here. The request is not held up: the new token is valid either
// way, and until the record is applied the previous token merely lives a
// few milliseconds longer. Requests racing on the same first use append
// one record between them (the Nats-Msg-Id is the token's hash); a failed
// append is logged and tried again by the next request.
func (c *Cache) retirePrevious(ctx context.Context, ss store.Session, hash []byte) {
	h := hex.EncodeToString(hash)
	rec := &eventlog.TokenUsed{UserID: ss.UserID, DeviceID: ss.DeviceID, TokenHash: h}
	_, err := c.log.Append(ctx, eventlog.UserSubject(ss.UserID), rec, eventlog.AppendOptions{MsgID: "token.used:" + h})
	if err != nil {
		c.logger.Warn("could not record the first use of a refreshed access token", "user_id", ss.UserID, "err", err)
	}
}

// Len is the number of cached sessions.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.byHash)
}

// clearLocked forgets everything. Lock held.
func (c *Cache) clearLocked() {
	c.byHash = map[string]store.Session{}
	c.byUser = map[string][]string{}
	c.evictions++
}

// evict drops the cached sessions of users (nil: everybody) and records
// that the ACCOUNTS stream has been read through seq.
func (c *Cache) evict(users []string, all bool, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if all {
		c.clearLocked()
	}
	if all || len(users) > 0 {
		c.revokedThrough = max(c.revokedThrough, seq)
	}
	for _, u := range users {
		for _, k := range c.byUser[u] {
			delete(c.byHash, k)
		}
		delete(c.byUser, u)
		c.evictions++
	}
	c.consumed = max(c.consumed, seq)
}

// Follow reads the ACCOUNTS stream and keeps the cache exact until ctx
// ends. When the reader fails, the cache is off (lookups go to the
// database) until it has started again from the stream's head.
func (c *Cache) Follow(ctx context.Context) {
	for ctx.Err() == nil {
		err := c.follow(ctx)
		c.mu.Lock()
		c.following = false
		c.clearLocked()
		c.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		c.logger.Warn("session cache: reading the accounts stream failed; using the database until it restarts", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (c *Cache) follow(ctx context.Context) error {
	head, err := c.log.Head(ctx, eventlog.StreamAccounts)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.clearLocked()
	c.consumed, c.following = head, true
	c.mu.Unlock()
	bctx, stopBeat := context.WithCancel(ctx)
	beaten := make(chan struct{})
	go func() { defer close(beaten); c.readers.Beat(bctx, sessionsTopic, c.position) }()
	defer func() {
		c.mu.Lock()
		c.following = false
		c.clearLocked()
		c.mu.Unlock()
		stopBeat() // reports "holds nothing" once the cache is empty
		<-beaten
	}()
	return c.log.Read(ctx, eventlog.StreamAccounts, eventlog.ReadOptions{From: head + 1}, func(_ context.Context, batch []eventlog.Msg) error {
		var users []string
		all := false
		for _, m := range batch {
			if !eventlog.Revokes(m.Type) {
				continue
			}
			var r struct {
				UserID string `json:"user_id"`
			}
			if err := json.Unmarshal(m.Data, &r); err != nil || r.UserID == "" {
				all = true // unreadable: forget everyone rather than guess
				continue
			}
			users = append(users, r.UserID)
		}
		last := batch[len(batch)-1].Seq
		if c.beforeEvict != nil {
			c.beforeEvict(last)
		}
		c.evict(users, all, last)
		c.readers.Report(sessionsTopic, last)
		return nil
	})
}
