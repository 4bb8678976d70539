package matrix

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// plContent returns power levels content as the test room has them (alice
// 100 before v12, mod 50) with the given top-level fields and user entries
// merged in; a nil value removes an entry.
func plContent(r *testRoom, fields map[string]any, users map[UserID]any) map[string]any {
	u := map[string]any{string(mod): 50}
	if r.v != RoomVersion12 {
		u[string(alice)] = 100
	}
	for k, v := range users {
		if v == nil {
			delete(u, string(k))
		} else {
			u[string(k)] = v
		}
	}
	c := map[string]any{"users": u}
	for k, v := range fields {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// setPL has alice send power levels.
func setPL(r *testRoom, fields map[string]any, users map[UserID]any) {
	r.t.Helper()
	r.mustSend(r.stateEv(alice, TypePowerLevels, "", plContent(r, fields, users)))
}

func setJoinRule(r *testRoom, rule string) {
	r.t.Helper()
	r.mustSend(r.stateEv(alice, TypeJoinRules, "", map[string]any{"join_rule": rule}))
}

// idServer is the identity server key of the third-party invite tests.
func idServerKeys(t testing.TB) (*KeyPair, *KeyPair) {
	a, err := NewKeyPairFromSeed("ed25519:0", make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeyPairFromSeed("ed25519:1", []byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// send3PI has alice publish a third-party invite with token "tok" whose
// keys are the identity server's two keys (one as public_key, one in
// public_keys).
func send3PI(r *testRoom) {
	r.t.Helper()
	a, b := idServerKeys(r.t)
	r.mustSend(r.stateEv(alice, TypeThirdPartyInvite, "tok", map[string]any{
		"display_name":     "c...@example.com",
		"key_validity_url": "https://id.example/_matrix/identity/v2/pubkey/isvalid",
		"public_key":       a.PublicBase64(),
		"public_keys":      []any{map[string]any{"public_key": b.PublicBase64()}},
	}))
}

// signed3PI returns content.third_party_invite for redeeming token as
// mxid, signed by key.
func signed3PI(t testing.TB, mxid UserID, token string, key *KeyPair) map[string]any {
	obj := jsonOf(t, map[string]any{"mxid": string(mxid), "token": token, "sender": string(alice)})
	signed, err := SignJSON(obj, "id.example", key)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(signed, &m); err != nil {
		t.Fatal(err)
	}
	return map[string]any{"display_name": "c...@example.com", "signed": m}
}

type authCase struct {
	name     string
	versions []RoomVersion // nil means all
	setup    func(r *testRoom)
	event    func(r *testRoom) *Event
	allow    bool
}

func runAuthCases(t *testing.T, cases []authCase) {
	t.Helper()
	for _, tc := range cases {
		vs := tc.versions
		if vs == nil {
			vs = allVersions
		}
		for _, v := range vs {
			t.Run(tc.name+"/v"+string(v), func(t *testing.T) {
				r := newTestRoom(t, v, nil)
				if tc.setup != nil {
					tc.setup(r)
				}
				ev := tc.event(r)
				err := Authorize(ev, r.state)
				if tc.allow {
					if err != nil {
						t.Fatalf("rejected: %v", err)
					}
					return
				}
				if err == nil {
					t.Fatalf("allowed %s", ev.JSON())
				}
				if testing.Verbose() {
					t.Logf("rejected: %v", err)
				}
				me, ok := AsError(err)
				if !ok || me.Code != "M_FORBIDDEN" || me.Status != http.StatusForbidden {
					t.Fatalf("error %v is not M_FORBIDDEN/403", err)
				}
			})
		}
	}
}

func TestAuthorizeGeneral(t *testing.T) {
	runAuthCases(t, []authCase{
		{name: "message from joined member", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.msg(bob)) }},
		{name: "message from non-member",
			event: func(r *testRoom) *Event { return r.build(r.msg(carol)) }},
		{name: "message from invited user",
			setup: func(r *testRoom) { r.mustSend(r.member(alice, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.msg(carol)) }},
		{name: "event claiming another room",
			event: func(r *testRoom) *Event {
				other := newTestRoom(r.t, r.v, map[string]any{"org.example.tag": "other"})
				p := r.msg(bob)
				p.AuthEvents, _ = AuthEventsFor(r.state, p)
				p.RoomID = other.roomID
				return r.build(p)
			}},
		{name: "duplicate auth event",
			event: func(r *testRoom) *Event {
				p := r.msg(bob)
				ids, _ := AuthEventsFor(r.state, p)
				p.AuthEvents = append(ids, ids[0])
				return r.build(p)
			}},
		{name: "auth event the selection does not allow",
			event: func(r *testRoom) *Event {
				p := r.msg(bob)
				ids, _ := AuthEventsFor(r.state, p)
				p.AuthEvents = append(ids, r.state.Get(StateKey{Type: TypeJoinRules}).ID())
				return r.build(p)
			}},
		{name: "auth event not in the state",
			event: func(r *testRoom) *Event {
				p := r.msg(bob)
				ids, _ := AuthEventsFor(r.state, p)
				p.AuthEvents = append(ids, bogusEventID(r.v))
				return r.build(p)
			}},
		{name: "stale auth event (superseded membership)",
			event: func(r *testRoom) *Event {
				p := r.msg(bob)
				p.AuthEvents, _ = AuthEventsFor(r.state, p)
				r.mustSend(r.member(bob, bob, "join", map[string]any{"displayname": "Bob"}))
				return r.build(p)
			}},
		{name: "auth events without the create event", versions: preV12,
			event: func(r *testRoom) *Event {
				p := r.msg(bob)
				ids, _ := AuthEventsFor(r.state, p)
				p.AuthEvents = slices.DeleteFunc(ids, func(id EventID) bool { return id == r.create.ID() })
				return r.build(p)
			}},
		{name: "auth events citing the create event", versions: []RoomVersion{RoomVersion12},
			event: func(r *testRoom) *Event {
				p := r.msg(bob)
				ids, _ := AuthEventsFor(r.state, p)
				p.AuthEvents = append(ids, r.create.ID())
				return r.build(p)
			}},
		{name: "auth events may omit optional entries", allow: true,
			event: func(r *testRoom) *Event {
				p := r.msg(bob)
				p.AuthEvents = []EventID{}
				if r.v != RoomVersion12 {
					p.AuthEvents = []EventID{r.create.ID()}
				}
				return r.build(p)
			}},
		{name: "third_party_invite event at invite level", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.stateEv(bob, TypeThirdPartyInvite, "t", map[string]any{})) }},
		{name: "third_party_invite event below invite level",
			setup: func(r *testRoom) { setPL(r, map[string]any{"invite": 10}, nil) },
			event: func(r *testRoom) *Event { return r.build(r.stateEv(bob, TypeThirdPartyInvite, "t", map[string]any{})) }},
		{name: "state event below state_default",
			event: func(r *testRoom) *Event {
				return r.build(r.stateEv(bob, "m.room.name", "", map[string]any{"name": "x"}))
			}},
		{name: "state event at state_default", allow: true,
			event: func(r *testRoom) *Event {
				return r.build(r.stateEv(mod, "m.room.name", "", map[string]any{"name": "x"}))
			}},
		{name: "events entry lowers a state type", allow: true,
			setup: func(r *testRoom) { setPL(r, map[string]any{"events": map[string]any{"m.room.name": 0}}, nil) },
			event: func(r *testRoom) *Event {
				return r.build(r.stateEv(bob, "m.room.name", "", map[string]any{"name": "x"}))
			}},
		{name: "events_default raised above member",
			setup: func(r *testRoom) { setPL(r, map[string]any{"events_default": 10}, nil) },
			event: func(r *testRoom) *Event { return r.build(r.msg(bob)) }},
		{name: "events entry raises a message type",
			setup: func(r *testRoom) { setPL(r, map[string]any{"events": map[string]any{"m.room.message": 60}}, nil) },
			event: func(r *testRoom) *Event { return r.build(r.msg(mod)) }},
		{name: "state_key naming another user",
			event: func(r *testRoom) *Event {
				return r.build(r.stateEv(mod, "org.example.x", string(bob), map[string]any{}))
			}},
		{name: "state_key naming the sender", allow: true,
			event: func(r *testRoom) *Event {
				return r.build(r.stateEv(mod, "org.example.x", string(mod), map[string]any{}))
			}},
		{name: "redaction by member is allowed by the auth rules", allow: true,
			event: func(r *testRoom) *Event {
				m := r.mustSend(r.msg(alice))
				return r.build(&ProtoEvent{Type: TypeRedaction, Sender: bob, Redacts: m.ID()})
			}},
		{name: "redaction restricted through events",
			setup: func(r *testRoom) { setPL(r, map[string]any{"events": map[string]any{TypeRedaction: 100}}, nil) },
			event: func(r *testRoom) *Event {
				m := r.mustSend(r.msg(mod))
				return r.build(&ProtoEvent{Type: TypeRedaction, Sender: mod, Redacts: m.ID()})
			}},
	})
}

func TestAuthorizeMembership(t *testing.T) {
	joinVia := func(r *testRoom, via UserID) *Event {
		return r.build(r.member(carol, carol, "join", map[string]any{"join_authorised_via_users_server": string(via)}))
	}
	runAuthCases(t, []authCase{
		// join
		{name: "join public room", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "join on behalf of another user",
			event: func(r *testRoom) *Event { return r.build(r.member(alice, carol, "join", nil)) }},
		{name: "banned user joins public room",
			setup: func(r *testRoom) { r.mustSend(r.member(mod, carol, "ban", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "join invite-only room uninvited",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleInvite) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "join invite-only room invited", allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleInvite); r.mustSend(r.member(bob, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "joined member re-joins with a new profile", allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleInvite) },
			event: func(r *testRoom) *Event {
				return r.build(r.member(bob, bob, "join", map[string]any{"displayname": "Bobby"}))
			}},
		{name: "join knock room uninvited",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "join knock room invited", versions: versionsFrom(RoomVersion7), allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock); r.mustSend(r.member(bob, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "join private room",
			setup: func(r *testRoom) { setJoinRule(r, JoinRulePrivate) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "join room with unknown join rule",
			setup: func(r *testRoom) { setJoinRule(r, "org.example.rule") },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "restricted join authorised by joined member", versions: versionsFrom(RoomVersion8), allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleRestricted) },
			event: func(r *testRoom) *Event { return joinVia(r, bob) }},
		{name: "restricted join without authoriser",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleRestricted) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "restricted join by invited user without authoriser", versions: versionsFrom(RoomVersion8), allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleRestricted); r.mustSend(r.member(bob, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "restricted join authorised by non-member",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleRestricted) },
			event: func(r *testRoom) *Event { return joinVia(r, "@eve:example.org") }},
		{name: "restricted join authorised by member below invite level",
			setup: func(r *testRoom) { setPL(r, map[string]any{"invite": 50}, nil); setJoinRule(r, JoinRuleRestricted) },
			event: func(r *testRoom) *Event { return joinVia(r, bob) }},
		{name: "restricted join authorised by member at invite level", versions: versionsFrom(RoomVersion8), allow: true,
			setup: func(r *testRoom) { setPL(r, map[string]any{"invite": 50}, nil); setJoinRule(r, JoinRuleRestricted) },
			event: func(r *testRoom) *Event { return joinVia(r, mod) }},
		{name: "restricted join not signed by the authoriser's server",
			setup: func(r *testRoom) {
				r.mustSend(r.member(dave, dave, "join", nil))
				setJoinRule(r, JoinRuleRestricted)
			},
			event: func(r *testRoom) *Event { return joinVia(r, dave) }},
		{name: "restricted join co-signed by the authoriser's server", versions: versionsFrom(RoomVersion8), allow: true,
			setup: func(r *testRoom) {
				r.mustSend(r.member(dave, dave, "join", nil))
				setJoinRule(r, JoinRuleRestricted)
			},
			event: func(r *testRoom) *Event { return r.cosign(joinVia(r, dave), "other.org") }},
		{name: "knock_restricted join authorised by member", versions: versionsFrom(RoomVersion10), allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnockRestricted) },
			event: func(r *testRoom) *Event { return joinVia(r, bob) }},
		{name: "knock_restricted join without authoriser",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnockRestricted) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "join knock room before knocking existed", versions: allVersions[:6],
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock); r.mustSend(r.member(bob, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "restricted join before restricted rooms existed", versions: allVersions[:7],
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleRestricted); r.mustSend(r.member(bob, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return joinVia(r, bob) }},
		{name: "knock_restricted join before v10", versions: allVersions[:9],
			setup: func(r *testRoom) {
				setJoinRule(r, JoinRuleKnockRestricted)
				r.mustSend(r.member(bob, carol, "invite", nil))
			},
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "join", nil)) }},
		{name: "join_authorised_via_users_server means nothing before v8", versions: allVersions[:7], allow: true,
			event: func(r *testRoom) *Event { return joinVia(r, "bob") }},
		{name: "authoriser that is not a user ID",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleRestricted) },
			event: func(r *testRoom) *Event { return joinVia(r, "bob") }},

		// invite
		{name: "invite by member", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.member(bob, carol, "invite", nil)) }},
		{name: "invite by non-member",
			event: func(r *testRoom) *Event { return r.build(r.member(carol, dave, "invite", nil)) }},
		{name: "invite a joined user",
			event: func(r *testRoom) *Event { return r.build(r.member(alice, bob, "invite", nil)) }},
		{name: "invite a banned user",
			setup: func(r *testRoom) { r.mustSend(r.member(mod, carol, "ban", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(alice, carol, "invite", nil)) }},
		{name: "invite below invite level",
			setup: func(r *testRoom) { setPL(r, map[string]any{"invite": 50}, nil) },
			event: func(r *testRoom) *Event { return r.build(r.member(bob, carol, "invite", nil)) }},
		{name: "invite at invite level", allow: true,
			setup: func(r *testRoom) { setPL(r, map[string]any{"invite": 50}, nil) },
			event: func(r *testRoom) *Event { return r.build(r.member(mod, carol, "invite", nil)) }},
		{name: "re-invite an invited user", allow: true,
			setup: func(r *testRoom) { r.mustSend(r.member(bob, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(alice, carol, "invite", nil)) }},

		// third-party invites
		{name: "third-party invite redeemed", allow: true,
			setup: send3PI,
			event: func(r *testRoom) *Event {
				a, _ := idServerKeys(r.t)
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": signed3PI(r.t, carol, "tok", a)}))
			}},
		{name: "third-party invite signed with a key from public_keys", allow: true,
			setup: send3PI,
			event: func(r *testRoom) *Event {
				_, b := idServerKeys(r.t)
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": signed3PI(r.t, carol, "tok", b)}))
			}},
		{name: "third-party invite for another mxid",
			setup: send3PI,
			event: func(r *testRoom) *Event {
				a, _ := idServerKeys(r.t)
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": signed3PI(r.t, dave, "tok", a)}))
			}},
		{name: "third-party invite with unknown token",
			setup: send3PI,
			event: func(r *testRoom) *Event {
				a, _ := idServerKeys(r.t)
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": signed3PI(r.t, carol, "nope", a)}))
			}},
		{name: "third-party invite redeemed by another sender",
			setup: send3PI,
			event: func(r *testRoom) *Event {
				a, _ := idServerKeys(r.t)
				return r.build(r.member(mod, carol, "invite", map[string]any{"third_party_invite": signed3PI(r.t, carol, "tok", a)}))
			}},
		{name: "third-party invite signed by an unknown key",
			setup: send3PI,
			event: func(r *testRoom) *Event {
				k, _ := GenerateKeyPair("0")
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": signed3PI(r.t, carol, "tok", k)}))
			}},
		{name: "third-party invite with tampered signed data",
			setup: send3PI,
			event: func(r *testRoom) *Event {
				a, _ := idServerKeys(r.t)
				tpi := signed3PI(r.t, carol, "tok", a)
				tpi["signed"].(map[string]any)["sender"] = string(mod)
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": tpi}))
			}},
		{name: "third-party invite of a banned user",
			setup: func(r *testRoom) { send3PI(r); r.mustSend(r.member(mod, carol, "ban", nil)) },
			event: func(r *testRoom) *Event {
				a, _ := idServerKeys(r.t)
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": signed3PI(r.t, carol, "tok", a)}))
			}},
		{name: "third-party invite without signed",
			setup: send3PI,
			event: func(r *testRoom) *Event {
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": map[string]any{"display_name": "x"}}))
			}},
		{name: "third-party invite without token",
			setup: send3PI,
			event: func(r *testRoom) *Event {
				return r.build(r.member(alice, carol, "invite", map[string]any{"third_party_invite": map[string]any{"signed": map[string]any{"mxid": string(carol)}}}))
			}},

		// leave and kick
		{name: "leave own membership", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.member(bob, bob, "leave", nil)) }},
		{name: "reject an invite", allow: true,
			setup: func(r *testRoom) { r.mustSend(r.member(bob, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "leave", nil)) }},
		{name: "retract a knock", versions: versionsFrom(RoomVersion7), allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock); r.mustSend(r.member(carol, carol, "knock", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "leave", nil)) }},
		{name: "leave a room never joined",
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "leave", nil)) }},
		{name: "banned user leaves",
			setup: func(r *testRoom) { r.mustSend(r.member(mod, bob, "ban", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(bob, bob, "leave", nil)) }},
		{name: "kick by moderator", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.member(mod, bob, "leave", nil)) }},
		{name: "kick by member below kick level",
			event: func(r *testRoom) *Event { return r.build(r.member(bob, mod, "leave", nil)) }},
		{name: "kick a user of equal power",
			setup: func(r *testRoom) { setPL(r, nil, map[UserID]any{bob: 50}) },
			event: func(r *testRoom) *Event { return r.build(r.member(mod, bob, "leave", nil)) }},
		{name: "kick by powerful non-member",
			setup: func(r *testRoom) { setPL(r, nil, map[UserID]any{carol: 90}) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, bob, "leave", nil)) }},
		{name: "kick the creator",
			event: func(r *testRoom) *Event { return r.build(r.member(mod, alice, "leave", nil)) }},
		{name: "kick an absent user", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.member(mod, carol, "leave", nil)) }},
		{name: "unban at ban level", allow: true,
			setup: func(r *testRoom) { r.mustSend(r.member(mod, carol, "ban", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(mod, carol, "leave", nil)) }},
		{name: "unban at kick level but below ban level",
			setup: func(r *testRoom) {
				r.mustSend(r.member(alice, carol, "ban", nil))
				setPL(r, map[string]any{"ban": 60}, nil)
			},
			event: func(r *testRoom) *Event { return r.build(r.member(mod, carol, "leave", nil)) }},

		// ban
		{name: "ban by moderator", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.member(mod, bob, "ban", nil)) }},
		{name: "ban a non-member", allow: true,
			event: func(r *testRoom) *Event { return r.build(r.member(mod, carol, "ban", nil)) }},
		{name: "ban by member below ban level",
			event: func(r *testRoom) *Event { return r.build(r.member(bob, carol, "ban", nil)) }},
		{name: "ban a user of equal power",
			setup: func(r *testRoom) { setPL(r, nil, map[UserID]any{bob: 50}) },
			event: func(r *testRoom) *Event { return r.build(r.member(mod, bob, "ban", nil)) }},
		{name: "ban by powerful non-member",
			setup: func(r *testRoom) { setPL(r, nil, map[UserID]any{carol: 90}) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, bob, "ban", nil)) }},
		{name: "ban the creator",
			event: func(r *testRoom) *Event { return r.build(r.member(mod, alice, "ban", nil)) }},

		// knock
		{name: "knock on knock room", versions: versionsFrom(RoomVersion7), allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "knock", nil)) }},
		{name: "knock on knock_restricted room", versions: versionsFrom(RoomVersion10), allow: true,
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnockRestricted) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "knock", nil)) }},
		{name: "knock before v7", versions: allVersions[:6],
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "knock", nil)) }},
		{name: "knock on knock_restricted room before v10", versions: allVersions[:9],
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnockRestricted) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "knock", nil)) }},
		{name: "knock on public room",
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "knock", nil)) }},
		{name: "knock on invite room",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleInvite) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "knock", nil)) }},
		{name: "knock on behalf of another user",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock) },
			event: func(r *testRoom) *Event { return r.build(r.member(bob, carol, "knock", nil)) }},
		{name: "knock while invited",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock); r.mustSend(r.member(bob, carol, "invite", nil)) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "knock", nil)) }},
		{name: "knock while banned",
			setup: func(r *testRoom) { r.mustSend(r.member(mod, carol, "ban", nil)); setJoinRule(r, JoinRuleKnock) },
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "knock", nil)) }},
		{name: "knock while joined",
			setup: func(r *testRoom) { setJoinRule(r, JoinRuleKnock) },
			event: func(r *testRoom) *Event { return r.build(r.member(bob, bob, "knock", nil)) }},

		// malformed member events
		{name: "unknown membership",
			event: func(r *testRoom) *Event { return r.build(r.member(carol, carol, "org.example.lurk", nil)) }},
		{name: "no membership",
			event: func(r *testRoom) *Event {
				return r.build(&ProtoEvent{Type: TypeMember, StateKey: sk(string(carol)), Sender: carol, Content: json.RawMessage(`{}`)})
			}},
		{name: "membership not a string",
			event: func(r *testRoom) *Event {
				return r.build(&ProtoEvent{Type: TypeMember, StateKey: sk(string(carol)), Sender: carol, Content: json.RawMessage(`{"membership":1}`)})
			}},
		{name: "member event without state_key",
			event: func(r *testRoom) *Event {
				return r.build(&ProtoEvent{Type: TypeMember, Sender: carol, Content: json.RawMessage(`{"membership":"join"}`)})
			}},
		{name: "member state_key not a user ID",
			event: func(r *testRoom) *Event {
				return r.build(&ProtoEvent{Type: TypeMember, StateKey: sk("carol"), Sender: carol, Content: json.RawMessage(`{"membership":"join"}`)})
			}},
	})
}

