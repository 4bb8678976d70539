package api_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"strand/api/apitest"
)

// roomPath is /rooms/{roomId} with the ID escaped.
func roomPath(roomID, rest string) string { return v3("/rooms/" + url.PathEscape(roomID) + rest) }

func getState(t *testing.T, c *apitest.Client, roomID, typ, key string) map[string]any {
	t.Helper()
	return c.MustDo("GET", roomPath(roomID, "/state/"+typ+"/"+url.PathEscape(key)), nil).Body
}

// upgradeUsers registers the three users the upgrade tests share.
func upgradeUsers(t *testing.T) (env *apitest.Env, alice, bob, carol *apitest.Client) {
	env = apitest.New(t)
	env.Projector()
	alice = apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	alice.Register("alice", "pw")
	bob = alice.As("")
	bob.Register("bob", "pw")
	carol = alice.As("")
	carol.Register("carol", "pw")
	return env, alice, bob, carol
}

// TestUpgradeRoom upgrades rooms between versions (10→11, 10→12, 11→12,
// 1→10, and 12→10 back down) and checks what the spec asks of the
// replacement and of the old room: the create event's predecessor (with
// the old room's last event ID only below version 12, and a hashed room ID
// in 12), the copied state, the upgrader's power (implicit as a v12
// creator, listed below 12), bans, the alias and the directory listing
// moved, the old room's tombstone and silenced power levels and its
// canonical alias emptied. Only a joined user who may send
// m.room.tombstone may upgrade; unknown versions are
// M_UNSUPPORTED_ROOM_VERSION. The projection then replays to the same.
func TestUpgradeRoom(t *testing.T) {
	env, alice, bob, carol := upgradeUsers(t)
	stranger := alice.As("")
	stranger.Register("stranger", "pw")

	for _, tc := range []struct{ from, to string }{
		{"10", "11"}, {"10", "12"}, {"11", "12"}, {"1", "10"}, {"12", "10"},
	} {
		t.Run(tc.from+"to"+tc.to, func(t *testing.T) {
			aliasName := "up" + tc.from + "to" + tc.to
			alias := "#" + aliasName + ":localhost"
			old := alice.MustDo("POST", v3("/createRoom"), map[string]any{
				"room_version": tc.from, "preset": "public_chat", "visibility": "public",
				"name": "Old name", "topic": "Old topic", "room_alias_name": aliasName,
				"creation_content": map[string]any{"type": "org.example.kind"},
				"initial_state": []any{
					map[string]any{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
					map[string]any{"type": "m.room.guest_access", "content": map[string]any{"guest_access": "can_join"}},
					map[string]any{"type": "org.example.custom", "content": map[string]any{"k": "v"}},
				},
			}).Str("room_id")
			bob.MustDo("POST", roomPath(old, "/join"), map[string]any{})
			carol.MustDo("POST", roomPath(old, "/join"), map[string]any{})
			alice.MustDo("POST", roomPath(old, "/ban"), map[string]any{"user_id": carol.UserID, "reason": "spam"})
			last := alice.MustDo("PUT", roomPath(old, "/send/m.room.message/t1"), map[string]any{"msgtype": "m.text", "body": "before"}).Str("event_id")

			for _, c := range []*apitest.Client{bob, stranger} {
				if r := c.Do("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": tc.to}); r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
					t.Fatalf("upgrade by %s: %d %s", c.UserID, r.Status, r.Raw)
				}
			}
			if r := alice.Do("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "999"}); r.Status != 400 || r.Errcode() != "M_UNSUPPORTED_ROOM_VERSION" {
				t.Fatalf("unknown version: %d %s", r.Status, r.Raw)
			}
			if r := alice.Do("POST", roomPath(old, "/upgrade"), map[string]any{}); r.Status != 400 {
				t.Fatalf("no version: %d %s", r.Status, r.Raw)
			}

			repl := alice.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": tc.to}).Str("replacement_room")
			if repl == "" || repl == old {
				t.Fatalf("replacement_room %q", repl)
			}

			// The replacement's create event.
			create := getState(t, alice, repl, "m.room.create", "")
			pred, _ := create["predecessor"].(map[string]any)
			if create["room_version"] != tc.to || pred["room_id"] != old || create["type"] != "org.example.kind" {
				t.Fatalf("create: %v", create)
			}
			if _, has := pred["event_id"]; has != (tc.to != "12") || (has && pred["event_id"] != last) {
				t.Fatalf("predecessor event_id %v, want %s (only below 12)", pred["event_id"], last)
			}
			if c, has := create["creator"]; (tc.to == "10") != has || (has && c != alice.UserID) {
				t.Fatalf("creator %v", create["creator"])
			}
			state := alice.MustDo("GET", roomPath(repl, "/state"), nil).Raw
			if tc.to == "12" && !strings.Contains(string(state), `"event_id":"$`+repl[1:]+`"`) {
				t.Fatalf("v12 room ID %s is not its create event's ID: %s", repl, state)
			}

			// Copied state; the custom event is not copied.
			for _, want := range []struct{ typ, key, val string }{
				{"m.room.name", "name", "Old name"}, {"m.room.topic", "topic", "Old topic"},
				{"m.room.join_rules", "join_rule", "public"}, {"m.room.history_visibility", "history_visibility", "shared"},
				{"m.room.guest_access", "guest_access", "can_join"}, {"m.room.encryption", "algorithm", "m.megolm.v1.aes-sha2"},
				{"m.room.canonical_alias", "alias", alias},
			} {
				if got := getState(t, alice, repl, want.typ, ""); got[want.key] != want.val {
					t.Errorf("%s in the replacement: %v", want.typ, got)
				}
			}
			if r := alice.Do("GET", roomPath(repl, "/state/org.example.custom/"), nil); r.Status != 404 {
				t.Errorf("custom state copied: %d %s", r.Status, r.Raw)
			}
			if m := getState(t, alice, repl, "m.room.member", carol.UserID); m["membership"] != "ban" || m["reason"] != "spam" {
				t.Errorf("ban not copied: %v", m)
			}
			if r := bob.Do("GET", roomPath(repl, "/state/m.room.member/"+url.PathEscape(bob.UserID)), nil); r.Status == 200 {
				t.Errorf("bob's membership was copied: %s", r.Raw)
			}
			// Listed below 12: with their old level, or, coming from 12
			// where their power was implicit, the highest level the old
			// room names (150, the v12 tombstone level).
			wantLevel := float64(100)
			if tc.from == "12" {
				wantLevel = 150
			}
			users := getState(t, alice, repl, "m.room.power_levels", "")["users"].(map[string]any)
			if lvl, listed := users[alice.UserID]; (tc.to == "12") == listed || (listed && lvl != wantLevel) {
				t.Errorf("upgrader in the replacement's power levels: %v", users)
			}

			// Alias and directory listing moved.
			if got := alice.MustDo("GET", v3("/directory/room/"+url.PathEscape(alias)), nil).Str("room_id"); got != repl {
				t.Errorf("alias points at %s", got)
			}
			for room, want := range map[string]string{repl: "public", old: "private"} {
				if got := alice.MustDo("GET", v3("/directory/list/room/"+url.PathEscape(room)), nil).Str("visibility"); got != want {
					t.Errorf("directory visibility of %s: %s, want %s", room, got, want)
				}
			}

			// The old room: tombstone, silenced, canonical alias emptied.
			if tomb := getState(t, bob, old, "m.room.tombstone", ""); tomb["replacement_room"] != repl || tomb["body"] == "" {
				t.Errorf("tombstone: %v", tomb)
			}
			pl := getState(t, alice, old, "m.room.power_levels", "")
			if pl["events_default"] != float64(50) || pl["invite"] != float64(50) {
				t.Errorf("old room's power levels not silenced: %v", pl)
			}
			if ca := getState(t, alice, old, "m.room.canonical_alias", ""); ca["alias"] != nil {
				t.Errorf("old room's canonical alias kept %v", ca)
			}
			if r := bob.Do("PUT", roomPath(old, "/send/m.room.message/t2"), map[string]any{"msgtype": "m.text", "body": "after"}); r.Status != 403 {
				t.Errorf("bob can still talk in the old room: %d %s", r.Status, r.Raw)
			}
			// The replacement works: bob joins it and talks.
			bob.MustDo("POST", roomPath(repl, "/join"), map[string]any{})
			bob.MustDo("PUT", roomPath(repl, "/send/m.room.message/t3"), map[string]any{"msgtype": "m.text", "body": "after"})
			if r := carol.Do("POST", roomPath(repl, "/join"), map[string]any{}); r.Status != 403 {
				t.Errorf("banned carol joined the replacement: %d %s", r.Status, r.Raw)
			}

			// A retry of the same upgrade returns the same replacement.
			if again := alice.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": tc.to}).Str("replacement_room"); again != repl {
				t.Errorf("retry made another room: %s, first %s", again, repl)
			}
		})
	}
	projectionReplays(t, env, 7)
}

