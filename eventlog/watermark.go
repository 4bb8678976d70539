package eventlog

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// appliedSubject carries "projection of stream X has applied up to seq N"
// notifications, published by projectors after each commit.
const appliedSubject = "strand.applied."

// PublishApplied tells every process that the projection of stream has
// committed everything up to seq, and which of those records it set aside
// because it can never apply them (their writers must not report success).
// It is a core-NATS message: cheap and at-most-once, which is why
// Watermark also refreshes from the source. The payload is the position,
// followed by the set-aside sequences, space-separated.
func (l *Log) PublishApplied(stream string, seq uint64, setAside ...uint64) error {
	b := strconv.AppendUint(nil, seq, 10)
	for _, s := range setAside {
		b = append(b, ' ')
		b = strconv.AppendUint(b, s, 10)
	}
	return l.nc.Publish(appliedSubject+stream, b)
}

// parseApplied reads a PublishApplied payload.
func parseApplied(data []byte) (seq uint64, setAside []uint64, err error) {
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0, nil, fmt.Errorf("empty applied notification")
	}
	if seq, err = strconv.ParseUint(fields[0], 10, 64); err != nil {
		return 0, nil, err
	}
	for _, f := range fields[1:] {
		s, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, nil, err
		}
		setAside = append(setAside, s)
	}
	return seq, setAside, nil
}

// setAsideKept bounds how many set-aside sequences a Watermark remembers
// per stream: enough for the writes waiting when they were announced.
const setAsideKept = 256

// RefreshFunc reads a stream's applied position from the projection itself.
type RefreshFunc func(ctx context.Context, stream string) (uint64, error)

// Watermark tracks how far each stream's projection has been applied, so
// that a write can answer only once it is readable (invariant 6). Waiters
// are woken by applied notifications; while somebody waits, the position is
// also re-read from the projection every RefreshEvery, in case a
// notification was lost. Nobody waiting means no polling at all.
type Watermark struct {
	refresh      RefreshFunc
	RefreshEvery time.Duration

	mu       sync.RWMutex      // read by every sync request; written per commit
	applied  map[string]uint64 // streams and ROOMS lanes; ROOMS is the whole stream's G
	rooms    roomsTracker
	setAside map[string][]uint64      // per stream, the newest set-aside sequences announced
	changed  map[string]chan struct{} // closed and replaced on each advance
	sub      *nats.Subscription
}

// NewWatermark subscribes to applied notifications on nc.
func NewWatermark(nc *nats.Conn, refresh RefreshFunc) (*Watermark, error) {
	w := &Watermark{
		refresh:      refresh,
		RefreshEvery: 200 * time.Millisecond,
		applied:      map[string]uint64{},
		setAside:     map[string][]uint64{},
		changed:      map[string]chan struct{}{},
	}
	// ">" rather than "*": ROOMS lanes announce as "ROOMS.<lane>".
	sub, err := nc.Subscribe(appliedSubject+">", func(m *nats.Msg) {
		seq, setAside, err := parseApplied(m.Data)
		if err != nil {
			return
		}
		stream := strings.TrimPrefix(m.Subject, appliedSubject)
		if len(setAside) > 0 {
			w.noteSetAside(LaneStream(stream), setAside) // before the waiters wake
		}
		w.Advance(stream, seq)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe applied notifications: %w", err)
	}
	w.sub = sub
	return w, nil
}

// Close stops listening.
func (w *Watermark) Close() error { return w.sub.Unsubscribe() }

// Advance records that stream (or a ROOMS lane) is applied up to seq and
// wakes waiters. A lane's advance may advance ROOMS as a whole.
func (w *Watermark) Advance(stream string, seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.set(stream, seq) {
		return
	}
	if i := LaneIndex(stream); i >= 0 {
		w.rooms.lanes[i] = seq
		w.set(StreamRooms, w.rooms.through(w.applied[StreamRooms]))
	}
}

// set raises stream's position to seq and wakes its waiters, reporting
// whether it rose. Called with w.mu held.
func (w *Watermark) set(stream string, seq uint64) bool {
	if seq <= w.applied[stream] {
		return false
	}
	w.applied[stream] = seq
	if ch, ok := w.changed[stream]; ok {
		close(ch)
		delete(w.changed, stream)
	}
	return true
}

// ObserveFrom tells the watermark that Observe will be called for every
// ROOMS record after seq, in order: from then on ROOMS can be known to be
// applied past a lane that has nothing to apply.
func (w *Watermark) ObserveFrom(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rooms.observeFrom(seq)
	w.set(StreamRooms, w.rooms.through(w.applied[StreamRooms]))
}

// ObservedFrom returns the sequence given to the first ObserveFrom (0 if
// none): ROOMS as it stood when this process started reading it.
func (w *Watermark) ObservedFrom() uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.rooms.start
}

// Observe records that the ROOMS record at seq is on subject (so in that
// subject's lane). Records come in stream order, after ObserveFrom.
func (w *Watermark) Observe(seq uint64, subject string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rooms.observe(seq, SubjectLane(subject))
	w.set(StreamRooms, w.rooms.through(w.applied[StreamRooms]))
}

func (w *Watermark) noteSetAside(stream string, seqs []uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	kept := append(w.setAside[stream], seqs...)
	if n := len(kept); n > setAsideKept {
		kept = append([]uint64(nil), kept[n-setAsideKept:]...)
	}
	w.setAside[stream] = kept
}

// SetAside reports whether the projection announced that it set aside the
// record at seq of stream instead of applying it. A writer that waited for
// seq asks this before it reports success. It knows only what the applied
// notifications said: a lost notification, or one older than the newest
// setAsideKept of the stream, answers false.
func (w *Watermark) SetAside(stream string, seq uint64) bool {
	stream = LaneStream(stream)
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, s := range w.setAside[stream] {
		if s == seq {
			return true
		}
	}
	return false
}

