package api_test

import (
	"testing"

	"strand/api"
	"strand/api/apitest"
)

// Deactivation, by the user and by an admin, leaves every room the user is
// joined to or invited to, with a leave sent by the user, and clears the
// profile: members see them gone, their name is nowhere, and they cannot
// be invited again.
func TestDeactivationLeavesRooms(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	cfg := apitest.DefaultConfig()
	cfg.SharedSecret = "s"
	c := apitest.NewClient(t, env.API(cfg).URL)
	nonce := c.MustDo("GET", "/_synapse/admin/v1/register", nil).Str("nonce")
	admin := c.As(c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce, "username": "root", "password": "pw", "admin": true,
		"mac": api.SharedSecretMAC("s", nonce, "root", "pw", true, "")}).Str("access_token"))
	owner := apitest.NewClient(t, c.Base)
	owner.Register("owner", "pw")

	for _, tc := range []struct {
		name       string
		deactivate func(u *apitest.Client)
	}{
		{"self", func(u *apitest.Client) {
			u.MustDo("POST", v3("/account/deactivate"), map[string]any{"auth": map[string]any{"type": "m.login.password", "user": u.UserID, "password": "pw"}})
		}},
		{"admin", func(u *apitest.Client) {
			admin.MustDo("POST", "/_synapse/admin/v1/deactivate/"+esc(u.UserID), map[string]any{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := apitest.NewClient(t, c.Base)
			u.Register("leaver-"+tc.name, "pw")
			u.MustDo("PUT", v3("/profile/"+esc(u.UserID)+"/displayname"), map[string]any{"displayname": "Leaver"})
			joined := []string{createRoom(t, u, map[string]any{"invite": []string{owner.UserID}}), createRoom(t, owner, map[string]any{"preset": "public_chat"})}
			owner.MustDo("POST", v3("/rooms/"+esc(joined[0])+"/join"), nil)
			u.MustDo("POST", v3("/rooms/"+esc(joined[1])+"/join"), nil)
			invited := createRoom(t, owner, map[string]any{"invite": []string{u.UserID}})
			banned := createRoom(t, owner, map[string]any{"preset": "public_chat"})
			u.MustDo("POST", v3("/rooms/"+esc(banned)+"/join"), nil)
			owner.MustDo("POST", v3("/rooms/"+esc(banned)+"/ban"), map[string]any{"user_id": u.UserID})

			tc.deactivate(u)

			for _, room := range append(joined, invited) {
				m := owner.MustDo("GET", v3("/rooms/"+esc(room)+"/state/m.room.member/"+esc(u.UserID))+"?format=event", nil)
				content := m.Body["content"].(map[string]any)
				if content["membership"] != "leave" || m.Str("sender") != u.UserID || content["displayname"] != nil {
					t.Errorf("room %s: member event after deactivation: %s", room, m.Raw)
				}
			}
			if m := owner.MustDo("GET", v3("/rooms/"+esc(banned)+"/state/m.room.member/"+esc(u.UserID)), nil); m.Str("membership") != "ban" {
				t.Errorf("a ban became %s", m.Raw)
			}
			if r := owner.Do("GET", v3("/profile/"+esc(u.UserID)), nil); r.Status != 404 {
				t.Errorf("profile of a deactivated user: %d %s", r.Status, r.Raw)
			}
			if r := owner.Do("POST", v3("/rooms/"+esc(joined[1])+"/invite"), map[string]any{"user_id": u.UserID}); r.Status != 403 {
				t.Errorf("inviting a deactivated user: %d %s", r.Status, r.Raw)
			}
			if r := u.Do("GET", v3("/account/whoami"), nil); r.Status != 401 {
				t.Errorf("token of a deactivated user: %d %s", r.Status, r.Raw)
			}
		})
	}
	// An admin may repeat a deactivation (to finish one that was cut
	// short); it changes nothing more.
	u := apitest.NewClient(t, c.Base)
	u.Register("twice", "pw")
	admin.MustDo("POST", "/_synapse/admin/v1/deactivate/"+esc(u.UserID), map[string]any{})
	admin.MustDo("POST", "/_synapse/admin/v1/deactivate/"+esc(u.UserID), map[string]any{})
	projectionReplays(t, env, 0)
}
