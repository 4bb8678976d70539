package syncstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
	"strand/sessions"
)

// RegisterMetrics exposes the number of long-polls waiting and how
// responses were made.
func (h *Handler) RegisterMetrics(reg prometheus.Registerer) error {
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strand_sync_longpolls_waiting", Help: "Sync long-polls waiting for something to arrive.",
	}, func() float64 { return float64(h.Notifier.Waiting()) })); err != nil {
		return err
	}
	for _, p := range []struct {
		name string
		n    *atomic.Uint64
	}{{"idle", &h.paths.idle}, {"window", &h.paths.window}, {"build", &h.paths.build}} {
		if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "strand_sync_responses_total", Help: "Sync responses by how they were made: idle (nothing new, no query), window (recent events in memory), build (from the projection).",
			ConstLabels: prometheus.Labels{"path": p.name},
		}, func() float64 { return float64(p.n.Load()) })); err != nil {
			return err
		}
	}
	return nil
}

// Paths returns how many responses this handler made without a query
// (idle), from the window of recent events, and by a build.
func (h *Handler) Paths() (idle, window, build uint64) {
	return h.paths.idle.Load(), h.paths.window.Load(), h.paths.build.Load()
}

// Stop answers every waiting long-poll at once (with what it has), for a
// graceful shutdown; later requests do not wait either.
func (h *Handler) Stop() {
	h.stopOnce.Do(func() { close(h.stopping()) })
}

func (h *Handler) stopping() chan struct{} {
	h.stopMu.Lock()
	defer h.stopMu.Unlock()
	if h.stop == nil {
		h.stop = make(chan struct{})
	}
	return h.stop
}

// MaxTimeout caps a client's long-poll timeout.
const MaxTimeout = 5 * time.Minute

// parseTimeout reads the timeout query parameter (milliseconds; empty:
// none), capped at MaxTimeout. The cap is applied to the milliseconds,
// before the conversion to a Duration (nanoseconds), which would overflow
// for anything above about 292 years and turn negative: a long-poll that
// returns at once.
func parseTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil && errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(s, "-") {
		ms, err = math.MaxInt64, nil // more than any cap
	}
	if err != nil || ms < 0 {
		return 0, matrix.InvalidParam("timeout must be a non-negative number of milliseconds")
	}
	return time.Duration(min(ms, MaxTimeout.Milliseconds())) * time.Millisecond, nil
}

// Handler serves GET /sync. It is made, with its log consumer, by
// NewWorker.
type Handler struct {
	Store     *store.Store
	Log       *eventlog.Log
	Watermark *eventlog.Watermark
	Notifier  *Notifier
	Ephemeral *Ephemeral
	Logger    *slog.Logger
	// Sessions resolves access tokens (from memory when it follows the
	// log; see sessions.Cache). Required.
	Sessions *sessions.Cache
	// ApplyTimeout bounds how long a request waits for the projection to
	// reach the positions of its token (the api's --apply-timeout).
	ApplyTimeout time.Duration

	respond matrix.Responder

	stopOnce sync.Once
	stopMu   sync.Mutex
	stop     chan struct{}

	// marked is this worker's own newest presence write per user
	// (markedPresence), which its ephemeral view may not have read back.
	marked      sync.Map
	markedCount atomic.Int64 // about how many entries marked holds

	rooms     roomsCache
	filters   filterCache
	pushRules rulesCache
	e2ee      deviceState
	builds    coalescer[*built]
	paths     struct{ idle, window, build atomic.Uint64 }
}

// Routes returns a handler for a standalone sync worker: /sync under both
// API versions, CORS, and Matrix errors for everything else.
func (h *Handler) Routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /_matrix/client/r0/sync", h)
	mux.Handle("GET /_matrix/client/v3/sync", h)
	return h.respond.Shell(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hd, pattern := mux.Handler(r); pattern != "" {
			hd.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/_matrix/client/r0/sync" || r.URL.Path == "/_matrix/client/v3/sync" {
			matrix.WriteError(w, matrix.MethodNotAllowed("method %s not allowed on %s", r.Method, r.URL.Path))
			return
		}
		matrix.WriteError(w, matrix.Unrecognized("this is a sync worker: %s %s is served elsewhere", r.Method, r.URL.Path))
	}))
}