func TestAuthorizePowerLevels(t *testing.T) {
	pl := func(sender UserID, fields map[string]any, users map[UserID]any) func(r *testRoom) *Event {
		return func(r *testRoom) *Event {
			return r.build(r.stateEv(sender, TypePowerLevels, "", plContent(r, fields, users)))
		}
	}
	raw := func(sender UserID, content string) func(r *testRoom) *Event {
		return func(r *testRoom) *Event {
			c := content
			if r.v != RoomVersion12 {
				// keep alice's 100 so the malformed part is the only problem
				if strings.Contains(c, `"users":{}`) {
					c = strings.Replace(c, `"users":{}`, `"users":{"@alice:example.org":100}`, 1)
				} else {
					c = strings.Replace(c, `"users":{`, `"users":{"@alice:example.org":100,`, 1)
				}
			}
			return r.build(&ProtoEvent{Type: TypePowerLevels, StateKey: sk(""), Sender: sender, Content: json.RawMessage(c)})
		}
	}
	runAuthCases(t, []authCase{
		{name: "valid change by creator", allow: true, event: pl(alice, map[string]any{"ban": 40}, nil)},
		{name: "level as string", versions: versionsFrom(RoomVersion10), event: raw(alice, `{"ban":"50","users":{}}`)},
		{name: "levels as strings before v10", versions: allVersions[:9], allow: true,
			event: raw(alice, `{"ban":" +050 ","events":{"m.room.name":"50"},"notifications":{"room":"-1"},"users":{"@bob:example.org":"50"}}`)},
		{name: "level as a string that is not an integer", versions: allVersions[:9], event: raw(alice, `{"ban":"5O","users":{}}`)},
		{name: "level as a decimal string", versions: allVersions[:9], event: raw(alice, `{"ban":"50.0","users":{}}`)},
		{name: "level as bool", event: raw(alice, `{"kick":true,"users":{}}`)},
		{name: "events value as string", versions: versionsFrom(RoomVersion10), event: raw(alice, `{"events":{"m.room.name":"50"},"users":{}}`)},
		{name: "events not an object", event: raw(alice, `{"events":[1],"users":{}}`)},
		{name: "notifications value as string", versions: versionsFrom(RoomVersion10), event: raw(alice, `{"notifications":{"room":"50"},"users":{}}`)},
		{name: "users key not a user ID", event: raw(alice, `{"users":{"bob":50}}`)},
		{name: "users value as string", versions: versionsFrom(RoomVersion10), event: raw(alice, `{"users":{"@bob:example.org":"50"}}`)},
		{name: "users not an object", event: raw(alice, `{"users":[1]}`)},
		{name: "unknown keys are ignored", allow: true, event: raw(alice, `{"users":{},"org.example.x":"y"}`)},
		{name: "member below state_default", event: pl(bob, nil, nil)},

		{name: "moderator raises a level above own", event: pl(mod, map[string]any{"ban": 60}, nil)},
		{name: "moderator lowers a level", allow: true, event: pl(mod, map[string]any{"ban": 40}, nil)},
		{name: "moderator adds a level at own power", allow: true, event: pl(mod, map[string]any{"redact": 50}, nil)},
		{name: "moderator changes a level set above them",
			setup: func(r *testRoom) { setPL(r, map[string]any{"kick": 75}, nil) },
			event: pl(mod, map[string]any{"kick": 50}, nil)},
		{name: "moderator removes a level set above them",
			setup: func(r *testRoom) { setPL(r, map[string]any{"kick": 75}, nil) },
			event: pl(mod, nil, nil)},
		{name: "moderator removes a level at own power", allow: true,
			setup: func(r *testRoom) { setPL(r, map[string]any{"kick": 50}, nil) },
			event: pl(mod, nil, nil)},
		{name: "moderator adds events entry above own", event: pl(mod, map[string]any{"events": map[string]any{"m.room.name": 60}}, nil)},
		{name: "moderator adds events entry at own", allow: true, event: pl(mod, map[string]any{"events": map[string]any{"m.room.name": 50}}, nil)},
		{name: "moderator changes events entry set above them",
			setup: func(r *testRoom) { setPL(r, map[string]any{"events": map[string]any{"m.room.topic": 75}}, nil) },
			event: pl(mod, map[string]any{"events": map[string]any{"m.room.topic": 0}}, nil)},
		{name: "moderator removes events entry set above them",
			setup: func(r *testRoom) { setPL(r, map[string]any{"events": map[string]any{"m.room.topic": 75}}, nil) },
			event: pl(mod, nil, nil)},
		{name: "moderator keeps events entry set above them", allow: true,
			setup: func(r *testRoom) { setPL(r, map[string]any{"events": map[string]any{"m.room.topic": 75}}, nil) },
			event: pl(mod, map[string]any{"events": map[string]any{"m.room.topic": 75}, "ban": 45}, nil)},
		{name: "moderator adds notifications entry above own", versions: versionsFrom(RoomVersion6), event: pl(mod, map[string]any{"notifications": map[string]any{"room": 60}}, nil)},
		{name: "moderator changes notifications entry set above them", versions: versionsFrom(RoomVersion6),
			setup: func(r *testRoom) { setPL(r, map[string]any{"notifications": map[string]any{"room": 75}}, nil) },
			event: pl(mod, map[string]any{"notifications": map[string]any{"room": 10}}, nil)},
		{name: "notifications unguarded before v6", versions: allVersions[:5], allow: true,
			setup: func(r *testRoom) { setPL(r, map[string]any{"notifications": map[string]any{"room": 75}}, nil) },
			event: pl(mod, map[string]any{"notifications": map[string]any{"room": 100, "x": 90}}, nil)},
		{name: "moderator demotes a user of equal power",
			setup: func(r *testRoom) { setPL(r, nil, map[UserID]any{bob: 50}) },
			event: pl(mod, nil, map[UserID]any{bob: 0})},
		{name: "moderator removes entry of a user of equal power",
			setup: func(r *testRoom) { setPL(r, nil, map[UserID]any{bob: 50}) },
			event: pl(mod, nil, nil)},
		{name: "moderator demotes self", allow: true, event: pl(mod, nil, map[UserID]any{mod: 10})},
		{name: "moderator promotes self", event: pl(mod, nil, map[UserID]any{mod: 51})},
		{name: "moderator promotes member to own power", allow: true, event: pl(mod, nil, map[UserID]any{bob: 50})},
		{name: "moderator promotes member above own power", event: pl(mod, nil, map[UserID]any{bob: 51})},
		{name: "moderator changes a lower user", allow: true,
			setup: func(r *testRoom) { setPL(r, nil, map[UserID]any{bob: 10}) },
			event: pl(mod, nil, map[UserID]any{bob: 20})},
		{name: "moderator removes a lower user's entry", allow: true,
			setup: func(r *testRoom) { setPL(r, nil, map[UserID]any{bob: 10}) },
			event: pl(mod, nil, nil)},
		{name: "moderator raises users_default above own", event: pl(mod, map[string]any{"users_default": 60}, nil)},
		{name: "moderator demotes the v10/v11 creator", versions: preV12,
			event: pl(mod, nil, map[UserID]any{alice: 0})},
		{name: "creator sets a level above 100 in v10/v11", versions: preV12,
			event: pl(alice, map[string]any{"ban": 101}, nil)},
		{name: "creator sets any level in v12", versions: []RoomVersion{RoomVersion12}, allow: true,
			event: pl(alice, map[string]any{"ban": MaxSafeInteger}, map[UserID]any{mod: MaxSafeInteger})},
		{name: "power levels listing the creator in v12", versions: []RoomVersion{RoomVersion12},
			event: pl(alice, nil, map[UserID]any{alice: 100})},
		{name: "power levels listing the creator in v10/v11", versions: preV12, allow: true,
			event: pl(alice, nil, map[UserID]any{alice: 100})},
	})
}

