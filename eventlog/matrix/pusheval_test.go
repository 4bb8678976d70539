package matrix

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func mustPushEvent(t *testing.T, js string) *PushEvent {
	t.Helper()
	ev, err := NewPushEvent(json.RawMessage(js))
	if err != nil {
		t.Fatalf("NewPushEvent(%s): %v", js, err)
	}
	return ev
}

func mustRules(t *testing.T, user, stored string) *PushRuleset {
	t.Helper()
	var raw json.RawMessage
	if stored != "" {
		raw = json.RawMessage(stored)
	}
	rs, err := ParsePushRules(user, raw)
	if err != nil {
		t.Fatalf("ParsePushRules: %v", err)
	}
	return rs
}

// condRule wraps one override condition into a stored ruleset whose only
// effect is to notify with rule "t" when the condition holds (the master
// rule stays disabled; every default still follows it).
func condRule(cond string) string {
	return `{"global":{"override":[{"rule_id":"t","enabled":true,"default":false,"conditions":[` + cond + `],"actions":["notify",{"set_tweak":"sound","value":"t"}]}]}}`
}

// TestPushConditions is the spec's own examples of each condition kind
// (client-server API, "Push Rules: Conditions"), plus the edges the
// prose states.
func TestPushConditions(t *testing.T) {
	const bob = "@bob:example.org"
	ctx := PushConditionContext{UserID: bob, MemberCount: 5, SenderPowerLevel: 0}
	cases := []struct {
		name, cond, event string
		ctx               *PushConditionContext
		want              bool
	}{
		// event_match, whole value, case-insensitive.
		{"topic lunc?* Lunch plans", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, `{"type":"m.room.topic","state_key":"","sender":"@a:x","content":{"topic":"Lunch plans"}}`, nil, true},
		{"topic LUNCH", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, `{"type":"m.room.topic","sender":"@a:x","content":{"topic":"LUNCH"}}`, nil, true},
		{"topic leading space", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, `{"type":"m.room.topic","sender":"@a:x","content":{"topic":" lunch"}}`, nil, false},
		{"topic lunc (? needs a char)", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, `{"type":"m.room.topic","sender":"@a:x","content":{"topic":"lunc"}}`, nil, false},
		{"topic null", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, `{"type":"m.room.topic","sender":"@a:x","content":{"topic":null}}`, nil, false},
		{"absent key with *", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, `{"type":"m.room.topic","sender":"@a:x","content":{}}`, nil, false},
		{"non-string with *", `{"kind":"event_match","key":"content.n","pattern":"*"}`, `{"type":"x","sender":"@a:x","content":{"n":1}}`, nil, false},
		{"state_key empty pattern", `{"kind":"event_match","key":"state_key","pattern":""}`, `{"type":"m.room.tombstone","state_key":"","sender":"@a:x","content":{}}`, nil, true},
		{"no state_key", `{"kind":"event_match","key":"state_key","pattern":"*"}`, `{"type":"m.room.message","sender":"@a:x","content":{}}`, nil, false},
		// content.body: word-boundary substring.
		{"body ex*ple example", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"An example event."}}`, nil, true},
		{"body ex*ple exple", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"exple"}}`, nil, true},
		{"body ex*ple spans words", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"An exciting triple-whammy"}}`, nil, true},
		{"body inside a word", `{"kind":"event_match","key":"content.body","pattern":"ample"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"An example event."}}`, nil, false},
		{"body underscore is a word char", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"cake_lie"}}`, nil, false},
		{"body case-insensitive", `{"kind":"event_match","key":"content.body","pattern":"CAKE"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"the Cake."}}`, nil, true},
		{"body non-ascii", `{"kind":"event_match","key":"content.body","pattern":"café"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"un CAFÉ noir"}}`, nil, true},
		// event_property_is.
		{"m.federate true", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, `{"type":"m.room.create","state_key":"","sender":"@a:x","content":{"m.federate":true,"room_version":"1"}}`, nil, true},
		{"m.federate string true", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, `{"type":"m.room.create","sender":"@a:x","content":{"m.federate":"true"}}`, nil, false},
		{"m.federate 1", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, `{"type":"m.room.create","sender":"@a:x","content":{"m.federate":1}}`, nil, false},
		{"is integer", `{"kind":"event_property_is","key":"content.n","value":3}`, `{"type":"x","sender":"@a:x","content":{"n":3}}`, nil, true},
		{"is null", `{"kind":"event_property_is","key":"content.n","value":null}`, `{"type":"x","sender":"@a:x","content":{"n":null}}`, nil, true},
		{"is case-sensitive", `{"kind":"event_property_is","key":"content.s","value":"A"}`, `{"type":"x","sender":"@a:x","content":{"s":"a"}}`, nil, false},
		{"is object never", `{"kind":"event_property_is","key":"content.o","value":{}}`, `{"type":"x","sender":"@a:x","content":{"o":{}}}`, nil, false},
		{"escaped backslash key", `{"kind":"event_property_is","key":"content.m\\\\foo","value":"v"}`, `{"type":"x","sender":"@a:x","content":{"m\\foo":"v"}}`, nil, true},
		{"other escape is literal", `{"kind":"event_property_is","key":"content.m\\xfoo","value":"v"}`, `{"type":"x","sender":"@a:x","content":{"m\\xfoo":"v"}}`, nil, true},
		{"unescaped dot is a path", `{"kind":"event_property_is","key":"content.m.federate","value":true}`, `{"type":"x","sender":"@a:x","content":{"m.federate":true}}`, nil, false},
		{"nested path", `{"kind":"event_property_is","key":"content.m\\.relates_to.rel_type","value":"m.replace"}`, `{"type":"m.room.message","sender":"@a:x","content":{"m.relates_to":{"rel_type":"m.replace"}}}`, nil, true},
		// event_property_contains.
		{"alt_aliases contains", `{"kind":"event_property_contains","key":"content.alt_aliases","value":"#myroom:example.com"}`, `{"type":"m.room.canonical_alias","state_key":"","sender":"@a:x","content":{"alias":"#somewhere:localhost","alt_aliases":["#somewhere:example.org","#myroom:example.com"]}}`, nil, true},
		{"alt_aliases partial", `{"kind":"event_property_contains","key":"content.alt_aliases","value":":example.com"}`, `{"type":"m.room.canonical_alias","sender":"@a:x","content":{"alt_aliases":["#myroom:example.com"]}}`, nil, false},
		{"contains not an array", `{"kind":"event_property_contains","key":"content.s","value":"a"}`, `{"type":"x","sender":"@a:x","content":{"s":"a"}}`, nil, false},
		{"contains integer", `{"kind":"event_property_contains","key":"content.l","value":2}`, `{"type":"x","sender":"@a:x","content":{"l":[1,2,{"x":2}]}}`, nil, true},
		// room_member_count.
		{"count bare", `{"kind":"room_member_count","is":"5"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, true},
		{"count ==", `{"kind":"room_member_count","is":"==4"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, false},
		{"count <", `{"kind":"room_member_count","is":"<6"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, true},
		{"count < equal", `{"kind":"room_member_count","is":"<5"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, false},
		{"count >", `{"kind":"room_member_count","is":">4"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, true},
		{"count <=", `{"kind":"room_member_count","is":"<=5"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, true},
		{"count >=", `{"kind":"room_member_count","is":">=6"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, false},
		{"count garbage", `{"kind":"room_member_count","is":"~5"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, false},
		// sender_notification_permission.
		{"permission default 50 denied", `{"kind":"sender_notification_permission","key":"room"}`, `{"type":"x","sender":"@a:x","content":{}}`, &PushConditionContext{UserID: bob, SenderPowerLevel: 49}, false},
		{"permission default 50 granted", `{"kind":"sender_notification_permission","key":"room"}`, `{"type":"x","sender":"@a:x","content":{}}`, &PushConditionContext{UserID: bob, SenderPowerLevel: 50}, true},
		{"permission room level", `{"kind":"sender_notification_permission","key":"room"}`, `{"type":"x","sender":"@a:x","content":{}}`, &PushConditionContext{UserID: bob, SenderPowerLevel: 0, NotificationLevels: map[string]int64{"room": 0}}, true},
		// contains_display_name.
		{"display name", `{"kind":"contains_display_name"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"hi Bob Smith!"}}`, &PushConditionContext{UserID: bob, DisplayName: "bob smith"}, true},
		{"display name inside word", `{"kind":"contains_display_name"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"bobsmith"}}`, &PushConditionContext{UserID: bob, DisplayName: "bob"}, false},
		{"display name is literal", `{"kind":"contains_display_name"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"hello b"}}`, &PushConditionContext{UserID: bob, DisplayName: "b*"}, false},
		{"no display name", `{"kind":"contains_display_name"}`, `{"type":"m.room.message","sender":"@a:x","content":{"body":"anything"}}`, &PushConditionContext{UserID: bob}, false},
		// Unknown and malformed conditions never match.
		{"unknown kind", `{"kind":"org.example.new"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, false},
		{"event_match without pattern", `{"kind":"event_match","key":"type"}`, `{"type":"x","sender":"@a:x","content":{}}`, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := mustRules(t, bob, condRule(tc.cond))
			c := ctx
			if tc.ctx != nil {
				c = *tc.ctx
			}
			d := rs.Evaluate(mustPushEvent(t, tc.event), c)
			if got := d.RuleID == "t"; got != tc.want {
				t.Fatalf("rule matched = %v (decision %+v), want %v", got, d, tc.want)
			}
		})
	}
}

// TestPushDefaultRules runs each server-default rule on an event it is
// for, with no rules of the user's own.
func TestPushDefaultRules(t *testing.T) {
	const bob = "@bob:example.org"
	rs := mustRules(t, bob, "")
	big := PushConditionContext{UserID: bob, DisplayName: "Bobby", MemberCount: 3}
	two := big
	two.MemberCount = 2
	mod := big
	mod.SenderPowerLevel = 50
	cases := []struct {
		name, event string
		ctx         PushConditionContext
		rule        string
		notify      bool
		highlight   bool
		sound       string
	}{
		{"message", `{"type":"m.room.message","room_id":"!r:x","sender":"@a:x","content":{"msgtype":"m.text","body":"hello"}}`, big, ".m.rule.message", true, false, ""},
		{"message one to one", `{"type":"m.room.message","sender":"@a:x","content":{"msgtype":"m.text","body":"hello"}}`, two, ".m.rule.room_one_to_one", true, false, "default"},
		{"encrypted", `{"type":"m.room.encrypted","sender":"@a:x","content":{"algorithm":"m.megolm.v1.aes-sha2"}}`, big, ".m.rule.encrypted", true, false, ""},
		{"encrypted one to one", `{"type":"m.room.encrypted","sender":"@a:x","content":{}}`, two, ".m.rule.encrypted_room_one_to_one", true, false, "default"},
		{"notice", `{"type":"m.room.message","sender":"@a:x","content":{"msgtype":"m.notice","body":"bot"}}`, big, ".m.rule.suppress_notices", false, false, ""},
		{"invite for me", `{"type":"m.room.member","state_key":"@bob:example.org","sender":"@a:x","content":{"membership":"invite"}}`, big, ".m.rule.invite_for_me", true, false, "default"},
		{"invite for another", `{"type":"m.room.member","state_key":"@carol:x","sender":"@a:x","content":{"membership":"invite"}}`, big, ".m.rule.member_event", false, false, ""},
		{"user mention", `{"type":"m.room.message","sender":"@a:x","content":{"body":"hey","m.mentions":{"user_ids":["@bob:example.org"]}}}`, big, ".m.rule.is_user_mention", true, true, "default"},
		{"mention of another", `{"type":"m.room.message","sender":"@a:x","content":{"body":"hey","m.mentions":{"user_ids":["@carol:x"]}}}`, big, ".m.rule.message", true, false, ""},
		{"display name", `{"type":"m.room.message","sender":"@a:x","content":{"body":"ping bobby."}}`, big, ".m.rule.contains_display_name", true, true, "default"},
		{"room mention allowed", `{"type":"m.room.message","sender":"@a:x","content":{"body":"all","m.mentions":{"room":true}}}`, mod, ".m.rule.is_room_mention", true, true, ""},
		{"room mention not allowed", `{"type":"m.room.message","sender":"@a:x","content":{"body":"all","m.mentions":{"room":true}}}`, big, ".m.rule.message", true, false, ""},
		{"@room allowed", `{"type":"m.room.message","sender":"@a:x","content":{"body":"@room look"}}`, mod, ".m.rule.roomnotif", true, true, ""},
		{"@room not allowed", `{"type":"m.room.message","sender":"@a:x","content":{"body":"@room look"}}`, big, ".m.rule.message", true, false, ""},
		{"tombstone", `{"type":"m.room.tombstone","state_key":"","sender":"@a:x","content":{"body":"moved","replacement_room":"!n:x"}}`, big, ".m.rule.tombstone", true, true, ""},
		{"tombstone not state", `{"type":"m.room.tombstone","sender":"@a:x","content":{}}`, big, "", false, false, ""},
		{"reaction", `{"type":"m.reaction","sender":"@a:x","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"+1"}}}`, big, ".m.rule.reaction", false, false, ""},
		{"server acl", `{"type":"m.room.server_acl","state_key":"","sender":"@a:x","content":{"allow":["*"]}}`, big, ".m.rule.room.server_acl", false, false, ""},
		{"edit", `{"type":"m.room.message","sender":"@a:x","content":{"body":"* fixed","m.relates_to":{"rel_type":"m.replace","event_id":"$e"}}}`, big, ".m.rule.suppress_edits", false, false, ""},
		{"edit mentioning me", `{"type":"m.room.message","sender":"@a:x","content":{"body":"* fixed","m.mentions":{"user_ids":["@bob:example.org"]},"m.relates_to":{"rel_type":"m.replace","event_id":"$e"}}}`, big, ".m.rule.is_user_mention", true, true, "default"},
		{"member event", `{"type":"m.room.member","state_key":"@a:x","sender":"@a:x","content":{"membership":"join"}}`, big, ".m.rule.member_event", false, false, ""},
		{"user name", `{"type":"m.room.message","sender":"@a:x","content":{"body":"BOB: hi"}}`, big, ".m.rule.contains_user_name", true, true, "default"},
		{"call", `{"type":"m.call.invite","sender":"@a:x","content":{"call_id":"c"}}`, big, ".m.rule.call", true, false, "ring"},
		{"poll start", `{"type":"org.matrix.msc3381.poll.start","sender":"@a:x","content":{}}`, big, ".org.matrix.msc3930.rule.poll_start", true, false, ""},
		{"poll start one to one", `{"type":"org.matrix.msc3381.poll.start","sender":"@a:x","content":{}}`, two, ".org.matrix.msc3930.rule.poll_start_one_to_one", true, false, "default"},
		{"poll end", `{"type":"org.matrix.msc3381.poll.end","sender":"@a:x","content":{}}`, big, ".org.matrix.msc3930.rule.poll_end", true, false, ""},
		{"poll end one to one", `{"type":"org.matrix.msc3381.poll.end","sender":"@a:x","content":{}}`, two, ".org.matrix.msc3930.rule.poll_end_one_to_one", true, false, "default"},
		{"poll response", `{"type":"org.matrix.msc3381.poll.response","sender":"@a:x","content":{}}`, big, ".org.matrix.msc3930.rule.poll_response", false, false, ""},
		{"unknown type", `{"type":"org.example.thing","sender":"@a:x","content":{}}`, big, "", false, false, ""},
		{"own message", `{"type":"m.room.message","sender":"@bob:example.org","content":{"body":"bob"}}`, big, "", false, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := rs.Evaluate(mustPushEvent(t, tc.event), tc.ctx)
			if d.RuleID != tc.rule || d.Notify != tc.notify || d.Highlight != tc.highlight || d.Sound != tc.sound {
				t.Fatalf("got %+v, want rule %q notify %v highlight %v sound %q", d, tc.rule, tc.notify, tc.highlight, tc.sound)
			}
		})
	}
}

// TestPushDefaultsShared: users without rules of their own share one
// compiled default ruleset; the rules about the recipient read them from
// the context.
func TestPushDefaultsShared(t *testing.T) {
	bob, carol := mustRules(t, "@bob:x", ""), mustRules(t, "@carol:x", "")
	if bob != carol {
		t.Fatal("two users without rules got two rulesets")
	}
	mention := mustPushEvent(t, `{"type":"m.room.message","sender":"@a:x","content":{"body":"hi","m.mentions":{"user_ids":["@bob:x"]}}}`)
	invite := mustPushEvent(t, `{"type":"m.room.member","state_key":"@BOB:x","sender":"@a:x","content":{"membership":"invite"}}`)
	name := mustPushEvent(t, `{"type":"m.room.message","sender":"@a:x","content":{"body":"carol?"}}`)
	for _, tc := range []struct {
		ev         *PushEvent
		user, rule string
	}{
		{mention, "@bob:x", ".m.rule.is_user_mention"}, {mention, "@carol:x", ".m.rule.message"},
		{invite, "@bob:x", ".m.rule.invite_for_me"}, {invite, "@carol:x", ".m.rule.member_event"},
		{name, "@carol:x", ".m.rule.contains_user_name"}, {name, "@bob:x", ".m.rule.message"},
	} {
		if d := bob.Evaluate(tc.ev, PushConditionContext{UserID: tc.user, MemberCount: 3}); d.RuleID != tc.rule {
			t.Errorf("%s: rule %q, want %q", tc.user, d.RuleID, tc.rule)
		}
	}
}

// TestPushUserRules follows the spec's examples of rules a user adds
// ("Push Rules: Events, Examples") and the kind order.
func TestPushUserRules(t *testing.T) {
	const bob = "@bob:example.org"
	const room = "!dj234r78wl45Gh4D:matrix.org"
	stored := `{"global":{
	  "override":[{"rule_id":"U2VlIHlvdSBpbiBUaGUgRHVrZQ","enabled":true,"default":false,
	     "conditions":[{"kind":"event_match","key":"content.body","pattern":"beer"},{"kind":"room_member_count","is":"<=10"}],
	     "actions":["notify",{"set_tweak":"sound","value":"beeroclock.wav"}]},
	     {"rule_id":"off","enabled":false,"default":false,"conditions":[],"actions":["notify",{"set_tweak":"sound","value":"never"}]}],
	  "content":[{"rule_id":"U3BvbmdlIGNha2UgaXMgYmVzdA","enabled":true,"default":false,"pattern":"cake*lie","actions":["notify"]},
	     {"rule_id":"SSByZWFsbHkgbGlrZSBjYWtl","enabled":true,"default":false,"pattern":"cake","actions":["notify",{"set_tweak":"sound","value":"cakealarm.wav"}]},
	     {"rule_id":"quiet","enabled":true,"default":false,"pattern":"shh","actions":["dont_notify"]},
	     {"rule_id":"loud","enabled":true,"default":false,"pattern":"loud","actions":["notify",{"set_tweak":"highlight","value":false},"coalesce"]}],
	  "room":[{"rule_id":"` + room + `","enabled":true,"default":false,"actions":[]}],
	  "sender":[{"rule_id":"@spambot:matrix.org","enabled":true,"default":false,"actions":["dont_notify"]},
	     {"rule_id":"@friend:x","enabled":true,"default":false,"actions":["notify",{"set_tweak":"highlight"}]}]
	}}`
	rs := mustRules(t, bob, stored)
	c := PushConditionContext{UserID: bob, MemberCount: 20}
	small := c
	small.MemberCount = 10
	cases := []struct {
		name, event string
		ctx         PushConditionContext
		rule        string
		notify      bool
		highlight   bool
		sound       string
	}{
		{"muted room", `{"type":"m.room.message","room_id":"` + room + `","sender":"@a:x","content":{"body":"hello"}}`, c, room, false, false, ""},
		{"muted room, keyword still wins", `{"type":"m.room.message","room_id":"` + room + `","sender":"@a:x","content":{"body":"cake!"}}`, c, "SSByZWFsbHkgbGlrZSBjYWtl", true, false, "cakealarm.wav"},
		{"muted room, mention still wins", `{"type":"m.room.message","room_id":"` + room + `","sender":"@a:x","content":{"body":"x","m.mentions":{"user_ids":["@bob:example.org"]}}}`, c, ".m.rule.is_user_mention", true, true, "default"},
		{"spambot", `{"type":"m.room.message","room_id":"!o:x","sender":"@spambot:matrix.org","content":{"body":"buy"}}`, c, "@spambot:matrix.org", false, false, ""},
		{"friend highlights", `{"type":"m.room.message","room_id":"!o:x","sender":"@friend:x","content":{"body":"hi"}}`, c, "@friend:x", true, true, ""},
		{"cake", `{"type":"m.room.message","room_id":"!o:x","sender":"@a:x","content":{"body":"I like Cake"}}`, c, "SSByZWFsbHkgbGlrZSBjYWtl", true, false, "cakealarm.wav"},
		{"cake is a lie comes first", `{"type":"m.room.message","room_id":"!o:x","sender":"@a:x","content":{"body":"the cake is a lie"}}`, c, "U3BvbmdlIGNha2UgaXMgYmVzdA", true, false, ""},
		{"dont_notify is empty", `{"type":"m.room.message","room_id":"!o:x","sender":"@a:x","content":{"body":"shh"}}`, c, "quiet", false, false, ""},
		{"highlight false", `{"type":"m.room.message","room_id":"!o:x","sender":"@a:x","content":{"body":"loud"}}`, c, "loud", true, false, ""},
		{"beer in a big room", `{"type":"m.room.message","room_id":"!o:x","sender":"@a:x","content":{"body":"beer?"}}`, c, ".m.rule.message", true, false, ""},
		{"beer in a small room", `{"type":"m.room.message","room_id":"!o:x","sender":"@a:x","content":{"body":"beer?"}}`, small, "U2VlIHlvdSBpbiBUaGUgRHVrZQ", true, false, "beeroclock.wav"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := rs.Evaluate(mustPushEvent(t, tc.event), tc.ctx)
			if d.RuleID != tc.rule || d.Notify != tc.notify || d.Highlight != tc.highlight || d.Sound != tc.sound {
				t.Fatalf("got %+v, want rule %q notify %v highlight %v sound %q", d, tc.rule, tc.notify, tc.highlight, tc.sound)
			}
		})
	}
	t.Run("actions without no-ops", func(t *testing.T) {
		d := rs.Evaluate(mustPushEvent(t, `{"type":"m.room.message","sender":"@a:x","content":{"body":"loud"}}`), c)
		b, _ := json.Marshal(d.Actions)
		if string(b) != `["notify",{"set_tweak":"highlight","value":false}]` {
			t.Fatalf("actions %s", b)
		}
		if d.Tweaks["highlight"] != false {
			t.Fatalf("tweaks %v", d.Tweaks)
		}
	})
}

// TestPushRulesMerge: a stored ruleset is an old copy of the defaults
// plus the user's changes; the current defaults are used with the
// user's enabled and actions.
func TestPushRulesMerge(t *testing.T) {
	const bob = "@bob:example.org"
	// An old copy: .m.rule.server_acl under its old ID, no poll rules,
	// .m.rule.message disabled, .m.rule.encrypted given a sound, master
	// stored after a user rule, and a default's conditions tampered with
	// (the current definition wins).
	stored := `{"global":{
	  "override":[{"rule_id":"mine","enabled":true,"default":false,"conditions":[{"kind":"event_match","key":"type","pattern":"org.example.x"}],"actions":["notify"]},
	     {"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]},
	     {"rule_id":".m.rule.server_acl","default":true,"enabled":true,"conditions":[],"actions":[]},
	     {"rule_id":".m.rule.reaction","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.message"}],"actions":[]}],
	  "underride":[{"rule_id":".m.rule.message","default":true,"enabled":false,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.message"}],"actions":["notify"]},
	     {"rule_id":".m.rule.encrypted","default":true,"enabled":true,"conditions":[],"actions":["notify",{"set_tweak":"sound","value":"enc"}]}]
	}}`
	rs := mustRules(t, bob, stored)
	c := PushConditionContext{UserID: bob, MemberCount: 3}
	for _, tc := range []struct {
		name, event, rule string
		notify            bool
		sound             string
	}{
		{"disabled default", `{"type":"m.room.message","sender":"@a:x","content":{"body":"hi"}}`, "", false, ""},
		{"user actions on a default", `{"type":"m.room.encrypted","sender":"@a:x","content":{}}`, ".m.rule.encrypted", true, "enc"},
		{"new default present", `{"type":"org.matrix.msc3381.poll.start","sender":"@a:x","content":{}}`, ".org.matrix.msc3930.rule.poll_start", true, ""},
		{"user override", `{"type":"org.example.x","sender":"@a:x","content":{}}`, "mine", true, ""},
		{"stale default dropped, current used", `{"type":"m.room.server_acl","state_key":"","sender":"@a:x","content":{}}`, ".m.rule.room.server_acl", false, ""},
		{"invite_for_me inserted", `{"type":"m.room.member","state_key":"@bob:example.org","sender":"@a:x","content":{"membership":"invite"}}`, ".m.rule.invite_for_me", true, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := rs.Evaluate(mustPushEvent(t, tc.event), c)
			if d.RuleID != tc.rule || d.Notify != tc.notify || d.Sound != tc.sound {
				t.Fatalf("got %+v, want rule %q notify %v sound %q", d, tc.rule, tc.notify, tc.sound)
			}
		})
	}
	if rs.rules[0].id != ".m.rule.master" {
		t.Fatalf("first rule %q, want .m.rule.master", rs.rules[0].id)
	}
	t.Run("master enabled silences everything", func(t *testing.T) {
		rs := mustRules(t, bob, `{"global":{"override":[{"rule_id":"x","enabled":true,"default":false,"conditions":[],"actions":["notify"]},{"rule_id":".m.rule.master","enabled":true,"default":true,"conditions":[],"actions":[]}]}}`)
		d := rs.Evaluate(mustPushEvent(t, `{"type":"m.room.message","sender":"@a:x","content":{"body":"bob"}}`), c)
		if d.Notify || d.RuleID != ".m.rule.master" {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("bare ruleset", func(t *testing.T) {
		rs := mustRules(t, bob, `{"override":[{"rule_id":"x","enabled":true,"conditions":[],"actions":[]}]}`)
		d := rs.Evaluate(mustPushEvent(t, `{"type":"m.room.message","sender":"@a:x","content":{"body":"hi"}}`), c)
		if d.RuleID != "x" {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("not an object", func(t *testing.T) {
		if _, err := ParsePushRules(bob, json.RawMessage(`[1]`)); err == nil {
			t.Fatal("a list parsed as a ruleset")
		}
	})
}

// TestMergePushRulesJSON: what clients read is the merge the evaluator
// uses.
func TestMergePushRulesJSON(t *testing.T) {
	stored := `{"global":{"override":[{"rule_id":"mine","enabled":true,"default":false,"conditions":[],"actions":[]},
	  {"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]},
	  {"rule_id":".m.rule.server_acl","default":true,"enabled":true,"conditions":[],"actions":[]}],
	  "underride":[{"rule_id":".m.rule.message","default":true,"enabled":false,"conditions":[],"actions":["notify"]}]}}`
	raw, err := MergePushRules("@bob:x", json.RawMessage(stored))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string][]map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	ids := func(kind string) []string {
		var out []string
		for _, r := range got[kind] {
			out = append(out, r["rule_id"].(string))
		}
		return out
	}
	over := ids("override")
	if over[0] != ".m.rule.master" || over[1] != "mine" || slices.Contains(over, ".m.rule.server_acl") || !slices.Contains(over, ".m.rule.room.server_acl") {
		t.Fatalf("override %v", over)
	}
	under := ids("underride")
	if !slices.Contains(under, ".org.matrix.msc3930.rule.poll_start") || got["underride"][slices.Index(under, ".m.rule.message")]["enabled"] != false {
		t.Fatalf("underride %v", got["underride"])
	}
	if c := got["content"]; len(c) != 1 || c[0]["pattern"] != "bob" {
		t.Fatalf("content %v", c)
	}
	if got["postcontent"] == nil || got["room"] == nil {
		t.Fatalf("kinds missing: %s", raw)
	}
	def, _ := MergePushRules("@bob:x", nil)
	if string(def) != string(DefaultPushRules("@bob:x")) {
		t.Fatal("no stored rules: not the defaults")
	}
}

// TestPushGlobBounded: a pattern of many stars against a long body is a
// linear scan per star, not backtracking (this would not finish with a
// naive recursive matcher).
func TestPushGlobBounded(t *testing.T) {
	body := make([]byte, 20000)
	for i := range body {
		body[i] = 'a'
	}
	g := compileGlob("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b")
	if g.matchWhole(string(body)) || g.matchWords([]rune(string(body))) {
		t.Fatal("matched without a b")
	}
}

// TestPushGlobLongPatternLongBody: a content rule's longest pattern
// (MaxPushPatternBytes, all wildcards and one letter) against a 64 KiB
// body, many times over, as one event evaluated for many recipients with
// such a rule. Each match is a pass of len(body)/64 words per pattern
// character: a few milliseconds each. The set simulation over one bool
// per position took a quarter of a second per match (over four minutes
// for this test: it fails under go test -timeout 60s).
func TestPushGlobLongPatternLongBody(t *testing.T) {
	body := []rune(strings.Repeat("a ", 32*1024))
	g := compileGlob(strings.Repeat("*a", MaxPushPatternBytes/2-1) + "*b")
	for range 1000 {
		if g.matchWords(body) {
			t.Fatal("matched without a b")
		}
	}
}

// TestPushPatternOverLimitNeverMatches: a condition's glob longer than
// MaxPushPatternBytes (stored before PUT /pushrules refused them) is not
// evaluated; one at the limit is.
func TestPushPatternOverLimitNeverMatches(t *testing.T) {
	ev, err := NewPushEvent(json.RawMessage(`{"type":"m.room.message","sender":"@a:x","content":{"body":"hello"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]bool{MaxPushPatternBytes: true, MaxPushPatternBytes + 1: false} {
		rs := mustRules(t, "@bob:x", condRule(`{"kind":"event_match","key":"content.body","pattern":"`+strings.Repeat("*", n)+`"}`))
		if got := rs.Evaluate(ev, PushConditionContext{UserID: "@bob:x"}).RuleID == "t"; got != want {
			t.Errorf("pattern of %d stars: rule t matched %v, want %v", n, got, want)
		}
	}
}

// TestPushGlobBudget: past MaxPushGlobRunes of wildcard patterns (in
// rule order) a rule's glob never matches, and the set says it is over;
// literal patterns are not counted.
func TestPushGlobBudget(t *testing.T) {
	long := strings.Repeat("*", MaxPushPatternBytes)
	var rules []string
	for i := range MaxPushGlobRunes / len(long) {
		rules = append(rules, fmt.Sprintf(`{"rule_id":"g%d","enabled":true,"default":false,"pattern":%q,"actions":[]}`, i, long))
	}
	rules = append(rules, `{"rule_id":"lit","enabled":true,"default":false,"pattern":"`+strings.Repeat("b", MaxPushPatternBytes)+`","actions":[]}`)
	within := `{"global":{"content":[` + strings.Join(rules, ",") + `,{"rule_id":"last","enabled":true,"default":false,"pattern":"hel*","actions":["notify"]}]}}`
	ev, err := NewPushEvent(json.RawMessage(`{"type":"m.room.message","sender":"@a:x","content":{"body":"hello"}}`))
	if err != nil {
		t.Fatal(err)
	}
	// The budget's first rules (which do not notify) match first; with
	// them disabled, "last" is over the budget and does not match.
	rs := mustRules(t, "@bob:x", within)
	if !rs.GlobBudgetExceeded() {
		t.Fatal("budget plus one rule: not over")
	}
	disabled := strings.ReplaceAll(within, `"enabled":true,"default":false,"pattern":"*`, `"enabled":false,"default":false,"pattern":"*`)
	if d := mustRules(t, "@bob:x", disabled).Evaluate(ev, PushConditionContext{UserID: "@bob:x"}); d.RuleID == "last" {
		t.Fatal("a rule past the budget matched")
	}
	exact := strings.Replace(within, `,{"rule_id":"last"`, `],"override":[{"rule_id":"last","conditions":[]`, 1)
	if mustRules(t, "@bob:x", exact).GlobBudgetExceeded() {
		t.Fatal("exactly the budget (and a literal pattern): over")
	}
}

// TestPushEventRetainsLittle: a decoded event holds about its own size,
// not several times it (sync workers keep the events of their window's
// recent records decoded; the body used to be kept in runes as well, five
// times the event's size in all).
func TestPushEventRetainsLittle(t *testing.T) {
	body := strings.Repeat("hello world ", 5000)
	raw, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": "@a:x", "content": map[string]any{"body": body, "msgtype": "m.text"}})
	const n = 50
	keep := make([]*PushEvent, 0, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		pe, err := NewPushEvent(raw)
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, pe)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	if per > 2*int64(len(raw)) {
		t.Fatalf("a decoded event of %d bytes retains %d bytes", len(raw), per)
	}
	runtime.KeepAlive(keep)
}

// TestPushGlobDistinctLiteralsAllocateLittle: a pattern of 340 distinct
// characters against a 64 KiB body holding each of them 192 times does
// not get a bitset per character (340 bitsets of the body's length,
// 2.8 MB a match; a content rule's 1,024 ASCII characters against a body
// of them made it 8 MB).
func TestPushGlobDistinctLiteralsAllocateLittle(t *testing.T) {
	var pat, body []rune
	for i := range (MaxPushPatternBytes - 2) / 3 {
		r := rune(0x4e00 + i) // 3 bytes each in UTF-8
		pat = append(pat, r)
		for range 192 {
			body = append(body, r)
		}
	}
	g := compileGlob("*" + string(pat) + "*")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	g.matchWords(body)
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 3<<19 {
		t.Fatalf("one match of %d distinct characters against %d allocated %d bytes", len(pat), len(body), n)
	}
}

// TestPushGlobAgainstReference compares the matcher with the plain set
// simulation (one bool per position) on every short pattern and value
// over a small alphabet, and on long values that cross the bitsets'
// 64-position words, word boundaries included.
func TestPushGlobAgainstReference(t *testing.T) {
	// ends returns the positions of s at which p, started at position
	// i, can end: one step per pattern character over all positions.
	ends := func(p, s []rune, i int) []bool {
		cur := make([]bool, len(s)+1)
		cur[i] = true
		for _, c := range p {
			next := make([]bool, len(s)+1)
			on := false
			for j := range cur {
				switch {
				case c == '*':
					on = on || cur[j]
					next[j] = on
				case j < len(s) && cur[j] && (c == '?' || c == s[j]):
					next[j+1] = true
				}
			}
			cur = next
		}
		return cur
	}
	ref := func(p, s []rune) bool { return ends(p, s, 0)[len(s)] }
	refWords := func(p, s []rune) bool {
		if len(p) == 0 {
			return false
		}
		for i := 0; i <= len(s); i++ {
			if !boundaryAt(s, i) {
				continue
			}
			for j, ok := range ends(p, s, i) {
				if ok && boundaryAt(s, j) {
					return true
				}
			}
		}
		return false
	}
	all := func(alphabet string, n int) []string {
		out := []string{""}
		cur := []string{""}
		for range n {
			var nx []string
			for _, c := range cur {
				for _, r := range alphabet {
					nx = append(nx, c+string(r))
				}
			}
			out, cur = append(out, nx...), nx
		}
		return out
	}
	values := all("ab é", 4)
	// Long values cross the 64-position words of the sets.
	values = append(values, strings.Repeat("ab ", 50), strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65)+"b",
		strings.Repeat("é", 127)+" b", strings.Repeat("b", 200)+"a")
	// A value where literals occur often enough for their positions to
	// be bitsets (denseLiteral), and one where only one does.
	for _, v := range []string{strings.Repeat("ab ", denseLiteral+5), strings.Repeat("a", denseLiteral+70) + " ab b"} {
		for _, p := range []string{"a*b", "*a?", "b a*", "?b*a", "a*", "ab*ab", "*b ab*", "*a", "a?", "b?*"} {
			g, pr, vr := compileGlob(p), []rune(p), []rune(v)
			if got, want := g.matchWhole(v), ref(pr, vr); got != want {
				t.Fatalf("matchWhole(%q, long %q...) = %v, want %v", p, v[:8], got, want)
			}
			if got, want := g.matchWords(vr), refWords(pr, vr); got != want {
				t.Fatalf("matchWords(%q, long %q...) = %v, want %v", p, v[:8], got, want)
			}
		}
	}
	for _, p := range all("ab*?é", 4) {
		if !strings.ContainsAny(p, "*?") {
			continue // literals are matched without the sets
		}
		g := compileGlob(p)
		for _, v := range values {
			pr, vr := []rune(p), []rune(v)
			if got, want := g.matchWhole(v), ref(pr, vr); got != want {
				t.Fatalf("matchWhole(%q, %q) = %v, want %v", p, v, got, want)
			}
			if got, want := g.matchWords(vr), refWords(pr, vr); got != want {
				t.Fatalf("matchWords(%q, %q) = %v, want %v", p, v, got, want)
			}
		}
	}
}

func BenchmarkPushEvaluateDefaults(b *testing.B) {
	rs, err := ParsePushRules("@bob:example.org", nil)
	if err != nil {
		b.Fatal(err)
	}
	ev, err := NewPushEvent(json.RawMessage(`{"type":"m.room.message","room_id":"!r:x","sender":"@a:x","content":{"msgtype":"m.text","body":"hello there, how is everyone doing today?"}}`))
	if err != nil {
		b.Fatal(err)
	}
	c := PushConditionContext{UserID: "@bob:example.org", DisplayName: "Bob", MemberCount: 10000}
	b.ReportAllocs()
	for b.Loop() {
		rs.Evaluate(ev, c)
	}
}