// GET /_matrix/client/v3/sync (and r0)
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.serve(w, r); err != nil {
		h.respond.Error(w, r, err)
	}
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ss, err := h.Sessions.Authenticate(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	req := &request{user: ss.UserID, device: ss.DeviceID}
	if s := q.Get("since"); s != "" {
		t, err := ParseToken(s)
		if err != nil {
			return err
		}
		req.since = &t
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.fullState = true
	default:
		return matrix.InvalidParam("full_state must be true or false")
	}
	setPresence := q.Get("set_presence")
	switch setPresence {
	case "":
		setPresence = "online"
	case "online", "offline", "unavailable":
	default:
		return matrix.InvalidParam("set_presence must be online, offline or unavailable")
	}
	timeout, err := parseTimeout(q.Get("timeout"))
	if err != nil {
		return err
	}
	if req.filter, err = h.filters.load(ctx, h.Store, ss.UserID, q.Get("filter")); err != nil {
		return err
	}
	if req.since != nil {
		if err := h.checkSince(ctx, req.since); err != nil {
			return err
		}
	}
	h.markPresence(ctx, ss.UserID, setPresence)
	if req.since != nil {
		if through, ok := h.e2ee.delivered(ss.UserID, ss.DeviceID, req.since.Accounts); ok {
			h.ackToDevice(ctx, ss.UserID, ss.DeviceID, through)
		}
	}
	deadline := time.Now().Add(timeout)

	filterKey := q.Get("filter")
	woken := false // by a change the projection may not show yet
	for {
		// Fast paths, for a token this worker itself issued: nothing has
		// happened for this user since (answer or wait without touching
		// the projection), or only new messages in their rooms (answer
		// from the window of recent events).
		if req.since != nil && !req.fullState {
			if cached, ok := h.rooms.get(ss.UserID, *req.since); ok && h.notifierCurrent() {
				changes, heads, known := h.Notifier.Since(ss.UserID, cached.rooms, seenOf(*req.since))
				switch {
				case known && len(changes) == 0:
					if !time.Now().Before(deadline) {
						h.writeNothing(w, ss, *req.since)
						return nil
					}
					woke, err := h.wait(ctx, ss.UserID, cached.rooms, seenOf(*req.since), deadline)
					if err != nil {
						return err
					}
					if !woke {
						h.writeNothing(w, ss, *req.since)
						return nil
					}
					woken = true
					continue
				case known:
					base, ok := h.lazyBase(ctx, req, cached.base, changes)
					if !ok {
						break
					}
					if resp, next, base, ok := fromWindow(req, base, changes, heads, h.Ephemeral, time.Now()); ok {
						h.rooms.put(ss.UserID, next, cached.rooms, base)
						h.e2ee.fill(resp, ss.UserID, ss.DeviceID)
						if !resp.empty() || !time.Now().Before(deadline) {
							h.paths.window.Add(1)
							writeResponse(w, resp, next)
							return nil
						}
						req.since = &next // everything was filtered out: wait on
						continue
					}
				}
			}
		}
		if woken && !h.projectionShows(ctx, deadline) {
			// The projector did not catch up in time: nothing to show.
			h.writeNothing(w, ss, *req.since)
			return nil
		}
		b, err := h.build(ctx, req, filterKey)
		if err != nil {
			return err
		}
		h.e2ee.built(b, ss.UserID, ss.DeviceID)
		if b.ackToDevice > 0 {
			h.ackToDevice(ctx, ss.UserID, ss.DeviceID, b.ackToDevice)
		}
		next := b.next()
		h.rooms.put(ss.UserID, next, b.rooms, b.base)
		if req.since == nil || !b.resp.empty() || !time.Now().Before(deadline) || req.fullState {
			h.paths.build.Add(1)
			writeResponse(w, b.resp, next)
			return nil
		}
		// Nothing yet: wait for a change that concerns this user, then
		// build again from the positions this response reflected.
		woke, err := h.wait(ctx, ss.UserID, b.rooms, seenOf(next), deadline)
		if err != nil {
			return err
		}
		if !woke {
			h.paths.build.Add(1)
			writeResponse(w, b.resp, next)
			return nil
		}
		woken = true
		req.since = &next
	}
}

// lazyBase is the window base of a lazy-loading request with the member
// events of the changes' senders that it lacks, read from the projection:
// one small read instead of a build. A message from someone whose member
// event the user was never sent (the room's admin, in a room of 10,000
// whose last joiners the initial sync showed) would otherwise make every
// member's long-poll a build. ok is false when they cannot be read as of
// the request's token: then a build answers.
func (h *Handler) lazyBase(ctx context.Context, req *request, base windowBase, changes []change) (windowBase, bool) {
	rooms, users := lazyMissing(req, base, changes)
	if len(rooms) == 0 {
		return base, true
	}
	evs, pos, err := h.Store.CurrentMemberEvents(ctx, rooms, users)
	if err != nil {
		h.Logger.Warn("sync: reading member events for the window", "err", err)
		return base, false
	}
	return withMembers(base, evs, pos, *req.since, len(rooms))
}