// TestAuthorizeCreate covers rule 1 (create events), building the create
// JSON by hand where BuildEvent would refuse.
func TestAuthorizeCreate(t *testing.T) {
	key, _ := GenerateKeyPair("t")
	classic := RoomID("!abc:example.org")
	build := func(t *testing.T, v RoomVersion, m map[string]any) *Event {
		t.Helper()
		raw, err := SignEventJSON(v, jsonOf(t, m), "example.org", key)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := ParseEvent(v, raw)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	base := func(v RoomVersion) map[string]any {
		m := map[string]any{"type": TypeCreate, "state_key": "", "sender": string(alice), "depth": 1,
			"origin_server_ts": 1, "prev_events": []any{}, "auth_events": []any{},
			"content": map[string]any{"room_version": string(v)}}
		if v != RoomVersion12 {
			m["room_id"] = string(classic)
		}
		if v.CreatorInContent() {
			m["content"].(map[string]any)["creator"] = string(alice)
		}
		if v == RoomVersion1 || v == RoomVersion2 {
			m["event_id"] = "$create:example.org"
		}
		return m
	}
	tests := []struct {
		name     string
		versions []RoomVersion
		edit     func(v RoomVersion, m map[string]any)
		allow    bool
	}{
		{"valid", nil, func(RoomVersion, map[string]any) {}, true},
		{"with prev_events", nil, func(v RoomVersion, m map[string]any) {
			m["prev_events"] = []any{bogusEventID(v)}
			if v == RoomVersion1 || v == RoomVersion2 {
				m["prev_events"] = []any{[]any{bogusEventID(v), map[string]any{}}}
			}
		}, false},
		{"room on another server", []RoomVersion{RoomVersion10, RoomVersion11}, func(_ RoomVersion, m map[string]any) { m["room_id"] = "!abc:other.org" }, false},
		{"v12 with room_id", []RoomVersion{RoomVersion12}, func(_ RoomVersion, m map[string]any) { m["room_id"] = "!" + strings.Repeat("A", 43) }, false},
		{"unrecognised room_version", nil, func(_ RoomVersion, m map[string]any) { m["content"].(map[string]any)["room_version"] = "99" }, false},
		{"room_version not a string", nil, func(_ RoomVersion, m map[string]any) { m["content"].(map[string]any)["room_version"] = 12 }, false},
		{"no room_version (means 1)", allVersions[1:], func(_ RoomVersion, m map[string]any) { delete(m["content"].(map[string]any), "room_version") }, false},
		{"no room_version in a version 1 room", allVersions[:1], func(_ RoomVersion, m map[string]any) { delete(m["content"].(map[string]any), "room_version") }, true},
		{"room_version of another supported version", nil, func(v RoomVersion, m map[string]any) {
			other := RoomVersion11
			if v == RoomVersion11 {
				other = RoomVersion12
			}
			m["content"].(map[string]any)["room_version"] = string(other)
		}, false},
		{"v10 without creator", preV11, func(_ RoomVersion, m map[string]any) { delete(m["content"].(map[string]any), "creator") }, false},
		{"v10 with invalid creator", preV11, func(_ RoomVersion, m map[string]any) { m["content"].(map[string]any)["creator"] = "alice" }, false},
		{"v11+ without creator", []RoomVersion{RoomVersion11, RoomVersion12}, func(RoomVersion, map[string]any) {}, true},
		{"v12 additional_creators", []RoomVersion{RoomVersion12}, func(_ RoomVersion, m map[string]any) {
			m["content"].(map[string]any)["additional_creators"] = []any{string(bob), string(dave)}
		}, true},
		{"v12 additional_creators not an array", []RoomVersion{RoomVersion12}, func(_ RoomVersion, m map[string]any) {
			m["content"].(map[string]any)["additional_creators"] = string(bob)
		}, false},
		{"v12 additional_creators with a bad user ID", []RoomVersion{RoomVersion12}, func(_ RoomVersion, m map[string]any) {
			m["content"].(map[string]any)["additional_creators"] = []any{string(bob), "carol"}
		}, false},
		{"v12 additional_creators with a non-string", []RoomVersion{RoomVersion12}, func(_ RoomVersion, m map[string]any) {
			m["content"].(map[string]any)["additional_creators"] = []any{1}
		}, false},
		{"v11 ignores additional_creators", []RoomVersion{RoomVersion11}, func(_ RoomVersion, m map[string]any) {
			m["content"].(map[string]any)["additional_creators"] = "junk"
		}, true},
		{"non-empty state_key", nil, func(_ RoomVersion, m map[string]any) { m["state_key"] = "x" }, false},
	}
	for _, tc := range tests {
		vs := tc.versions
		if vs == nil {
			vs = allVersions
		}
		for _, v := range vs {
			t.Run(fmt.Sprintf("%s/v%s", tc.name, v), func(t *testing.T) {
				m := base(v)
				tc.edit(v, m)
				err := Authorize(build(t, v, m), State{})
				if tc.allow != (err == nil) {
					t.Fatalf("allow=%v, got %v", tc.allow, err)
				}
			})
		}
	}
}

func TestAuthorizeEarlyRoom(t *testing.T) {
	for _, v := range allVersions {
		t.Run(string(v), func(t *testing.T) {
			// Before anyone joins, only the creator's join directly after the
			// create event is allowed; no join rules means "invite".
			r := newEmptyRoom(t, v, nil)
			if err := Authorize(r.build(r.member(bob, bob, "join", nil)), r.state); err == nil {
				t.Fatal("non-creator joined a fresh room")
			}
			if err := Authorize(r.build(r.msg(alice)), r.state); err == nil {
				t.Fatal("creator sent a message before joining")
			}
			// The creator's join must follow the create event directly.
			later := r.build(r.member(alice, alice, "join", nil))
			p := r.member(alice, alice, "join", nil)
			p.PrevEvents = []EventID{r.create.ID(), later.ID()}
			if err := Authorize(r.build(p), r.state); err == nil {
				t.Fatal("creator joined with prev_events other than the create alone")
			}
			r.mustSend(r.member(alice, alice, "join", nil))

			// Without power levels the creator may set state (100 in v10/v11,
			// infinite in v12); others have 0 against state_default 50.
			r.mustSend(r.stateEv(alice, TypeJoinRules, "", map[string]any{"join_rule": "public"}))
			r.mustSend(r.member(bob, bob, "join", nil))
			if got := r.state.UserPowerLevel(alice); v == RoomVersion12 && got != CreatorPowerLevel || v != RoomVersion12 && got != 100 {
				t.Fatalf("creator level %d", got)
			}
			if got := r.state.UserPowerLevel(bob); got != 0 {
				t.Fatalf("bob level %d", got)
			}
			if err := r.send(r.stateEv(bob, "m.room.name", "", map[string]any{"name": "x"})); err == nil {
				t.Fatal("member set state without power levels")
			}
			if err := r.send(r.msg(bob)); err != nil {
				t.Fatalf("member message: %v", err)
			}
			if err := r.send(r.stateEv(alice, "m.room.name", "", map[string]any{"name": "x"})); err != nil {
				t.Fatalf("creator state: %v", err)
			}
			// Kicking: the creator's 100 (or infinity) beats bob's 0.
			if err := r.send(r.member(alice, bob, "leave", nil)); err != nil {
				t.Fatalf("creator kick: %v", err)
			}
		})
	}
}

func TestAuthorizeNoFederate(t *testing.T) {
	for _, v := range allVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newEmptyRoom(t, v, map[string]any{"m.federate": false})
			r.mustSend(r.member(alice, alice, "join", nil))
			r.mustSend(r.stateEv(alice, TypeJoinRules, "", map[string]any{"join_rule": "public"}))
			if err := r.send(r.member(dave, dave, "join", nil)); err == nil {
				t.Fatal("remote user joined a non-federating room")
			}
			if err := r.send(r.member(bob, bob, "join", nil)); err != nil {
				t.Fatalf("local join: %v", err)
			}
		})
	}
}

