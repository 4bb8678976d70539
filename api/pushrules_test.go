package api_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"strand/eventlog/matrix"
)

func TestPushRules(t *testing.T) {
	_, c := newServer(t)
	c.Register("pusher", "pw")
	all := c.MustDo("GET", v3("/pushrules/"), nil)
	global := all.Body["global"].(map[string]any)
	for _, kind := range []string{"override", "content", "postcontent", "room", "sender", "underride"} {
		if _, ok := global[kind].([]any); !ok {
			t.Fatalf("kind %s missing: %s", kind, all.Raw)
		}
	}
	if !strings.Contains(string(all.Raw), `"pattern":"pusher"`) || !strings.Contains(string(all.Raw), `"@pusher:localhost"`) {
		t.Fatalf("defaults not personalised: %s", all.Raw)
	}
	c.MustDo("PUT", v3("/pushrules/global/override/.m.rule.master/enabled"), map[string]any{"enabled": true})
	if r := c.MustDo("GET", v3("/pushrules/global/override/.m.rule.master/enabled"), nil); r.Body["enabled"] != true {
		t.Fatalf("enabled: %s", r.Raw)
	}
	c.MustDo("PUT", v3("/pushrules/global/room/!r:localhost"), map[string]any{"actions": []any{}})
	c.MustDo("PUT", v3("/pushrules/global/content/mine"), map[string]any{"pattern": "cake", "actions": []any{"notify"}})
	c.MustDo("PUT", v3("/pushrules/global/content/first?before=mine"), map[string]any{"pattern": "pie", "actions": []any{"notify"}})
	content := c.MustDo("GET", v3("/pushrules/global/"), nil).Body["content"].([]any)
	if content[0].(map[string]any)["rule_id"] != "first" || content[1].(map[string]any)["rule_id"] != "mine" {
		t.Fatalf("rule order: %v", content)
	}
	if r := c.MustDo("GET", v3("/pushrules/global/content/mine/actions"), nil); len(r.Body["actions"].([]any)) != 1 {
		t.Fatalf("actions: %s", r.Raw)
	}
	c.MustDo("DELETE", v3("/pushrules/global/content/mine"), nil)
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
	}{
		{"GET", "/pushrules/global/content/mine", nil, 404},
		{"DELETE", "/pushrules/global/override/.m.rule.master", nil, 403},
		{"PUT", "/pushrules/global/bogus/x", map[string]any{"actions": []any{}}, 400},
		{"PUT", "/pushrules/global/content/x", map[string]any{"actions": []any{}}, 400},
		{"PUT", "/pushrules/global/override/.m.custom", map[string]any{"actions": []any{}}, 400},
		{"PUT", "/pushrules/global/override/.m.rule.master/enabled", map[string]any{"enabled": "yes"}, 400},
		{"PUT", "/pushrules/global/override/x?before=nope", map[string]any{"actions": []any{}}, 404},
	} {
		if r := c.Do(tc.method, v3(tc.path), tc.body); r.Status != tc.status || r.Errcode() == "" {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, r.Status, r.Raw)
		}
	}
}

