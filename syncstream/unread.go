package syncstream

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"

	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Unread counts (unread_notifications, and MSC3773's
// unread_thread_notifications when the filter asks for them) follow each
// user's push rules. A build reads them from the projection
// (store.SyncTx.UnreadRooms: the events after the user's read receipts,
// evaluated against their rules and the room's current state) and keeps
// each room's counting state in the window base; the window then
// evaluates each new event once for the syncing user and advances that
// state with the same rule (store.UnreadRoom.Add), so it answers what a
// build would.

// rulesCache keeps each user's parsed push rules with the stored content
// they were parsed from. A build reads the content in its snapshot and
// parses it only when it changed, so a change of rules (an ACCOUNTS
// record, which also keeps the window from answering) is seen by the next
// build without any invalidation.
type rulesCache struct {
	mu sync.Mutex
	m  map[string]cachedRules
}

type cachedRules struct {
	raw   []byte
	rules *matrix.PushRuleset
}

const rulesCacheMax = 100000

func (c *rulesCache) get(userID string, raw []byte) *matrix.PushRuleset {
	c.mu.Lock()
	e, ok := c.m[userID]
	c.mu.Unlock()
	if ok && bytes.Equal(e.raw, raw) {
		return e.rules
	}
	rules, err := matrix.ParsePushRules(userID, raw)
	if err != nil {
		// Content that is not a ruleset (account data written some
		// other way) counts as the defaults rather than failing sync.
		slog.Warn("unreadable push rules; using the defaults", "user_id", userID, "err", err)
		rules, _ = matrix.ParsePushRules(userID, nil)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= rulesCacheMax {
		c.m = map[string]cachedRules{}
	}
	c.m[userID] = cachedRules{raw: slices.Clone(raw), rules: rules}
	c.mu.Unlock()
	return rules
}

// pushRulesContent is the m.push_rules account data a client is sent: the
// stored rules merged with the current server defaults, as they are
// evaluated (and as GET /pushrules lists them).
func pushRulesContent(userID string, stored json.RawMessage) json.RawMessage {
	merged, err := matrix.MergePushRules(userID, stored)
	if err != nil {
		return stored
	}
	c, _ := json.Marshal(map[string]json.RawMessage{"global": merged})
	return c
}

// threadCounts reports whether the filter asks for MSC3773's per-thread
// counts.
func (f *filter) threadCounts() bool {
	return f.Room.Timeline != nil && f.Room.Timeline.UnreadThreadNotifs
}

// countsOf is what a response says of a room's counts: everything in
// unread_notifications, or (threads) the main timeline there and each
// thread with something unread apart.
func countsOf(u store.RoomUnread, threads bool) (unreadCounts, map[string]unreadCounts) {
	if !threads {
		t := u.Total()
		return unreadCounts{Highlight: t.Highlights, Notification: t.Notifications}, nil
	}
	var byThread map[string]unreadCounts
	for root, c := range u.Threads {
		if c.Notifications == 0 && c.Highlights == 0 {
			continue
		}
		if byThread == nil {
			byThread = map[string]unreadCounts{}
		}
		byThread[root] = unreadCounts{Highlight: c.Highlights, Notification: c.Notifications}
	}
	return unreadCounts{Highlight: u.Main.Highlights, Notification: u.Main.Notifications}, byThread
}

// buildUnread sets the counts of every joined room in the response, and
// the window base's counting state, from the snapshot.
func buildUnread(ctx context.Context, tx *store.SyncTx, req *request, out *built, cache *rulesCache) error {
	inResp := make([]string, 0, len(out.resp.Rooms.Join))
	for roomID := range out.resp.Rooms.Join {
		inResp = append(inResp, roomID)
	}
	slices.Sort(inResp)
	if len(inResp) == 0 {
		out.base.unread = map[string]*store.UnreadRoom{}
		return nil
	}
	raw, err := tx.PushRulesContent(ctx, req.user)
	if err != nil {
		return err
	}
	rules := cache.get(req.user, raw)
	rooms, err := tx.UnreadRooms(ctx, req.user, rules, inResp)
	if err != nil {
		return err
	}
	out.base.rules = rules
	out.base.unread = make(map[string]*store.UnreadRoom, len(rooms))
	threads := req.filter.threadCounts()
	for roomID, jr := range out.resp.Rooms.Join {
		u, ok := rooms[roomID]
		if !ok {
			continue // not joined as of the snapshot: nothing unread
		}
		jr.Unread, jr.UnreadThreads = countsOf(u.Counts, threads)
		out.base.unread[roomID] = u
	}
	return nil
}

// windowUnread advances a room's counting state by the window's new
// events, on a copy. ok is false when an event's thread cannot be told
// from the event alone (it relates to another event other than by
// m.thread, so its thread is its parent's) and it would count: then the
// build, which reads the relations, answers.
func windowUnread(rules *matrix.PushRuleset, u *store.UnreadRoom, evs []*windowEvent) (*store.UnreadRoom, bool) {
	if rules == nil {
		return nil, false
	}
	nu := u.Clone()
	for _, e := range evs {
		if e.Sender == nu.UserID || e.Pos <= nu.Floor() {
			continue
		}
		pe := e.pushEvent()
		if pe == nil {
			continue // as the build skips it
		}
		mentioned := slices.Contains(e.mentions, nu.UserID)
		if e.related && rules.Evaluate(pe, nu.Room.Context(nu.UserID, nu.DisplayName, e.Sender)).Notify {
			return nil, false
		}
		nu.Add(rules, pe, e.Pos, e.thread, mentioned)
	}
	return nu, true
}

// pushEvent decodes the event for push rule evaluation, once however many
// users' windows evaluate it.
func (e *windowEvent) pushEvent() *matrix.PushEvent {
	if e.push == nil {
		pe, _ := matrix.NewPushEvent(e.Client)
		return pe
	}
	e.push.once.Do(func() { e.push.ev, _ = matrix.NewPushEvent(e.Client) })
	return e.push.ev
}

type lazyPushEvent struct {
	once sync.Once
	ev   *matrix.PushEvent
}
