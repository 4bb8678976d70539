package pushgateway

import (
	"context"
	"encoding/json"
	"sync"

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
// the decisions of the users it notifies.
func (p *Pusher) decide(ev *store.RecordEvent, room store.NotifyRoom, targets []store.PushTarget) map[string]matrix.PushDecision {
	pe, err := matrix.NewPushEvent(ev.Client)
	if err != nil {
		p.Logger.Warn("push: event not evaluable", "event_id", ev.EventID, "err", err)
		return nil
	}
	senderLevel, levels := senderPower(room.PowerLevels, ev.Sender)
	out := map[string]matrix.PushDecision{}
	for i, t := range targets {
		if i > 0 && targets[i-1].UserID == t.UserID { // targets are ordered by user
			continue
		}
		rs := p.rules.get(t.UserID, t.RulesSeq, t.Rules)
		d := rs.Evaluate(pe, matrix.PushConditionContext{UserID: t.UserID, DisplayName: t.DisplayName,
			MemberCount: room.JoinedMembers, SenderPowerLevel: senderLevel, NotificationLevels: levels})
		if d.Notify {
			out[t.UserID] = d
		}
	}
	return out
}

// senderPower reads the sender's power level and the notification
// levels from a power_levels content (the spec's defaults without one).
func senderPower(content json.RawMessage, sender string) (int64, map[string]int64) {
	var pl struct {
		Users         map[string]json.Number `json:"users"`
		UsersDefault  json.Number            `json:"users_default"`
		Notifications map[string]json.Number `json:"notifications"`
	}
	if len(content) == 0 || json.Unmarshal(content, &pl) != nil {
		return 0, nil
	}
	level := func(n json.Number) int64 { v, _ := n.Int64(); return v }
	l := level(pl.UsersDefault)
	if v, ok := pl.Users[sender]; ok {
		l = level(v)
	}
	var ns map[string]int64
	if len(pl.Notifications) > 0 {
		ns = map[string]int64{}
		for k, v := range pl.Notifications {
			ns[k] = level(v)
		}
	}
	return l, ns
}

// unread returns each user's unread notification count over all their
// rooms, the gateway's counts.unread.
func (p *Pusher) unread(ctx context.Context, users []string) (map[string]int, error) {
	return p.Store.UnreadTotals(ctx, users)
}