// TestPushRulesPostcontent: the MSC4306 postcontent kind exists (between
// content and room), is empty, answers 404 for a rule it lacks (what
// clients probing for the thread-subscription rules expect, rather than
// 400 for an unknown kind), and takes no client rules.
func TestPushRulesPostcontent(t *testing.T) {
	_, c := newServer(t)
	c.Register("poster", "pw")
	all := c.MustDo("GET", v3("/pushrules/"), nil)
	if pc, ok := all.Body["global"].(map[string]any)["postcontent"].([]any); !ok || len(pc) != 0 {
		t.Fatalf("postcontent missing or not empty: %s", all.Raw)
	}
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		errcode      string
	}{
		{"GET", "/pushrules/global/postcontent/.io.element.msc4306.rule.subscribed_thread", nil, 404, "M_NOT_FOUND"},
		{"GET", "/pushrules/global/postcontent/.io.element.msc4306.rule.unsubscribed_thread/enabled", nil, 404, "M_NOT_FOUND"},
		{"PUT", "/pushrules/global/postcontent/.io.element.msc4306.rule.subscribed_thread/enabled", map[string]any{"enabled": false}, 404, "M_NOT_FOUND"},
		{"PUT", "/pushrules/global/postcontent/mine", map[string]any{"actions": []any{"notify"}}, 400, "M_INVALID_PARAM"},
		{"DELETE", "/pushrules/global/postcontent/mine", nil, 404, "M_NOT_FOUND"},
	} {
		if r := c.Do(tc.method, v3(tc.path), tc.body); r.Status != tc.status || r.Errcode() != tc.errcode {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, r.Status, r.Raw, tc.status, tc.errcode)
		}
	}
	// A saved ruleset keeps the kind.
	c.MustDo("PUT", v3("/pushrules/global/room/!r:localhost"), map[string]any{"actions": []any{}})
	if _, ok := c.MustDo("GET", v3("/pushrules/global/"), nil).Body["postcontent"].([]any); !ok {
		t.Fatal("postcontent missing after a change")
	}
}

// A user's wildcard patterns total at most matrix.MaxPushGlobRunes: a
// rule that would pass it is refused (400), literal patterns are not
// counted, and replacing a rule counts its new pattern instead of the old.
func TestPushRulesGlobBudget(t *testing.T) {
	_, c := newServer(t)
	c.Register("globber", "pw")
	long := strings.Repeat("a*", matrix.MaxPushPatternBytes/2)
	n := matrix.MaxPushGlobRunes / len(long)
	for i := range n {
		c.MustDo("PUT", v3(fmt.Sprintf("/pushrules/global/content/g%d", i)), map[string]any{"pattern": long, "actions": []any{"notify"}})
	}
	r := c.Do("PUT", v3("/pushrules/global/override/one-more"), map[string]any{"actions": []any{"notify"},
		"conditions": []any{map[string]any{"kind": "event_match", "key": "content.topic", "pattern": "x*"}}})
	if r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Fatalf("wildcard pattern past the budget: %d %s", r.Status, r.Raw)
	}
	c.MustDo("PUT", v3("/pushrules/global/content/literal"), map[string]any{"pattern": strings.Repeat("b", matrix.MaxPushPatternBytes), "actions": []any{"notify"}})
	c.MustDo("PUT", v3("/pushrules/global/content/g0"), map[string]any{"pattern": "short*", "actions": []any{"notify"}})
	if r := c.Do("GET", v3("/pushrules/global/override/one-more"), nil); r.Status != 404 {
		t.Fatalf("refused rule stored: %d %s", r.Status, r.Raw)
	}
}

// Actions and conditions of the wrong shape are refused, not stored on
// the user's ruleset.
func TestPushRulesMalformedActions(t *testing.T) {
	_, c := newServer(t)
	c.Register("shaper", "pw")
	for _, tc := range []struct{ path, body string }{
		{"/pushrules/global/override/x", `{"actions":["notify"],"conditions":[1,"a",null]}`},
		{"/pushrules/global/override/x", `{"actions":["notify"],"conditions":[{"key":"type"}]}`},
		{"/pushrules/global/room/!r:localhost", `{"actions":[1]}`},
		{"/pushrules/global/sender/@a:localhost", `{"actions":[{"set_tweak":5}]}`},
		{"/pushrules/global/override/.m.rule.master/actions", `{"actions":[5,null]}`},
	} {
		if r := c.Do("PUT", v3(tc.path), tc.body); r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
			t.Errorf("PUT %s %s: %d %s", tc.path, tc.body, r.Status, r.Raw)
		}
	}
	if r := c.MustDo("GET", v3("/pushrules/global/override/.m.rule.master/actions"), nil); len(r.Body["actions"].([]any)) != 0 {
		t.Fatalf("master's actions changed: %s", r.Raw)
	}
	c.MustDo("PUT", v3("/pushrules/global/override/ok"), map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "default"}},
		"conditions": []any{map[string]any{"kind": "event_match", "key": "type", "pattern": "m.room.message"}}})
}