// TestAuthorizeV12Creators covers the creator rules of version 12: the
// additional creators are as powerful as the sender of the create event.
func TestAuthorizeV12Creators(t *testing.T) {
	r := newEmptyRoom(t, RoomVersion12, map[string]any{"additional_creators": []any{string(carol)}})
	r.mustSend(r.member(alice, alice, "join", nil))
	if err := r.send(r.stateEv(alice, TypePowerLevels, "", map[string]any{"users": map[string]any{string(carol): 100}})); err == nil {
		t.Fatal("power levels listed an additional creator")
	}
	r.mustSend(r.stateEv(alice, TypePowerLevels, "", map[string]any{"users": map[string]any{string(mod): 50}}))
	r.mustSend(r.stateEv(alice, TypeJoinRules, "", map[string]any{"join_rule": "public"}))
	r.mustSend(r.member(mod, mod, "join", nil))
	r.mustSend(r.member(carol, carol, "join", nil))

	if got := r.state.Creators(); !slices.Equal(got, []UserID{alice, carol}) {
		t.Fatalf("Creators() = %v", got)
	}
	if r.state.UserPowerLevel(carol) != CreatorPowerLevel {
		t.Fatal("additional creator is not infinitely powerful")
	}
	if err := Authorize(r.build(r.member(mod, carol, "leave", nil)), r.state); err == nil {
		t.Fatal("moderator kicked a creator")
	}
	if err := Authorize(r.build(r.member(carol, alice, "ban", nil)), r.state); err == nil {
		t.Fatal("a creator banned another creator")
	}
	if err := Authorize(r.build(r.stateEv(carol, TypePowerLevels, "", map[string]any{"users": map[string]any{string(mod): 9000}, "ban": 1 << 40})), r.state); err != nil {
		t.Fatalf("additional creator changing power levels: %v", err)
	}
	if err := r.send(r.member(carol, mod, "ban", nil)); err != nil {
		t.Fatalf("additional creator banning a moderator: %v", err)
	}
}

