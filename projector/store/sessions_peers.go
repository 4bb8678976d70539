package store

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Revocation across processes. A session cache is exact within its
// process (see Sessions); so that a logout answered by one process also
// holds at once on every other, each following cache tells the others how
// far it has read the ACCOUNTS stream (core NATS, on every batch and once
// a second), and the process that appended a revocation waits, before
// answering, until every cache heard from recently has read past it
// (AwaitEvicted). A cache that stops following says it holds nothing; one
// that disappears stops counting after peerTTL, and one that is cut off
// from NATS does not use its cache at all.

const (
	peersSubject = "strand.sessions.read."
	peerBeat     = time.Second
	peerTTL      = 3 * time.Second
	// evictWait bounds how long a revocation waits for other processes.
	evictWait = 5 * time.Second
	// holdsNothing is the position a cache that stopped following reports.
	holdsNothing = math.MaxUint64
)

type peerState struct {
	pos  uint64
	seen time.Time
}

// peers is what a cache knows of the others' (and its own) positions.
type peers struct {
	mu      sync.Mutex
	pos     map[string]peerState
	changed chan struct{} // closed and replaced on every report
}

func (p *peers) report(id string, pos uint64, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pos == nil {
		p.pos = map[string]peerState{}
	}
	p.pos[id] = peerState{pos: pos, seen: now}
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// lagging returns the caches heard from within peerTTL that have not read
// through seq, and a channel closed at the next report.
func (p *peers) lagging(seq uint64, now time.Time) ([]string, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for id, st := range p.pos {
		if now.Sub(st.seen) > peerTTL {
			delete(p.pos, id)
			continue
		}
		if st.pos < seq {
			out = append(out, id)
		}
	}
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	slices.Sort(out)
	return out, p.changed
}

// announce publishes this cache's position.
func (c *Sessions) announce(nc *nats.Conn, pos uint64) {
	_ = nc.Publish(peersSubject+c.id, strconv.AppendUint(nil, pos, 10))
}

// listenPeers subscribes to the other caches' reports and beats this
// one's position until ctx ends, when it reports that it holds nothing.
func (c *Sessions) listenPeers(ctx context.Context, nc *nats.Conn) (stop func(), err error) {
	sub, err := nc.Subscribe(peersSubject+"*", func(m *nats.Msg) {
		pos, err := strconv.ParseUint(string(m.Data), 10, 64)
		if err != nil {
			return
		}
		c.peers.report(strings.TrimPrefix(m.Subject, peersSubject), pos, time.Now())
	})
	if err != nil {
		return nil, fmt.Errorf("session cache: subscribe to peers: %w", err)
	}
	bctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(peerBeat)
		defer t.Stop()
		for {
			c.announce(nc, c.position())
			select {
			case <-bctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
		c.announce(nc, holdsNothing)
		_ = sub.Unsubscribe()
	}, nil
}

// position is how far this cache has read (holdsNothing when it is not
// following, so holds nothing).
func (c *Sessions) position() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.following {
		return holdsNothing
	}
	return c.consumed
}

// AwaitEvicted waits until every session cache heard from recently has
// read the ACCOUNTS stream through seq, the position of a revocation: from
// then on no process answers from a session the revocation ended. It
// gives up after evictWait and names the caches still behind.
func (c *Sessions) AwaitEvicted(ctx context.Context, seq uint64) error {
	deadline := time.Now().Add(evictWait)
	for {
		behind, changed := c.peers.lagging(seq, time.Now())
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("session caches %v have not read ACCOUNTS seq %d after %s", behind, seq, evictWait)
		}
		select {
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