// before and after name a user's rule; relative to a server rule is 400.
func TestPushRulesRelativeToServerRule(t *testing.T) {
	_, c := newServer(t)
	c.Register("placer", "pw")
	for _, q := range []string{"?before=.m.rule.master", "?after=.m.rule.suppress_notices"} {
		if r := c.Do("PUT", v3("/pushrules/global/override/mine"+q), map[string]any{"actions": []any{}}); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Fatalf("PUT%s: %d %s", q, r.Status, r.Raw)
		}
	}
	if r := c.Do("GET", v3("/pushrules/global/override/mine"), nil); r.Status != 404 {
		t.Fatalf("refused rule stored: %d %s", r.Status, r.Raw)
	}
}

// A room rule's ID is the room it matches and a sender rule's the user:
// any other ID would be stored as a rule that never fires, and so would
// an action no client or pusher knows. Both are 400 M_INVALID_PARAM; the
// legacy no-op names clients still send are kept.
func TestPushRulesInvalidIDsAndActions(t *testing.T) {
	_, c := newServer(t)
	c.Register("ruleids", "pw")
	for _, tc := range []struct{ path, body string }{
		{"/pushrules/global/room/notaroom", `{"actions":["notify"]}`},
		{"/pushrules/global/room/@a:localhost", `{"actions":["notify"]}`},
		{"/pushrules/global/sender/nobody", `{"actions":["notify"]}`},
		{"/pushrules/global/sender/!r:localhost", `{"actions":["notify"]}`},
		{"/pushrules/global/override/a%5Cb", `{"actions":["notify"]}`},
		{"/pushrules/global/override/x", `{"actions":["notify","explode"]}`},
		{"/pushrules/global/content/x", `{"pattern":"cake","actions":["shout"]}`},
		{"/pushrules/global/override/.m.rule.master/actions", `{"actions":["frobnicate"]}`},
	} {
		if r := c.Do("PUT", v3(tc.path), tc.body); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("PUT %s %s: %d %s", tc.path, tc.body, r.Status, r.Raw)
		}
	}
	rules := string(c.MustDo("GET", v3("/pushrules/"), nil).Raw)
	for _, bad := range []string{"notaroom", "nobody", "explode", "shout", "frobnicate"} {
		if strings.Contains(rules, bad) {
			t.Errorf("refused rule stored: %q in %s", bad, rules)
		}
	}
	c.MustDo("PUT", v3("/pushrules/global/room/"+url.PathEscape("!r:localhost")), map[string]any{"actions": []any{"dont_notify"}})
	c.MustDo("PUT", v3("/pushrules/global/sender/"+url.PathEscape("@a:localhost")), map[string]any{"actions": []any{"notify", "coalesce"}})

	// Numbers with no canonical JSON form: what is stored goes to the log,
	// where it would be changed (2^64) or non-canonical (1.5) for good.
	for _, tc := range []struct{ path, body string }{
		{"/pushrules/global/override/frac", `{"actions":[{"set_tweak":"x","value":1.5}]}`},
		{"/pushrules/global/override/big", `{"actions":["notify"],"conditions":[{"kind":"room_member_count","is":"2","n":18446744073709551616}]}`},
		{"/pushrules/global/override/.m.rule.master/actions", `{"actions":[{"set_tweak":"y","value":9007199254740992}]}`},
	} {
		if r := c.Do("PUT", v3(tc.path), tc.body); r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
			t.Errorf("PUT %s %s: %d %s", tc.path, tc.body, r.Status, r.Raw)
		}
	}
	rules = string(c.MustDo("GET", v3("/pushrules/"), nil).Raw)
	for _, bad := range []string{`"frac"`, `"big"`, `"y"`} {
		if strings.Contains(rules, bad) {
			t.Errorf("refused rule stored: %s in %s", bad, rules)
		}
	}
}