func TestAuthEventsFor(t *testing.T) {
	for _, v := range allVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newTestRoom(t, v, nil)
			setJoinRule(r, JoinRuleRestricted)
			send3PI(r)
			id := func(k StateKey) EventID { return r.state.Get(k).ID() }
			create, pl, jr := StateKey{Type: TypeCreate}, StateKey{Type: TypePowerLevels}, StateKey{Type: TypeJoinRules}
			mem := func(u UserID) StateKey { return StateKey{Type: TypeMember, StateKey: string(u)} }
			a, _ := idServerKeys(t)
			restrictedKeys := []StateKey{pl, jr, mem(bob)}
			if !v.RestrictedJoins() { // before v8 the authoriser is not an auth event
				restrictedKeys = restrictedKeys[:2]
			}
			tests := []struct {
				name string
				p    *ProtoEvent
				want []StateKey
			}{
				{"message", r.msg(bob), []StateKey{pl, mem(bob)}},
				{"state", r.stateEv(mod, "m.room.topic", "", map[string]any{}), []StateKey{pl, mem(mod)}},
				{"join by absent user", r.member(carol, carol, "join", nil), []StateKey{pl, jr}},
				{"restricted join", r.member(carol, carol, "join", map[string]any{"join_authorised_via_users_server": string(bob)}), restrictedKeys},
				{"invite", r.member(bob, carol, "invite", nil), []StateKey{pl, mem(bob), jr}},
				{"kick", r.member(mod, bob, "leave", nil), []StateKey{pl, mem(mod), mem(bob)}},
				{"ban", r.member(mod, bob, "ban", nil), []StateKey{pl, mem(mod), mem(bob)}},
				{"third-party invite", r.member(alice, carol, "invite", map[string]any{"third_party_invite": signed3PI(t, carol, "tok", a)}),
					[]StateKey{pl, mem(alice), jr, {Type: TypeThirdPartyInvite, StateKey: "tok"}}},
			}
			for _, tc := range tests {
				got, err := AuthEventsFor(r.state, tc.p)
				if err != nil {
					t.Fatal(err)
				}
				var want []EventID
				if v != RoomVersion12 {
					want = append(want, id(create))
				}
				for _, k := range tc.want {
					want = append(want, id(k))
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s: got %v, want %v", tc.name, got, want)
				}
			}
			if ids, err := AuthEventsFor(r.state, &ProtoEvent{Type: TypeCreate, StateKey: sk("")}); err != nil || len(ids) != 0 {
				t.Errorf("create: %v %v", ids, err)
			}
			if _, err := AuthEventsFor(State{}, r.msg(bob)); err == nil {
				t.Error("AuthEventsFor without a create event succeeded")
			}
		})
	}
}