// TestUpgradeRoomCreators follows MSC4289 for upgrades to version 12: the
// upgrader and additional_creators are the new room's creators and leave
// the power levels' users; the old room's creators are not carried over;
// other users keep their levels. Into version 11 the upgrader, a v12
// creator with implicit power, is listed.
func TestUpgradeRoomCreators(t *testing.T) {
	env, alice, bob, carol := upgradeUsers(t)
	for _, tc := range []struct {
		name, from, to string
		users          map[string]any
		by             *apitest.Client
		extra          []string
		wantCreators   []any
		wantUsers      map[string]any
	}{
		{"v11 admin to 12", "11", "12", map[string]any{bob.UserID: 100, carol.UserID: 100}, bob, nil, nil, map[string]any{carol.UserID: float64(100)}},
		{"v11 creator to 12 with additional", "11", "12", map[string]any{alice.UserID: 100, bob.UserID: 100, carol.UserID: 50}, alice, []string{bob.UserID}, []any{bob.UserID}, map[string]any{carol.UserID: float64(50)}},
		{"v12 to 12 with other creators", "12", "12", map[string]any{bob.UserID: 150, carol.UserID: 50}, bob, []string{carol.UserID}, []any{carol.UserID}, map[string]any{}},
		{"v12 creator to 11", "12", "11", map[string]any{bob.UserID: 50}, alice, []string{carol.UserID}, nil, map[string]any{alice.UserID: float64(100), bob.UserID: float64(50)}}, // no level above 100 named: 100
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := alice.MustDo("POST", v3("/createRoom"), map[string]any{"room_version": tc.from, "preset": "public_chat"}).Str("room_id")
			bob.MustDo("POST", roomPath(old, "/join"), map[string]any{})
			carol.MustDo("POST", roomPath(old, "/join"), map[string]any{})
			alice.MustDo("PUT", roomPath(old, "/state/m.room.power_levels/"), map[string]any{"users": tc.users})
			body := map[string]any{"new_version": tc.to}
			if tc.extra != nil {
				body["additional_creators"] = tc.extra
			}
			repl := tc.by.MustDo("POST", roomPath(old, "/upgrade"), body).Str("replacement_room")
			create := getState(t, tc.by, repl, "m.room.create", "")
			if got, _ := create["additional_creators"].([]any); !slices.Equal(got, tc.wantCreators) {
				t.Errorf("additional_creators %v, want %v", create["additional_creators"], tc.wantCreators)
			}
			users := getState(t, tc.by, repl, "m.room.power_levels", "")["users"].(map[string]any)
			if fmt.Sprint(users) != fmt.Sprint(tc.wantUsers) {
				t.Errorf("users %v, want %v", users, tc.wantUsers)
			}
		})
	}
	// additional_creators must be user IDs for version 12; for other
	// versions the spec ignores the field.
	old := alice.MustDo("POST", v3("/createRoom"), map[string]any{"room_version": "11"}).Str("room_id")
	if r := alice.Do("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "12", "additional_creators": []any{"not a user"}}); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Errorf("bad additional_creators for 12: %d %s", r.Status, r.Raw)
	}
	alice.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "11", "additional_creators": []any{"not a user"}})
	projectionReplays(t, env, 5)
}