// writeNothing answers that nothing happened since the token: the same
// token again, with the device's last known key counts.
func (h *Handler) writeNothing(w http.ResponseWriter, ss store.Session, since Token) {
	h.paths.idle.Add(1)
	resp := newResponse()
	resp.NextBatch = since.String()
	h.e2ee.fill(resp, ss.UserID, ss.DeviceID)
	matrix.WriteJSON(w, http.StatusOK, resp)
}

// notifierCurrent reports whether this worker's log consumer has seen at
// least everything the projection has applied: only then does the
// notifier's silence mean that nothing happened (its connection may be
// re-establishing while the projector's is not).
func (h *Handler) notifierCurrent() bool {
	if !h.Log.Connected() {
		return false // nothing heard while disconnected means nothing
	}
	for _, stream := range projected {
		if h.Notifier.Consumed(stream) < h.Watermark.Applied(stream) {
			return false
		}
	}
	return true
}

// build assembles a response, sharing one build between identical
// concurrent requests (the same device's long-polls with the same token
// and filter, woken by the same event), which all get the same answer;
// only a build that started after a request arrived is shared with it
// (coalescer), so each still reads its own writes.
func (h *Handler) build(ctx context.Context, req *request, filterKey string) (*built, error) {
	key := req.user + "\x00" + req.device + "\x00" + filterKey + "\x00" + strconv.FormatBool(req.fullState)
	if req.since != nil {
		key += "\x00" + req.since.String()
	}
	return h.builds.do(ctx, key, func() (*built, error) {
		// Detached from the first caller: its disconnect must not fail
		// the others sharing the build.
		return build(context.WithoutCancel(ctx), h.Store, h.Ephemeral, &h.pushRules, req)
	})
}

// writeResponse writes a built response with its next_batch. Shared
// builds are read-only: the token goes into a shallow copy.
func writeResponse(w http.ResponseWriter, r *response, next Token) {
	out := *r
	out.NextBatch = next.String()
	matrix.WriteJSON(w, http.StatusOK, &out)
}