func TestAuthorizeRedaction(t *testing.T) {
	for _, v := range allVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newTestRoom(t, v, nil)
			byAlice := r.mustSend(r.msg(alice))
			byBob := r.mustSend(r.msg(bob))
			redact := func(sender UserID, target *Event) *Event {
				return r.mustSend(&ProtoEvent{Type: TypeRedaction, Sender: sender, Redacts: target.ID()})
			}
			if err := AuthorizeRedaction(r.state, redact(bob, byBob), byBob); err != nil {
				t.Errorf("own redaction: %v", err)
			}
			if err := AuthorizeRedaction(r.state, redact(bob, byAlice), byAlice); err == nil {
				t.Error("member redacted another user's event")
			}
			if err := AuthorizeRedaction(r.state, redact(mod, byBob), byBob); err != nil {
				t.Errorf("moderator redaction: %v", err)
			}
			if err := AuthorizeRedaction(r.state, redact(mod, byBob), byAlice); err == nil {
				t.Error("redaction applied to an event it does not name")
			}
			if err := AuthorizeRedaction(r.state, byBob, byAlice); err == nil {
				t.Error("a message counted as a redaction")
			}
			other := newTestRoom(t, v, map[string]any{"org.example.tag": "other"})
			foreign := other.mustSend(other.msg(bob))
			if err := AuthorizeRedaction(r.state, redact(mod, foreign), foreign); err == nil {
				t.Error("redaction across rooms")
			}
			setPL(r, map[string]any{"redact": 60}, nil)
			if err := AuthorizeRedaction(r.state, redact(mod, byBob), byBob); err == nil {
				t.Error("moderator below the redact level redacted")
			}
		})
	}
}

