package pushgateway

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Push rule evaluation for the recipients of one event, with the
// evaluator of eventlog/matrix. Each user's ruleset is parsed once and
// kept until their m.push_rules account data changes (its stream
// sequence, read with the pushers, tells).

// maxCachedRulesets bounds the ruleset cache; past it the cache starts
// again empty (a rare, cheap event: parsing is microseconds).
const maxCachedRulesets = 100_000

type rulesCache struct {
	mu sync.Mutex
	m  map[string]cachedRules
}

type cachedRules struct {
	seq int64
	rs  *matrix.PushRuleset
}

// get returns userID's ruleset as set by the record at seq.
func (c *rulesCache) get(userID string, seq int64, raw json.RawMessage) *matrix.PushRuleset {
	c.mu.Lock()
	if r, ok := c.m[userID]; ok && r.seq == seq {
		c.mu.Unlock()
		return r.rs
	}
	c.mu.Unlock()
	rs, err := matrix.ParsePushRules(userID, raw)
	if err != nil {
		// Stored rules are canonical JSON objects (PUT /pushrules
		// checks): this is not reached, but the defaults are the
		// right answer if it were.
		rs, _ = matrix.ParsePushRules(userID, nil)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedRulesets {
		c.m = map[string]cachedRules{}
	}
	c.m[userID] = cachedRules{seq: seq, rs: rs}
	c.mu.Unlock()
	return rs
}

// decide evaluates the rules of each target's user for ev and returns
// the decisions of the users it notifies, with their rulesets (for the
// counts).
func (p *Pusher) decide(ev *store.RecordEvent, room *store.PushRoom, targets []store.PushTarget) (map[string]matrix.PushDecision, map[string]*matrix.PushRuleset) {
	pe, err := matrix.NewPushEvent(ev.Client)
	if err != nil {
		p.Logger.Warn("push: event not evaluable", "event_id", ev.EventID, "err", err)
		return nil, nil
	}
	out := map[string]matrix.PushDecision{}
	rulesets := map[string]*matrix.PushRuleset{}
	for i, t := range targets {
		if i > 0 && targets[i-1].UserID == t.UserID { // targets are ordered by user
			continue
		}
		rs := p.rules.get(t.UserID, t.RulesSeq, t.Rules)
		if d := rs.Evaluate(pe, room.Context(t.UserID, t.DisplayName, ev.Sender)); d.Notify {
			out[t.UserID] = d
			rulesets[t.UserID] = rs
		}
	}
	return out, rulesets
}

// countReaders bounds the unread counts one event reads at once, and
// countBatch how many recipients one read counts for.
const (
	countReaders = 4
	countBatch   = 128
)

// unread returns each user's unread notifications over all their rooms
// (the gateway's counts.unread: "the number of unread messages a user
// has across all of the rooms they are a member of"), counted by their
// rules as /sync counts them. Counts are evaluated when read, not stored:
// one read per countBatch recipients (store.UnreadTotals), which decodes
// an event that is unread for many of them once.
func (p *Pusher) unread(ctx context.Context, rulesets map[string]*matrix.PushRuleset) (map[string]int, error) {
	out := make(map[string]int, len(rulesets))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(countReaders)
	users := slices.Sorted(maps.Keys(rulesets))
	for chunk := range slices.Chunk(users, countBatch) {
		batch := make(map[string]*matrix.PushRuleset, len(chunk))
		for _, u := range chunk {
			batch[u] = rulesets[u]
		}
		g.Go(func() error {
			totals, err := p.Store.UnreadTotals(gctx, batch)
			if err != nil {
				return err
			}
			mu.Lock()
			maps.Copy(out, totals)
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}
