package api_test

import (
	"context"
	"encoding/json"
	"math"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"strand/api/apitest"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

type notificationsPage struct {
	NextToken     string `json:"next_token"`
	Notifications []struct {
		Actions []any `json:"actions"`
		Event   struct {
			EventID string         `json:"event_id"`
			Content map[string]any `json:"content"`
		} `json:"event"`
		Read   bool   `json:"read"`
		RoomID string `json:"room_id"`
		TS     int64  `json:"ts"`
	} `json:"notifications"`
}

func notificationsOf(t *testing.T, c *apitest.Client, prefix, query string) notificationsPage {
	t.Helper()
	r := c.MustDo("GET", prefix+"/notifications"+query, nil)
	var p notificationsPage
	if err := json.Unmarshal(r.Raw, &p); err != nil {
		t.Fatalf("notifications: %v: %s", err, r.Raw)
	}
	if _, ok := r.Body["notifications"]; !ok {
		t.Fatalf("no notifications list: %s", r.Raw)
	}
	return p
}

// GET /notifications lists what notified the user by their rules, newest
// first, page by page, with read flags from their receipts; only=highlight
// keeps the highlights. The counts behind it replay exactly: they are
// computed from projected facts only.
func TestNotificationsAndReplayedCounts(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("nina", "pw")
	b := apitest.NewClient(t, a.Base)
	b.Register("otto", "pw")
	room := a.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	muted := a.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}).Str("room_id")
	for _, r := range []string{room, muted} {
		b.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(r), nil)
	}
	b.MustDo("PUT", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape(muted), map[string]any{"actions": []any{}})
	send := func(roomID string, content map[string]any) string {
		t.Helper()
		return a.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message", content).Str("event_id")
	}
	text := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }
	m1 := send(room, text("one"))
	m2 := send(room, text("two"))
	send(room, map[string]any{"msgtype": "m.notice", "body": "a notice"}) // suppressed
	send(muted, text("muted"))
	m3 := send(room, map[string]any{"msgtype": "m.text", "body": "three", "m.mentions": map[string]any{"user_ids": []string{b.UserID}}})
	b.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message", text("bob's own")) // own
	m4 := send(room, text("four"))
	b.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(m2), map[string]any{})

	// Pages of two, newest first, across the whole list.
	var got []string
	var read []bool
	token := ""
	for page := 0; ; page++ {
		q := "?limit=2"
		if token != "" {
			q += "&from=" + url.QueryEscape(token)
		}
		p := notificationsOf(t, b, "/_matrix/client/v3", q)
		if len(p.Notifications) > 2 || page > 5 {
			t.Fatalf("page %d: %d notifications", page, len(p.Notifications))
		}
		for _, n := range p.Notifications {
			if n.RoomID != room || n.TS == 0 || len(n.Actions) == 0 || n.Actions[0] != "notify" {
				t.Fatalf("notification %+v", n)
			}
			got, read = append(got, n.Event.EventID), append(read, n.Read)
		}
		if p.NextToken == "" {
			break
		}
		token = p.NextToken
	}
	if want := []string{m4, m3, m2, m1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("notifications %v, want %v", got, want)
	}
	if want := []bool{false, false, true, true}; !reflect.DeepEqual(read, want) {
		t.Fatalf("read flags %v, want %v", read, want)
	}
	// Only highlights, under r0 too.
	hl := notificationsOf(t, b, "/_matrix/client/r0", "?only=highlight")
	if len(hl.Notifications) != 1 || hl.Notifications[0].Event.EventID != m3 || hl.NextToken != "" {
		t.Fatalf("only=highlight: %+v", hl)
	}
	if acts, _ := json.Marshal(hl.Notifications[0].Actions); string(acts) != `["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]` {
		t.Fatalf("highlight actions %s", acts)
	}
	for _, bad := range []string{"?from=abc", "?from=-3", "?limit=x"} {
		if r := b.Do("GET", "/_matrix/client/v3/notifications"+bad, nil); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("%s: %d %s", bad, r.Status, r.Raw)
		}
	}

	// Counts from the live projection and from a replay of the log agree.
	dump := projectionReplays(t, env, 3)
	p, _ := replayMatches(t, env, dump, 5)
	ctx := context.Background()
	counts := func(st *store.Store) map[string]store.RoomUnread {
		rules, err := st.PushRules(ctx, b.UserID)
		if err != nil {
			t.Fatal(err)
		}
		c, err := st.UnreadNotifications(ctx, b.UserID, rules)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	live, replayed := counts(env.Store()), counts(p.Store)
	want := map[string]store.RoomUnread{room: {Main: store.NotificationCounts{Notifications: 2, Highlights: 1}}, muted: {}}
	if !reflect.DeepEqual(live, want) || !reflect.DeepEqual(replayed, want) {
		t.Fatalf("counts live %+v replayed %+v, want %+v", live, replayed, want)
	}

	// Delivery counts many recipients in one read (store.UnreadTotals):
	// each user's total over their rooms, by their own rules, as counted
	// one user at a time.
	b.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message", map[string]any{"msgtype": "m.text", "body": "to nina"})
	st := env.Store()
	rules := map[string]*matrix.PushRuleset{}
	for _, u := range []string{a.UserID, b.UserID} {
		rs, err := st.PushRules(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		rules[u] = rs
	}
	totals, err := st.UnreadTotals(ctx, rules)
	if err != nil {
		t.Fatal(err)
	}
	for u, rs := range rules {
		one, err := st.UnreadNotifications(ctx, u, rs)
		if err != nil {
			t.Fatal(err)
		}
		sum := 0
		for _, c := range one {
			sum += c.Total().Notifications
		}
		if totals[u] != sum {
			t.Errorf("%s: batched total %d, one by one %d", u, totals[u], sum)
		}
	}
	if totals[a.UserID] == 0 || totals[b.UserID] != 2 {
		t.Errorf("totals %v, want otto 2 and some for nina", totals)
	}
}

// store.PushTargets gives delivery the room's members holding a pusher,
// with their display name (only a string one, as the counts read it) and
// rules, leaving out the sender; store.PushRoom the room's levels.
func TestPushTargets(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	a := apitest.NewClient(t, env.API(apitest.DefaultConfig()).URL)
	a.Register("pia", "pw")
	b := apitest.NewClient(t, a.Base)
	b.Register("quin", "pw")
	c := apitest.NewClient(t, a.Base)
	c.Register("rolf", "pw")
	d := apitest.NewClient(t, a.Base)
	d.Register("sven", "pw")
	room := a.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"notifications": map[string]any{"room": 20}}}).Str("room_id")
	for _, u := range []*apitest.Client{b, c, d} {
		u.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), nil)
	}
	b.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(b.UserID)+"/displayname", map[string]any{"displayname": "Quin Q"})
	// A display name that is not a string is no display name (the
	// counts do not read 123 into it either).
	d.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(d.UserID), map[string]any{"membership": "join", "displayname": 123})
	for _, u := range []*apitest.Client{a, b, d} {
		u.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("org.example.app", "key-"+u.UserID, "Q"))
	}
	b.MustDo("PUT", "/_matrix/client/v3/pushrules/global/content/tea", map[string]any{"pattern": "tea", "actions": []any{"notify"}})

	ctx := context.Background()
	targets, err := env.Store().PushTargets(ctx, room, math.MaxInt64, a.UserID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 2 || targets[0].UserID != b.UserID || targets[0].DisplayName != "Quin Q" || !json.Valid(targets[0].Rules) ||
		!strings.Contains(string(targets[0].Rules), `"tea"`) || targets[0].RulesSeq == 0 ||
		targets[1].UserID != d.UserID || targets[1].DisplayName != "" || targets[1].Rules != nil {
		t.Fatalf("targets %+v", targets)
	}
	if info, err := env.Store().NotifyRoomInfo(ctx, room, d.UserID); err != nil || info.SenderDisplayName != "" {
		t.Fatalf("sender display name %+v %v", info, err)
	}
	pr, err := env.Store().PushRoom(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if pr.MemberCount != 4 {
		t.Fatalf("member count %d", pr.MemberCount)
	}
	pc := pr.Context(b.UserID, targets[0].DisplayName, a.UserID)
	if pc.SenderPowerLevel != 100 || pc.NotificationLevels["room"] != 20 || pc.MemberCount != 4 {
		t.Fatalf("context %+v", pc)
	}
	if lvl := pr.Context(b.UserID, "", c.UserID).SenderPowerLevel; lvl != 0 {
		t.Fatalf("a member's level %d", lvl)
	}
}