// checkSince refuses tokens from the future: positions beyond anything the
// log holds cannot have been issued by any worker. A token a little ahead
// of this worker's projection (issued by a faster one) is waited for.
func (h *Handler) checkSince(ctx context.Context, t *Token) error {
	for _, s := range []struct {
		stream string
		seq    uint64
	}{{eventlog.StreamRooms, t.Rooms}, {eventlog.StreamAccounts, t.Accounts}, {eventlog.StreamReceipts, t.Receipts}} {
		if s.seq <= h.Watermark.Applied(s.stream) {
			continue
		}
		head, err := h.Log.Head(ctx, s.stream)
		if err != nil {
			return matrix.Unavailable("the event log is unavailable; retry")
		}
		if s.seq > head {
			return matrix.InvalidParam("sync token is from the future")
		}
		wctx, cancel := context.WithTimeout(ctx, h.ApplyTimeout)
		err = h.Watermark.Wait(wctx, s.stream, s.seq)
		cancel()
		if err != nil {
			return matrix.Unavailable("the server is catching up; retry")
		}
	}
	if t.Ephemeral > h.Ephemeral.Consumed() {
		// Typing and presence are best effort, and never a reason to
		// refuse a token: wait briefly for this worker to catch up, and
		// if the position is beyond anything this worker will see (a
		// stream that was lost and recreated), start its part over.
		head, err := h.Log.Head(ctx, eventlog.StreamEphemeral)
		if err != nil {
			return matrix.Unavailable("the event log is unavailable; retry")
		}
		if t.Ephemeral > head {
			t.Ephemeral = 0
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		h.Ephemeral.WaitFor(wctx, t.Ephemeral)
		cancel()
	}
	return nil
}

// projected are the streams a sync response reads from the projection.
var projected = []string{eventlog.StreamRooms, eventlog.StreamAccounts, eventlog.StreamReceipts}

// markPresence makes a syncing user online (or what set_presence says),
// writing only when that changes something or a minute has passed, so
// that syncing is not a write per request.
func (h *Handler) markPresence(ctx context.Context, user, setPresence string) {
	if setPresence == "offline" {
		return
	}
	now := time.Now()
	fresh := func(presence string, lastActive int64) bool {
		return presence == setPresence && now.UnixMilli()-lastActive < time.Minute.Milliseconds()
	}
	cur, ok := h.Ephemeral.presenceOf(user)
	if ok && fresh(cur.Presence, cur.LastActiveTS) {
		h.forgetMarked(user) // read back: the view knows
		return
	}
	// A client's next request often comes before the view has read back
	// the record its last one wrote: without this, each would write again,
	// and every write wakes everyone sharing a room with the user. Only
	// while the view holds nothing newer than that write: a presence set
	// since (PUT /presence to unavailable) is overridden as before.
	if m, found := h.marked.Load(user); found {
		mp := m.(markedPresence)
		if fresh(mp.presence, mp.at) && (!ok || cur.LastActiveTS < mp.at) {
			return
		}
		h.forgetMarked(user)
	}
	rec := &eventlog.PresenceSet{UserID: user, Presence: setPresence, LastActiveTS: now.UnixMilli()}
	if ok {
		rec.StatusMsg = cur.StatusMsg
	}
	if _, err := h.Log.Append(ctx, eventlog.PresenceSubject(user), rec, eventlog.AppendOptions{}); err != nil {
		h.Logger.Warn("could not record presence", "user_id", user, "err", err)
		return
	}
	if _, loaded := h.marked.Swap(user, markedPresence{presence: setPresence, at: rec.LastActiveTS}); !loaded {
		// An entry stays until its user syncs again after the view has
		// read it back: users who never come back would fill the map.
		// Past the bound it starts again empty, which costs each user at
		// most one more write.
		if h.markedCount.Add(1) > markedMax {
			h.marked.Clear()
			h.markedCount.Store(0)
		}
	}
}

// markedMax bounds how many users' presence writes a worker remembers.
var markedMax int64 = 100_000

func (h *Handler) forgetMarked(user string) {
	if _, loaded := h.marked.LoadAndDelete(user); loaded {
		h.markedCount.Add(-1)
	}
}

// markedPresence is a presence a worker wrote for a syncing user, and when.
type markedPresence struct {
	presence string
	at       int64
}

// wait blocks until a change concerning the user arrives (woke true), or
// the deadline passes (woke false). The change may not be in the
// projection yet: see projectionShows.
func (h *Handler) wait(ctx context.Context, user string, rooms []string, seen map[string]uint64, deadline time.Time) (bool, error) {
	w, stale := h.Notifier.Register(user, rooms, seen)
	defer h.Notifier.Unregister(w)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if stale {
		// The response predates what the notifier remembers: let the
		// projection and the ephemeral view reach the notifier's floor
		// and build again.
		for _, stream := range projected {
			if err := h.Watermark.Wait(wctx, stream, h.Notifier.Floor(stream)); err != nil {
				return false, nil
			}
		}
		h.Ephemeral.WaitFor(wctx, h.Notifier.Floor(eventlog.StreamEphemeral))
		return wctx.Err() == nil, nil
	}
	select {
	case <-w.ch:
	case <-h.stopping():
		return false, nil
	case <-wctx.Done():
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	return true, nil
}

// projectionShows waits until the projection has applied what this
// worker's consumer has read (the change a long-poll was woken by), or
// the deadline passes. A build needs it; the window does not.
func (h *Handler) projectionShows(ctx context.Context, deadline time.Time) bool {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for _, stream := range projected {
		if err := h.Watermark.Wait(wctx, stream, h.Notifier.Consumed(stream)); err != nil {
			return false
		}
	}
	return true
}

// ackToDevice records that a device has received its to-device messages
// through an ACCOUNTS position, so they are dropped and not delivered
// again. Failing to record it only means they are delivered again.
func (h *Handler) ackToDevice(ctx context.Context, user, device string, through uint64) {
	rec := &eventlog.ToDeviceAcked{UserID: user, DeviceID: device, Through: through}
	opts := eventlog.AppendOptions{MsgID: fmt.Sprintf("todevice-ack:%s|%s|%d", user, device, through)}
	seq, err := h.Log.Append(ctx, eventlog.UserSubject(user), rec, opts)
	if err != nil {
		h.Logger.Warn("could not record to-device delivery", "user_id", user, "device_id", device, "err", err)
		return
	}
	// Wait (briefly) for the projection, so that a sync right after this
	// one, on any worker, does not deliver them again.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = h.Watermark.Wait(wctx, eventlog.StreamAccounts, seq)
}
