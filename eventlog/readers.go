package eventlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Readers tracks how far the in-memory log readers of every process have
// read, so that a write can answer only once all of them have it. Some
// answers come from a reader's memory rather than from the projection (a
// sync worker's window and its "nothing happened" fast path, a session
// cache), and for those "the projection has applied it" is not enough for
// read-your-writes on every process.
//
// Each reader reports its position under a topic (core NATS,
// "strand.read.<topic>.<id>") after every batch and once a second; Await
// waits until every reader of a topic heard from within ReaderTTL has read
// through a sequence. A reader that stops reports that it holds nothing; a
// process that dies stops counting after ReaderTTL; a process cut off from
// NATS must not answer from its memory (the readers check their
// connection).
type Readers struct {
	nc *nats.Conn
	id string

	mu      sync.Mutex
	pos     map[string]map[string]readerState // topic -> reader -> state
	changed chan struct{}                     // closed and replaced on every report
	sub     *nats.Subscription
}

type readerState struct {
	pos  uint64
	seen time.Time
}

const (
	readersSubject = "strand.read."
	readerBeat     = time.Second
	// ReaderTTL is how long a reader counts after its last report.
	ReaderTTL = 3 * time.Second
	// HoldsNothing is the position a stopped reader reports.
	HoldsNothing = math.MaxUint64
)

// NewReaders listens to every reader's reports on nc. A nil *Readers
// tracks nothing: it reports nowhere and waits for no one.
func NewReaders(nc *nats.Conn) (*Readers, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	r := &Readers{nc: nc, id: hex.EncodeToString(id[:]), pos: map[string]map[string]readerState{}}
	sub, err := nc.Subscribe(readersSubject+">", func(m *nats.Msg) {
		rest := strings.TrimPrefix(m.Subject, readersSubject)
		i := strings.LastIndexByte(rest, '.')
		pos, err := strconv.ParseUint(string(m.Data), 10, 64)
		if i <= 0 || err != nil || rest[i+1:] == r.id {
			return // this process's own reports are recorded by Report
		}
		r.record(rest[:i], rest[i+1:], pos, time.Now())
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to reader reports: %w", err)
	}
	r.sub = sub
	return r, nil
}

// Close stops listening.
func (r *Readers) Close() { _ = r.sub.Unsubscribe() }

func (r *Readers) record(topic, id string, pos uint64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pos[topic] == nil {
		r.pos[topic] = map[string]readerState{}
	}
	// A reader's position only goes up: its reports are computed and sent
	// by several goroutines (the heartbeat, the reader itself), so an
	// older one may arrive after a newer one. A reader that stopped
	// (HoldsNothing) and reads again starts afresh.
	if prev, ok := r.pos[topic][id]; ok && prev.pos > pos && prev.pos != HoldsNothing {
		pos = prev.pos
	}
	r.pos[topic][id] = readerState{pos: pos, seen: now}
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// Report publishes that this process's reader of topic has read through
// pos. Topics are single subject tokens. A waiter in this process learns
// it at once, not from the published copy: that would take several
// goroutine hops, each behind whatever the reader has just woken (a sync
// worker's long-polls).
func (r *Readers) Report(topic string, pos uint64) {
	if r == nil {
		return
	}
	r.record(topic, r.id, pos, time.Now())
	_ = r.nc.Publish(readersSubject+topic+"."+r.id, strconv.AppendUint(nil, pos, 10))
}

// Beat reports pos() for topic once a second until ctx ends, then reports
// that the reader holds nothing.
func (r *Readers) Beat(ctx context.Context, topic string, pos func() uint64) {
	if r == nil {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(readerBeat)
	defer t.Stop()
	for {
		r.Report(topic, pos())
		select {
		case <-ctx.Done():
			r.Report(topic, HoldsNothing)
			return
		case <-t.C:
		}
	}
}

// Count is how many readers of topic were heard from within ReaderTTL.
func (r *Readers) Count(topic string) int {
	behind, _ := r.behind(topic, 0, time.Now())
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pos[topic]) - len(behind)
}

// behind returns the live readers of topic that have not read through
// seq, and a channel closed at the next report.
func (r *Readers) behind(topic string, seq uint64, now time.Time) ([]string, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, st := range r.pos[topic] {
		if now.Sub(st.seen) > ReaderTTL {
			delete(r.pos[topic], id)
			continue
		}
		if st.pos < seq {
			out = append(out, id)
		}
	}
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	slices.Sort(out)
	return out, r.changed
}

// Await waits until every live reader of topic has read through seq, or
// max has passed (an error naming the readers still behind), or ctx ends.
func (r *Readers) Await(ctx context.Context, topic string, seq uint64, max time.Duration) error {
	if r == nil {
		return nil // nobody reports: nothing to wait for
	}
	deadline := time.Now().Add(max)
	for {
		behind, changed := r.behind(topic, seq, time.Now())
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("readers %v of %s have not read seq %d after %s", behind, topic, seq, max)
		}
		select {
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// SyncReadersTopic is the Readers topic under which sync workers report
// how far they have read stream; a write waits for it (api) and the
// workers report it (syncstream).
func SyncReadersTopic(stream string) string { return "sync_" + stream }
