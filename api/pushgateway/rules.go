package pushgateway

import (
	"context"
	"encoding/json"
	"strings"

	"strand/projector/store"
)

// Decision is what one recipient's push rules say about an event.
type Decision struct {
	Notify    bool
	Highlight bool
	// Tweaks are the matched rule's set_tweak actions (sound, highlight,
	// others), as the gateway's devices[].tweaks carries them.
	Tweaks map[string]any
}

// Rules decides whom an event notifies, and counts what they have unread.
type Rules interface {
	// Decide evaluates the rules of each of users for ev (in room) and
	// returns the decisions of those it notifies.
	Decide(ctx context.Context, ev *store.PushEvent, room store.PushRoom, users []string) (map[string]Decision, error)
	// Unread returns each user's unread notification count over all
	// their rooms (the gateway's counts.unread).
	Unread(ctx context.Context, users []string) (map[string]int, error)
}

// DefaultRules stands in for push rule evaluation with the fixed rule the
// unread counts of /sync use: messages and encrypted events notify, an
// event mentioning the user (by ID in m.mentions, or by localpart in
// the body) highlights, and an invite notifies its invitee; a one-to-one
// room and highlights ring.
type DefaultRules struct {
	Store *store.Store
}

// Decide implements Rules.
func (r DefaultRules) Decide(_ context.Context, ev *store.PushEvent, room store.PushRoom, users []string) (map[string]Decision, error) {
	var e struct {
		Content struct {
			Membership string `json:"membership"`
			Body       string `json:"body"`
			Mentions   struct {
				UserIDs []string `json:"user_ids"`
			} `json:"m.mentions"`
		} `json:"content"`
	}
	_ = json.Unmarshal(ev.Client, &e) // an odd event notifies by type alone
	out := map[string]Decision{}
	body := strings.ToLower(e.Content.Body)
	for _, u := range users {
		if u == ev.Sender {
			continue
		}
		switch {
		case ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == u && e.Content.Membership == "invite":
			out[u] = Decision{Notify: true, Tweaks: map[string]any{"sound": "default"}}
		case ev.Type == "m.room.message" || ev.Type == "m.room.encrypted":
			d := Decision{Notify: true, Tweaks: map[string]any{}}
			local := strings.ToLower(strings.SplitN(strings.TrimPrefix(u, "@"), ":", 2)[0])
			for _, m := range e.Content.Mentions.UserIDs {
				d.Highlight = d.Highlight || m == u
			}
			if local != "" && strings.Contains(body, local) {
				d.Highlight = true
			}
			if d.Highlight {
				d.Tweaks["highlight"] = true
			}
			if d.Highlight || room.JoinedMembers == 2 {
				d.Tweaks["sound"] = "default"
			}
			out[u] = d
		}
	}
	return out, nil
}

// Unread implements Rules.
func (r DefaultRules) Unread(ctx context.Context, users []string) (map[string]int, error) {
	return r.Store.UnreadTotals(ctx, users)
}