// Applied returns the last known applied position of stream.
func (w *Watermark) Applied(stream string) uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.applied[stream]
}

func (w *Watermark) state(stream string) (uint64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch, ok := w.changed[stream]
	if !ok {
		ch = make(chan struct{})
		w.changed[stream] = ch
	}
	return w.applied[stream], ch
}

// Wait blocks until stream's projection has applied seq, or ctx ends.
func (w *Watermark) Wait(ctx context.Context, stream string, seq uint64) error {
	cur, _ := w.state(stream)
	if cur >= seq {
		return nil
	}
	// Notifications sent before this process subscribed were never seen:
	// read the projection once for a stream not seen yet. After that only
	// the slow refresh tick reads it, in case a notification was lost.
	if cur == 0 {
		if err := w.doRefresh(ctx, stream); err != nil {
			return err
		}
	}
	var tick *time.Ticker
	for {
		cur, ch := w.state(stream)
		if cur >= seq {
			if tick != nil {
				tick.Stop()
			}
			return nil
		}
		if tick == nil {
			tick = time.NewTicker(w.RefreshEvery)
			defer tick.Stop()
		}
		select {
		case <-ch:
		case <-tick.C:
			if err := w.doRefresh(ctx, stream); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Refresh reads stream's applied position from the projection, for a
// reader that waits on Changed and cannot rely on notifications alone.
func (w *Watermark) Refresh(ctx context.Context, stream string) error {
	return w.doRefresh(ctx, stream)
}

func (w *Watermark) doRefresh(ctx context.Context, stream string) error {
	if w.refresh == nil {
		return nil
	}
	if stream == StreamRooms {
		// ROOMS as a whole follows from its lanes.
		for _, lane := range RoomLanes {
			if err := w.doRefresh(ctx, lane); err != nil {
				return err
			}
		}
	}
	seq, err := w.refresh(ctx, stream)
	if err != nil {
		return fmt.Errorf("read applied position of %s: %w", stream, err)
	}
	w.Advance(stream, seq)
	return nil
}

// Changed returns stream's applied position and a channel closed when it
// next rises.
func (w *Watermark) Changed(stream string) (uint64, <-chan struct{}) { return w.state(stream) }

// CatchUp waits until stream's projection has applied everything the log
// held when it was called (bounded by ctx), and reports whether it had to
// wait. A lookup that found nothing asks this before it answers "no such
// thing": the projection may just be behind the log (a projector catching
// up after a restart or a rebuild), and for an access token the wrong
// answer logs a client out for good.
//
// For a ROOMS lane, it waits for the lane's newest record only.
func (w *Watermark) CatchUp(ctx context.Context, l *Log, stream string) (waited bool, err error) {
	var head uint64
	if i := LaneIndex(stream); i >= 0 {
		head, err = l.LastSeq(ctx, StreamRooms, LaneFilter(i))
	} else {
		head, err = l.Head(ctx, stream)
	}
	if err != nil {
		return false, err
	}
	if w.Applied(stream) >= head {
		return false, nil
	}
	if err := w.Wait(ctx, stream, head); err != nil {
		return false, err
	}
	return true, nil
}

// roomsTrackerMax bounds the records a roomsTracker remembers while a lane
// is behind; past it, ROOMS falls back to the lowest lane until that lane
// catches up with the records observed since.
const roomsTrackerMax = 1 << 20

// roomsTracker works out how far ROOMS as a whole is applied from the
// lanes' positions and, for a reader of the whole stream, the lane of each
// record: ROOMS is applied through G when every record at or below G is
// applied by its lane. The lowest lane position is always such a G, but an
// idle lane's position moves only when its projector checks the stream
// (about every LaneIdleCheck), while the records read tell which lanes a
// range of the stream concerns at once.
type roomsTracker struct {
	lanes     [RoomLaneCount]uint64
	observing bool
	start     uint64    // the first from
	from      uint64    // every record after from is observed
	last      uint64    // the newest record observed
	queue     []laneRec // observed records, in order; those from head on are above the last G
	head      int
}

type laneRec struct {
	seq  uint64
	lane int
}

func (t *roomsTracker) observeFrom(seq uint64) {
	if !t.observing && t.start == 0 {
		t.start = seq
	}
	t.observing, t.from, t.last, t.queue, t.head = true, seq, seq, nil, 0
}

func (t *roomsTracker) observe(seq uint64, lane int) {
	if !t.observing || seq <= t.last {
		return
	}
	if len(t.queue)-t.head >= roomsTrackerMax {
		t.observeFrom(t.last)
	}
	t.queue = append(t.queue, laneRec{seq, lane})
	t.last = seq
}

// through returns how far ROOMS is applied, given that it is known to be
// applied through g.
func (t *roomsTracker) through(g uint64) uint64 {
	low := t.lanes[0]
	for _, p := range t.lanes[1:] {
		low = min(low, p)
	}
	g = max(g, low)
	if !t.observing || g < t.from {
		return g // records at or below from were never observed
	}
	i := t.head
	for i < len(t.queue) && t.queue[i].seq <= g {
		i++
	}
	for i < len(t.queue) && t.lanes[t.queue[i].lane] >= t.queue[i].seq {
		g = t.queue[i].seq
		i++
	}
	if i == len(t.queue) {
		g = max(g, t.last)
		t.queue, i = t.queue[:0], 0
	}
	t.head = i
	if t.head > 1024 && t.head > len(t.queue)/2 {
		// Keep the backing array from growing without bound.
		t.queue = append(t.queue[:0], t.queue[t.head:]...)
		t.head = 0
	}
	return g
}