func TestApplyRedactedState(t *testing.T) {
	for _, v := range allVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newTestRoom(t, v, nil)
			name := r.mustSend(r.stateEv(alice, "m.room.name", "", map[string]any{"name": "secret"}))
			join := r.state.Member(bob)
			s, err := ApplyRedacted(r.state, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Get(StateKey{Type: "m.room.name"}); got.ID() != name.ID() || string(got.Content()) != "{}" {
				t.Fatalf("redacted name: %s", got.JSON())
			}
			if r.state.Get(StateKey{Type: "m.room.name"}) != name {
				t.Fatal("ApplyRedacted changed the old state")
			}
			// A redacted join still counts as joined.
			s, _ = ApplyRedacted(s, join)
			if s.Membership(bob) != MembershipJoin || s.Member(bob) == join {
				t.Fatal("redacted join lost its membership")
			}
			// Redacting an event that is no longer current changes nothing.
			r.mustSend(r.stateEv(alice, "m.room.name", "", map[string]any{"name": "new"}))
			s2, _ := ApplyRedacted(r.state, name)
			if s2.Get(StateKey{Type: "m.room.name"}) != r.state.Get(StateKey{Type: "m.room.name"}) {
				t.Fatal("redacting a superseded event changed state")
			}
			// Redacted power levels keep their protected keys.
			pl, _ := ApplyRedacted(r.state, r.state.Get(StateKey{Type: TypePowerLevels}))
			if pl.UserPowerLevel(mod) != 50 {
				t.Fatal("redacted power levels lost users")
			}
		})
	}
}