// TestUpgradeRoomRaisesUpgrader: a moderator allowed to send
// m.room.tombstone but below the levels of the state to copy still gets
// every copied event into the replacement; their level is raised for the
// copy and then set back to the old room's.
func TestUpgradeRoomRaisesUpgrader(t *testing.T) {
	env, alice, bob, _ := upgradeUsers(t)
	old := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat", "name": "N"}).Str("room_id")
	bob.MustDo("POST", roomPath(old, "/join"), map[string]any{})
	alice.MustDo("PUT", roomPath(old, "/state/m.room.power_levels/"), map[string]any{
		"users":  map[string]any{alice.UserID: 100, bob.UserID: 50},
		"events": map[string]any{"m.room.tombstone": 50, "m.room.history_visibility": 100, "m.room.power_levels": 100},
	})
	repl := bob.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "10"}).Str("replacement_room")
	if got := getState(t, bob, repl, "m.room.history_visibility", "")["history_visibility"]; got != "shared" {
		t.Errorf("history visibility not copied: %v", got)
	}
	users := getState(t, bob, repl, "m.room.power_levels", "")["users"].(map[string]any)
	if users[bob.UserID] != float64(50) || users[alice.UserID] != float64(100) {
		t.Errorf("final users %v", users)
	}
	// The old room's power levels need 100: bob could tombstone it, but
	// not silence it, so the tombstone goes alone.
	if tomb := getState(t, bob, old, "m.room.tombstone", ""); tomb["replacement_room"] != repl {
		t.Errorf("tombstone %v", tomb)
	}
	if pl := getState(t, bob, old, "m.room.power_levels", ""); pl["events_default"] != nil && pl["events_default"] != float64(0) {
		t.Errorf("old power levels changed by a user who may not: %v", pl)
	}
	projectionReplays(t, env, 3)
}

