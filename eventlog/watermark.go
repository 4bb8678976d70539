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

	mu       sync.RWMutex // read by every sync request; written per commit
	applied  map[string]uint64
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
	sub, err := nc.Subscribe(appliedSubject+"*", func(m *nats.Msg) {
		seq, setAside, err := parseApplied(m.Data)
		if err != nil {
			return
		}
		stream := strings.TrimPrefix(m.Subject, appliedSubject)
		if len(setAside) > 0 {
			w.noteSetAside(stream, setAside) // before the waiters wake
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

// Advance records that stream is applied up to seq and wakes waiters.
func (w *Watermark) Advance(stream string, seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq <= w.applied[stream] {
		return
	}
	w.applied[stream] = seq
	if ch, ok := w.changed[stream]; ok {
		close(ch)
		delete(w.changed, stream)
	}
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

func (w *Watermark) doRefresh(ctx context.Context, stream string) error {
	if w.refresh == nil {
		return nil
	}
	seq, err := w.refresh(ctx, stream)
	if err != nil {
		return fmt.Errorf("read applied position of %s: %w", stream, err)
	}
	w.Advance(stream, seq)
	return nil
}

// CatchUp waits until stream's projection has applied everything the log
// held when it was called (bounded by ctx), and reports whether it had to
// wait. A lookup that found nothing asks this before it answers "no such
// thing": the projection may just be behind the log (a projector catching
// up after a restart or a rebuild), and for an access token the wrong
// answer logs a client out for good.
func (w *Watermark) CatchUp(ctx context.Context, l *Log, stream string) (waited bool, err error) {
	head, err := l.Head(ctx, stream)
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