func TestStateHelpers(t *testing.T) {
	r := newTestRoom(t, RoomVersion11, nil)
	if r.state.RoomVersion() != RoomVersion11 || (State{}).RoomVersion() != "" {
		t.Fatal("RoomVersion")
	}
	if r.state.JoinRule() != JoinRulePublic || (State{}).JoinRule() != JoinRuleInvite {
		t.Fatal("JoinRule")
	}
	if r.state.Membership(bob) != MembershipJoin || r.state.Membership(carol) != MembershipLeave {
		t.Fatal("Membership")
	}
	if got := r.state.Creators(); !slices.Equal(got, []UserID{alice}) {
		t.Fatalf("Creators %v", got)
	}
	pl := r.state.PowerLevels()
	if pl.Ban != 50 || pl.Kick != 50 || pl.Redact != 50 || pl.Invite != 0 || pl.StateDefault != 50 || pl.EventsDefault != 0 || pl.UsersDefault != 0 {
		t.Fatalf("defaults %+v", pl)
	}
	if pl.UserLevel(alice) != 100 || pl.UserLevel(carol) != 0 || pl.EventLevel("m.room.name", true) != 50 || pl.EventLevel("m.room.message", false) != 0 {
		t.Fatal("levels")
	}
	if _, err := ParsePowerLevels([]byte(`{"ban":"50"}`)); err == nil {
		t.Fatal("ParsePowerLevels accepted a string level")
	}
	if p, err := ParsePowerLevels([]byte(`{"ban":10,"events":{"x":5},"users":{"@a:b":7},"users_default":3}`)); err != nil || p.Ban != 10 || p.EventLevel("x", false) != 5 || p.UserLevel("@a:b") != 7 || p.UserLevel("@c:d") != 3 {
		t.Fatalf("ParsePowerLevels: %+v %v", p, err)
	}
	v10 := newTestRoom(t, RoomVersion10, nil)
	if got := v10.state.Creators(); !slices.Equal(got, []UserID{alice}) {
		t.Fatalf("v10 Creators %v", got)
	}
}

// authBenchRoom is a room of the given version with n joined members.
func authBenchRoom(b *testing.B, v RoomVersion, n int) *testRoom {
	r := newTestRoom(b, v, nil)
	for i := range n {
		u := UserID(fmt.Sprintf("@user%d:example.org", i))
		ev := r.build(r.member(u, u, "join", map[string]any{"displayname": fmt.Sprintf("User %d", i)}))
		r.state = Apply(r.state, ev) // skip Authorize: setup only
		r.last = ev
	}
	return r
}

func BenchmarkAuthorize1000Members(b *testing.B) {
	for _, v := range []RoomVersion{RoomVersion11, RoomVersion12} {
		r := authBenchRoom(b, v, 1000)
		cases := map[string]*Event{
			"message":      r.build(r.msg("@user500:example.org")),
			"join":         r.build(r.member(carol, carol, "join", nil)),
			"kick":         r.build(r.member(mod, "@user7:example.org", "leave", nil)),
			"power_levels": r.build(r.stateEv(alice, TypePowerLevels, "", plContent(r, map[string]any{"ban": 40}, map[UserID]any{"@user1:example.org": 10}))),
		}
		for name, ev := range cases {
			if err := Authorize(ev, r.state); err != nil {
				b.Fatalf("%s: %v", name, err)
			}
			b.Run("v"+string(v)+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := Authorize(ev, r.state); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkApply1000Members(b *testing.B) {
	r := authBenchRoom(b, RoomVersion12, 1000)
	ev := r.build(r.member(carol, carol, "join", nil))
	b.ReportAllocs()
	for b.Loop() {
		_ = Apply(r.state, ev)
	}
}

func BenchmarkBuildEvent(b *testing.B) {
	r := newTestRoom(b, DefaultRoomVersion, nil)
	key := r.key("example.org")
	p := r.msg(bob)
	p.Content = json.RawMessage(`{"msgtype":"m.text","body":"Hello, world! This is a fairly ordinary chat message with some text.","m.mentions":{"user_ids":["@alice:example.org"]}}`)
	p.RoomID, p.PrevEvents, p.Depth, p.OriginServerTS = r.roomID, []EventID{r.last.ID()}, r.depth+1, 1700000000000
	p.AuthEvents, _ = AuthEventsFor(r.state, p)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildEvent(DefaultRoomVersion, p, "example.org", key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseEvent(b *testing.B) {
	r := newTestRoom(b, DefaultRoomVersion, nil)
	raw := r.build(r.msg(bob)).JSON()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEvent(DefaultRoomVersion, raw); err != nil {
			b.Fatal(err)
		}
	}
}