// TestUpgradeRoomRetryFinishes: the steps after the tombstone (aliases,
// directory listing) are redone by a retry. The state a crash between the
// tombstone and those steps would leave is made by hand (the alias pointed
// back at the old room, which is listed again); the retry returns the same
// replacement and moves them again. Two concurrent upgrades of one room by
// one user end with one replacement, returned to both.
func TestUpgradeRoomRetryFinishes(t *testing.T) {
	env, alice, _, _ := upgradeUsers(t)
	old := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat", "room_alias_name": "retry"}).Str("room_id")
	repl := alice.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "11"}).Str("replacement_room")

	alice.MustDo("DELETE", v3("/directory/room/"+url.PathEscape("#retry:localhost")), nil)
	alice.MustDo("PUT", v3("/directory/room/"+url.PathEscape("#retry:localhost")), map[string]any{"room_id": old})
	alice.MustDo("PUT", v3("/directory/list/room/"+url.PathEscape(old)), map[string]any{"visibility": "public"})
	alice.MustDo("PUT", v3("/directory/list/room/"+url.PathEscape(repl)), map[string]any{"visibility": "private"})

	if again := alice.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "11"}).Str("replacement_room"); again != repl {
		t.Fatalf("retry returned %s, want %s", again, repl)
	}
	if got := alice.MustDo("GET", v3("/directory/room/"+url.PathEscape("#retry:localhost")), nil).Str("room_id"); got != repl {
		t.Errorf("alias not moved by the retry: %s", got)
	}
	for room, want := range map[string]string{repl: "public", old: "private"} {
		if got := alice.MustDo("GET", v3("/directory/list/room/"+url.PathEscape(room)), nil).Str("visibility"); got != want {
			t.Errorf("directory visibility of %s: %s, want %s", room, got, want)
		}
	}

	// Concurrent twins: one replacement, and no second room left behind
	// (the replacement record's Nats-Msg-Id makes the twins share it).
	twin := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat"}).Str("room_id")
	joinedBefore := len(alice.MustDo("GET", v3("/joined_rooms"), nil).Body["joined_rooms"].([]any))
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = alice.MustDo("POST", roomPath(twin, "/upgrade"), map[string]any{"new_version": "12"}).Str("replacement_room")
		}()
	}
	wg.Wait()
	for _, r := range got {
		if r != got[0] {
			t.Fatalf("concurrent upgrades returned different rooms: %v", got)
		}
	}
	if tomb := getState(t, alice, twin, "m.room.tombstone", ""); tomb["replacement_room"] != got[0] {
		t.Errorf("tombstone names %v, upgrades returned %s", tomb["replacement_room"], got[0])
	}
	if joined := len(alice.MustDo("GET", v3("/joined_rooms"), nil).Body["joined_rooms"].([]any)); joined != joinedBefore+1 {
		t.Errorf("alice is in %d rooms after the upgrade, %d before: unused replacements were made", joined, joinedBefore)
	}
	projectionReplays(t, env, 4)
}

// TestUpgradeRoomSearch: /search over an upgraded room and its replacement
// (both named in the filter, as Complement's "Search works across an
// upgraded room and its predecessor" does) finds the messages of both; the
// room was created without a version (10) and "upgraded" down to 9.
func TestUpgradeRoomSearch(t *testing.T) {
	_, alice, _, _ := upgradeUsers(t)
	old := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "private_chat"}).Str("room_id")
	before := alice.MustDo("PUT", roomPath(old, "/send/m.room.message/s1"), map[string]any{"msgtype": "m.text", "body": "Message before upgrade"}).Str("event_id")
	repl := alice.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "9"}).Str("replacement_room")
	after := alice.MustDo("PUT", roomPath(repl, "/send/m.room.message/s2"), map[string]any{"msgtype": "m.text", "body": "Message after upgrade"}).Str("event_id")
	r := alice.MustDo("POST", v3("/search"), map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
		"keys": []string{"content.body"}, "search_term": "upgrade", "filter": map[string]any{"rooms": []string{old, repl}},
	}}})
	re := r.Body["search_categories"].(map[string]any)["room_events"].(map[string]any)
	var ids []string
	for _, res := range re["results"].([]any) {
		ids = append(ids, res.(map[string]any)["result"].(map[string]any)["event_id"].(string))
	}
	slices.Sort(ids)
	want := []string{before, after}
	slices.Sort(want)
	if re["count"] != float64(2) || !slices.Equal(ids, want) {
		t.Fatalf("search: %s", r.Raw)
	}
}

