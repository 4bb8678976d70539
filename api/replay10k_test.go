package api_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"

	"strand/api/apitest"
	"strand/projector"
)

// Replay equivalence on a log of more than 10,000 events holding every
// kind of record the server writes: the projection rebuilt from the log
// into an empty database equals the live one (invariant 2).
func TestReplayEquivalence10k(t *testing.T) {
	if testing.Short() {
		t.Skip("writes over 10,000 events")
	}
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.SharedSecret = "s"
	base := env.Serve(cfg).URL
	esc := url.PathEscape

	// Accounts: registration, shared-secret admin, login, devices,
	// password, filters, account data, push rules, profile, deactivation.
	owner := apitest.NewClient(t, base)
	owner.Register("owner", "pw")
	nonce := owner.MustDo("GET", "/_synapse/admin/v1/register", nil).Str("nonce")
	admin := owner.As(owner.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce, "username": "root", "password": "pw", "admin": true,
		"mac": apiSharedSecretMAC("s", nonce, "root", "pw", true)}).Str("access_token"))
	users := make([]*apitest.Client, 8)
	for i := range users {
		u := apitest.NewClient(t, base)
		u.Register(fmt.Sprintf("member%d", i), "pw")
		u.MustDo("PUT", v3("/profile/"+esc(u.UserID)+"/displayname"), map[string]any{"displayname": fmt.Sprintf("Member %d", i)})
		u.MustDo("POST", v3("/user/"+esc(u.UserID)+"/filter"), map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}}})
		u.MustDo("PUT", v3("/user/"+esc(u.UserID)+"/account_data/org.example.k"), map[string]any{"i": i})
		u.MustDo("PUT", v3("/pushrules/global/content/kw"), map[string]any{"pattern": "cake", "actions": []any{"notify"}})
		users[i] = u
	}
	spare := apitest.NewClient(t, base)
	spare.Register("spare", "pw")
	spare.MustDo("POST", v3("/login"), map[string]any{"type": "m.login.password", "user": "spare", "password": "pw", "device_id": "D2"})
	spare.MustDo("PUT", v3("/devices/D2"), map[string]any{"display_name": "second"})
	spare.MustDo("POST", v3("/account/password"), map[string]any{"new_password": "pw2", "auth": map[string]any{"type": "m.login.password", "user": "spare", "password": "pw"}})
	admin.MustDo("POST", "/_synapse/admin/v1/deactivate/"+esc(spare.UserID), map[string]any{})

	// Rooms: every preset and version, aliases, directory, state, members.
	var rooms []string
	for i, preset := range []string{"public_chat", "private_chat", "trusted_private_chat"} {
		for _, ver := range []string{"10", "11", "12"} {
			body := map[string]any{"preset": preset, "room_version": ver, "name": "room " + preset + ver, "topic": "t",
				"invite": []string{users[0].UserID}}
			if i == 0 {
				body["visibility"] = "public"
				body["room_alias_name"] = "r" + ver
			}
			rooms = append(rooms, owner.MustDo("POST", v3("/createRoom"), body).Str("room_id"))
		}
	}
	for _, roomID := range rooms {
		for _, u := range users {
			owner.Do("POST", v3("/rooms/"+esc(roomID)+"/invite"), map[string]any{"user_id": u.UserID})
			u.MustDo("POST", v3("/rooms/"+esc(roomID)+"/join"), nil)
		}
		owner.MustDo("PUT", v3("/rooms/"+esc(roomID)+"/state/org.example.s/k"), map[string]any{"v": 1})
	}
	owner.MustDo("PUT", v3("/directory/room/"+esc("#extra:localhost")), map[string]any{"room_id": rooms[1]})
	owner.MustDo("DELETE", v3("/directory/room/"+esc("#extra:localhost")), nil)
	owner.MustDo("PUT", v3("/directory/list/room/"+esc(rooms[1])), map[string]any{"visibility": "public"})
	owner.MustDo("POST", v3("/rooms/"+esc(rooms[0])+"/kick"), map[string]any{"user_id": users[7].UserID})
	owner.MustDo("POST", v3("/rooms/"+esc(rooms[0])+"/ban"), map[string]any{"user_id": users[6].UserID})
	owner.MustDo("POST", v3("/rooms/"+esc(rooms[0])+"/unban"), map[string]any{"user_id": users[6].UserID})
	users[5].MustDo("POST", v3("/rooms/"+esc(rooms[0])+"/leave"), nil)
	users[5].MustDo("POST", v3("/rooms/"+esc(rooms[0])+"/forget"), nil)

	// Messages: over 10,000, with redactions and receipts along the way.
	const perUser = 1300
	var wg sync.WaitGroup
	for ui, u := range users[:8] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perUser {
				roomID := rooms[(ui+j)%len(rooms)]
				if ui >= 5 && roomID == rooms[0] {
					continue // kicked, banned or left there
				}
				id := u.MustDo("PUT", v3(fmt.Sprintf("/rooms/%s/send/m.room.message/m%d", esc(roomID), j)),
					map[string]any{"msgtype": "m.text", "body": fmt.Sprint(j)}).Str("event_id")
				switch j % 100 {
				case 7:
					u.MustDo("PUT", v3(fmt.Sprintf("/rooms/%s/redact/%s/r%d", esc(roomID), esc(id), j)), map[string]any{"reason": "x"})
				case 11:
					u.MustDo("POST", v3("/rooms/"+esc(roomID)+"/receipt/m.read/"+esc(id)), map[string]any{})
				case 13:
					u.MustDo("POST", v3("/rooms/"+esc(roomID)+"/read_markers"), map[string]any{"m.fully_read": id, "m.read.private": id})
				}
			}
		}()
	}
	wg.Wait()

	ctx := context.Background()
	live := env.Store()
	waitCaughtUp(t, env, live)
	var events int
	if err := live.Pool().QueryRow(ctx, "SELECT count(*) FROM events").Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events < 10000 {
		t.Fatalf("only %d events", events)
	}
	liveDump, err := live.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	replayed := env.StoreAt(newDBURL(t))
	if err := (&projector.Projector{Log: env.Conn(), Store: replayed, MaxBatch: 1024}).Replay(ctx, nil); err != nil {
		t.Fatal(err)
	}
	replayDump, err := replayed.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if liveDump != replayDump {
		t.Fatalf("replay of %d events differs from the live projection", events)
	}
	t.Logf("%d events; projection equals replay", events)
}