// TestUpgradeRoomCarriesSettings: a member's room push rule and tags of the
// old room are copied to the replacement when they join it (the upgrader
// when the replacement is made), unless they already set their own there;
// a room that merely claims a predecessor which does not name it gets
// nothing.
func TestUpgradeRoomCarriesSettings(t *testing.T) {
	env, alice, bob, _ := upgradeUsers(t)
	old := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", roomPath(old, "/join"), map[string]any{})
	for _, c := range []*apitest.Client{alice, bob} {
		c.MustDo("PUT", v3("/pushrules/global/room/"+url.PathEscape(old)), map[string]any{"actions": []any{"dont_notify"}})
		c.MustDo("PUT", v3("/user/"+url.PathEscape(c.UserID)+"/rooms/"+url.PathEscape(old)+"/tags/m.favourite"), map[string]any{"order": 0.25})
	}
	// A room claiming the old one as predecessor, which the old room does
	// not name.
	impostor := bob.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat",
		"creation_content": map[string]any{"predecessor": map[string]any{"room_id": old}}}).Str("room_id")
	repl := alice.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "11"}).Str("replacement_room")
	bob.MustDo("POST", roomPath(repl, "/join"), map[string]any{})
	alice.MustDo("POST", roomPath(impostor, "/join"), map[string]any{})

	carried := func(c *apitest.Client, room string) (rule, tag bool) {
		r := c.Do("GET", v3("/pushrules/global/room/"+url.PathEscape(room)), nil)
		rule = r.Status == 200 && strings.Contains(string(r.Raw), "dont_notify")
		tags := c.MustDo("GET", v3("/user/"+url.PathEscape(c.UserID)+"/rooms/"+url.PathEscape(room)+"/tags"), nil).Body["tags"].(map[string]any)
		_, tag = tags["m.favourite"]
		return rule, tag
	}
	for _, c := range []*apitest.Client{alice, bob} {
		if rule, tag := carried(c, repl); !rule || !tag {
			t.Errorf("%s: push rule carried %v, tag carried %v", c.UserID, rule, tag)
		}
	}
	if rule, tag := carried(alice, impostor); rule || tag {
		t.Errorf("settings carried into a room the old room does not name: rule %v, tag %v", rule, tag)
	}
	projectionReplays(t, env, 5)
}

// TestUpgradeRoomOnce: a room already upgraded (its tombstone names a
// room that exists) is not upgraded again, neither by another user with
// the power to nor by the same user to another version: 400 M_BAD_STATE,
// and the tombstone still names the first replacement. A tombstone that
// names no existing room does not stop an upgrade.
func TestUpgradeRoomOnce(t *testing.T) {
	_, alice, bob, _ := upgradeUsers(t)
	old := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	bob.MustDo("POST", roomPath(old, "/join"), map[string]any{})
	alice.MustDo("PUT", roomPath(old, "/state/m.room.power_levels/"), map[string]any{
		"users": map[string]any{alice.UserID: 100, bob.UserID: 100},
	})
	repl := alice.MustDo("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "11"}).Str("replacement_room")
	for _, tc := range []struct {
		who     *apitest.Client
		version string
	}{{bob, "11"}, {bob, "12"}, {alice, "12"}} {
		r := tc.who.Do("POST", roomPath(old, "/upgrade"), map[string]any{"new_version": tc.version})
		if r.Status != 400 || r.Errcode() != "M_BAD_STATE" {
			t.Errorf("second upgrade by %s to %s: %d %s", tc.who.UserID, tc.version, r.Status, r.Raw)
		}
	}
	if tomb := getState(t, alice, old, "m.room.tombstone", ""); tomb["replacement_room"] != repl {
		t.Errorf("tombstone names %v, want %s", tomb["replacement_room"], repl)
	}

	other := alice.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat"}).Str("room_id")
	alice.MustDo("PUT", roomPath(other, "/state/m.room.tombstone/"), map[string]any{
		"body": "gone", "replacement_room": "!nowhere:localhost",
	})
	if r := alice.Do("POST", roomPath(other, "/upgrade"), map[string]any{"new_version": "11"}); r.Status != 200 {
		t.Errorf("upgrade of a room tombstoned towards no room: %d %s", r.Status, r.Raw)
	}
}
