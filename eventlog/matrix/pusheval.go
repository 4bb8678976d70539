package matrix

import (
	"bytes"
	"encoding/json"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Push rule evaluation (client-server API, "Push Rules"). A user's rules
// are parsed once into a PushRuleset (their stored m.push_rules merged
// with the server defaults); each event is decoded once into a PushEvent;
// Evaluate then decides, per recipient, whether the event notifies and
// with which tweaks. Everything here is pure: the caller supplies what
// the conditions read from the room (PushConditionContext).

// pushRuleKinds are the kinds in the order the spec checks them.
// postcontent (MSC4306) sits between content and room; Strand ships no
// rules of that kind and clients may not add any.
var pushRuleKinds = [...]string{"override", "content", "postcontent", "room", "sender", "underride"}

// PushRuleset is one user's rules in evaluation order. It is immutable
// once parsed and safe for concurrent use.
type PushRuleset struct {
	rules []compiledRule
	// overGlobBudget is set when the rules' wildcard patterns total more
	// than MaxPushGlobRunes (the ones past it never match).
	overGlobBudget bool
}

// MaxPushGlobRunes bounds the total length of a user's wildcard patterns
// (content rules, event_match conditions with '*' or '?'). Matching one
// costs its length times len(value)/64 words for every event the user
// could be notified of, by the pusher and by sync's counts; a literal
// pattern is a comparison and is not counted. Eight patterns of the
// longest kind (MaxPushPatternBytes) fit.
const MaxPushGlobRunes = 8 * MaxPushPatternBytes

// GlobBudgetExceeded reports whether the rules' wildcard patterns total
// more than MaxPushGlobRunes: PUT /pushrules refuses such a set.
func (rs *PushRuleset) GlobBudgetExceeded() bool { return rs.overGlobBudget }

// limitGlobs makes the wildcard patterns past MaxPushGlobRunes, in rule
// order, never match.
func (rs *PushRuleset) limitGlobs() {
	left := MaxPushGlobRunes
	for i := range rs.rules {
		r := &rs.rules[i]
		for j := range r.conds {
			cd := &r.conds[j]
			if cd.kind != condEventMatch || !cd.glob.wild {
				continue
			}
			if left -= len(cd.glob.runes); left < 0 {
				// Compiled conditions may be shared with the
				// defaults: replace the slice, not the element.
				r.conds = slices.Clone(r.conds)
				r.conds[j] = compiledCond{kind: condNever}
				rs.overGlobBudget = true
			}
		}
	}
}

// PushDecision is what a user's rules say about one event. Notify is the
// spec's "notify" action of the first matching rule; Highlight is that
// rule's highlight tweak and is only ever true together with Notify (an
// event that does not notify is not counted as a highlight either, as
// Synapse counts). Actions is the matched rule's action list without
// the historical no-ops (dont_notify, coalesce), as GET /notifications
// and a push gateway's tweaks want it. RuleID is empty when no rule
// matched (then nothing notifies).
type PushDecision struct {
	Notify    bool
	Highlight bool
	Sound     string
	Tweaks    map[string]any
	Actions   []any
	RuleID    string
}

// PushConditionContext is what the room-dependent conditions need for
// one recipient: the recipient's user ID and display name in the room
// (contains_display_name; an empty name never matches), the room's
// joined member count (room_member_count), the sender's power level and
// the room's notifications power levels (sender_notification_permission;
// a key missing from NotificationLevels needs 50, the spec's default).
type PushConditionContext struct {
	UserID             string
	DisplayName        string
	MemberCount        int
	SenderPowerLevel   int64
	NotificationLevels map[string]int64
}

// PushEvent is an event decoded for evaluation: every property reachable
// through objects, under its dot-separated path (appendix "Dot-separated
// property paths": dots and backslashes in a name escaped with a
// backslash), each string also lower-cased once for event_match. Build
// it once per event with NewPushEvent and evaluate it for every
// recipient; it is read-only afterwards.
type PushEvent struct {
	RoomID string
	Sender string
	Type   string
	props  map[string]pushValue
	// bodyLower is content.body lower-cased, for the word-boundary
	// matching of content rules and event_match on content.body. Not
	// kept in runes: a sync worker holds the events of its window's
	// recent records decoded, and a 64 KiB body in runes is 256 KiB; the
	// wildcard patterns that need runes convert it when they run.
	bodyLower string
	hasBody   bool
}

type pushValue struct {
	v     any // string, json.Number, bool, nil, or []any of those (arrays are leaves)
	lower string
}

// maxPushFlattenDepth bounds how deep NewPushEvent walks: events are at
// most 64 KiB, but a rule can only name a path, and nothing useful lies
// deeper than this.
const maxPushFlattenDepth = 32

// NewPushEvent decodes a client-format or PDU event (type, sender,
// room_id, state_key, content and any other top-level property;
// unsigned is left out, it is not part of the event others see).
func NewPushEvent(event json.RawMessage) (*PushEvent, error) {
	dec := json.NewDecoder(bytes.NewReader(event))
	dec.UseNumber()
	var top map[string]any
	if err := dec.Decode(&top); err != nil {
		return nil, err
	}
	delete(top, "unsigned")
	pe := &PushEvent{props: make(map[string]pushValue, 16)}
	pe.RoomID, _ = top["room_id"].(string)
	pe.Sender, _ = top["sender"].(string)
	pe.Type, _ = top["type"].(string)
	pe.flatten("", top, 0)
	if v, ok := pe.props["content.body"]; ok {
		if _, ok := v.v.(string); ok {
			pe.bodyLower = v.lower
			pe.hasBody = true
		}
	}
	return pe, nil
}

func (pe *PushEvent) flatten(prefix string, obj map[string]any, depth int) {
	if depth > maxPushFlattenDepth {
		return
	}
	for k, v := range obj {
		path := escapePathSegment(k)
		if prefix != "" {
			path = prefix + "." + path
		}
		switch x := v.(type) {
		case map[string]any:
			pe.flatten(path, x, depth+1)
		case string:
			pe.props[path] = pushValue{v: x, lower: strings.ToLower(x)}
		default:
			pe.props[path] = pushValue{v: x}
		}
	}
}

func escapePathSegment(s string) string {
	if !strings.ContainsAny(s, `.\`) {
		return s
	}
	s = strings.ReplaceAll(s, `\`, `\\`)
	return strings.ReplaceAll(s, `.`, `\.`)
}

// canonicalPushKey rewrites a rule's key into the escaping NewPushEvent
// uses: `\.` is a dot inside a name, `\\` a backslash, and any other
// backslash is itself (so `\x` and `\\x` name the same property).
func canonicalPushKey(key string) string {
	if !strings.Contains(key, `\`) {
		return key
	}
	var segs []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			segs = append(segs, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	segs = append(segs, cur.String())
	for i, s := range segs {
		segs[i] = escapePathSegment(s)
	}
	return strings.Join(segs, ".")
}

// ParsePushRules builds a user's ruleset from their stored m.push_rules
// account data (nil when they have none): either {"global": {kind:
// [rules]}} as PUT /pushrules stores it, or the bare {kind: [rules]}.
//
// Stored rulesets hold a copy of the server defaults from when they were
// first saved, so the defaults are merged rather than taken from the
// copy: every server-default rule (rule_id starting with ".") is the
// current definition from DefaultPushRules, keeping the stored copy's
// enabled and actions (what a user may change of a default); a default
// the server no longer has is dropped; one missing from the copy is
// inserted after the default that precedes it (or after the user's
// rules of its kind). .m.rule.master always comes first. User rules keep
// their stored order. A malformed rule never matches rather than failing
// the whole set; only content that is not a JSON object is an error.
//
// The result does not depend on userID (the rules about the recipient
// read PushConditionContext.UserID), so a user without stored rules gets
// the one shared default ruleset; userID names whose rules these are.
func ParsePushRules(userID string, stored json.RawMessage) (*PushRuleset, error) {
	defaults, err := compiledDefaults()
	if err != nil {
		return nil, err
	}
	kinds, err := storedKinds(stored)
	if err != nil {
		return nil, err
	}
	if kinds == nil {
		// The defaults name the recipient only through the condition
		// context, so every user without rules of their own shares them.
		return defaults.all, nil
	}
	rs := &PushRuleset{}
	for _, k := range pushRuleKinds {
		rs.rules = append(rs.rules, mergeKind(k, storedRules(kinds, k), defaults.byKind[k])...)
	}
	rs.limitGlobs()
	return rs, nil
}

// defaultRules are the server defaults compiled once from their template
// (pushrules.json before the user is filled in): the conditions on the
// recipient's ID and localpart read them from the PushConditionContext.
type defaultRules struct {
	byKind map[string][]compiledRule
	all    *PushRuleset
}

var compiledDefaults = sync.OnceValues(func() (*defaultRules, error) {
	var tmpl map[string][]map[string]any
	if err := json.Unmarshal([]byte(defaultPushRulesJSON), &tmpl); err != nil {
		return nil, err
	}
	d := &defaultRules{byKind: map[string][]compiledRule{}, all: &PushRuleset{}}
	for _, k := range pushRuleKinds {
		for _, r := range tmpl[k] {
			cr := compileRule(k, r, true)
			d.byKind[k] = append(d.byKind[k], cr)
			d.all.rules = append(d.all.rules, cr)
		}
	}
	return d, nil
})

// mergeKind returns one kind's compiled rules in order, as
// ParsePushRules describes.
func mergeKind(kind string, stored []map[string]any, defaults []compiledRule) []compiledRule {
	return mergeRules(kind, stored, defaults, func(c *compiledRule) string { return c.id },
		func(d compiledRule, r map[string]any) compiledRule {
			// A copy shares the compiled conditions.
			if e, ok := r["enabled"].(bool); ok {
				d.enabled = e
			}
			if a, ok := r["actions"].([]any); ok {
				d.setActions(a)
			}
			return d
		},
		func(r map[string]any) compiledRule { return compileRule(kind, r, false) })
}

// mergeRules orders one kind's rules: the stored ones in their order (a
// server default among them replaced by fromStored of its current
// definition, a default the server no longer has dropped), then every
// current default missing from them after the default before it in the
// server's order (or before the first default, or at the end), and
// .m.rule.master first.
func mergeRules[T any](kind string, stored []map[string]any, defaults []T, idOf func(*T) string,
	fromStored func(def T, r map[string]any) T, userRule func(r map[string]any) T) []T {
	byID := make(map[string]int, len(defaults))
	for i := range defaults {
		byID[idOf(&defaults[i])] = i
	}
	out := make([]T, 0, len(stored)+len(defaults))
	seen := map[string]bool{}
	for _, r := range stored {
		id, _ := r["rule_id"].(string)
		if seen[id] {
			continue
		}
		if !strings.HasPrefix(id, ".") {
			seen[id] = true
			out = append(out, userRule(r))
			continue
		}
		i, ok := byID[id]
		if !ok {
			continue
		}
		seen[id] = true
		out = append(out, fromStored(defaults[i], r))
	}
	prev := ""
	for _, d := range defaults {
		id := idOf(&d)
		if seen[id] {
			prev = id
			continue
		}
		pos := len(out)
		for i := range out {
			oid := idOf(&out[i])
			if prev != "" && oid == prev {
				pos = i + 1
				break
			}
			if prev == "" && strings.HasPrefix(oid, ".") {
				pos = i
				break
			}
		}
		out = slices.Insert(out, pos, d)
		seen[id] = true
		prev = id
	}
	if kind == "override" {
		for i := range out {
			if idOf(&out[i]) == ".m.rule.master" && i > 0 {
				m := out[i]
				out = slices.Insert(slices.Delete(out, i, i+1), 0, m)
				break
			}
		}
	}
	return out
}

// MergePushRules returns the user's ruleset as clients see it (GET
// /pushrules, the bare {kind: [rules]} form): their stored m.push_rules
// content (nil: none) merged with the current server defaults exactly as
// ParsePushRules merges them for evaluation, so what a client reads and
// changes is what is evaluated.
func MergePushRules(userID string, stored json.RawMessage) (json.RawMessage, error) {
	var defaults map[string][]map[string]any
	if err := json.Unmarshal(DefaultPushRules(userID), &defaults); err != nil {
		return nil, err
	}
	kinds, err := storedKinds(stored)
	if err != nil {
		return nil, err
	}
	if kinds == nil {
		return DefaultPushRules(userID), nil
	}
	out := map[string][]map[string]any{}
	for _, k := range pushRuleKinds {
		out[k] = mergeRules(k, storedRules(kinds, k), defaults[k], func(m *map[string]any) string { id, _ := (*m)["rule_id"].(string); return id },
			func(d map[string]any, r map[string]any) map[string]any {
				m := make(map[string]any, len(d))
				for key, v := range d {
					m[key] = v
				}
				if e, ok := r["enabled"].(bool); ok {
					m["enabled"] = e
				}
				if a, ok := r["actions"].([]any); ok {
					m["actions"] = a
				}
				return m
			},
			func(r map[string]any) map[string]any { return r })
		if out[k] == nil {
			out[k] = []map[string]any{}
		}
	}
	return json.Marshal(out)
}

// storedKinds reads stored m.push_rules content, {"global": {...}} or
// bare; nil for none.
func storedKinds(stored json.RawMessage) (map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(stored)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return nil, nil
	}
	var wrapper struct {
		Global map[string]json.RawMessage `json:"global"`
	}
	if err := json.Unmarshal(stored, &wrapper); err != nil {
		return nil, err
	}
	if wrapper.Global != nil {
		return wrapper.Global, nil
	}
	kinds := map[string]json.RawMessage{}
	if err := json.Unmarshal(stored, &kinds); err != nil {
		return nil, err
	}
	return kinds, nil
}

// storedRules returns the rules of one kind that are JSON objects.
func storedRules(kinds map[string]json.RawMessage, kind string) []map[string]any {
	var out []map[string]any
	var list []json.RawMessage
	if raw, ok := kinds[kind]; ok && json.Unmarshal(raw, &list) == nil {
		for _, r := range list {
			var rule map[string]any
			if json.Unmarshal(r, &rule) == nil && rule != nil {
				out = append(out, rule)
			}
		}
	}
	return out
}

type condKind uint8

const (
	condNever condKind = iota // unrecognised or malformed: never matches
	condEventMatch
	condPropertyIs
	condPropertyContains
	condDisplayName
	condMemberCount
	condSenderPermission
	condRoomID
	condSender
	// Conditions of the default rules on the recipient themselves.
	condMatchesUserID  // event_match pattern "@USER_ID@": the value is the recipient's ID
	condContainsUserID // event_property_contains value "@USER_ID@"
	condBodyLocalpart  // content pattern "@LOCALPART@": the recipient's localpart as a word
)

type compiledCond struct {
	kind  condKind
	key   string // canonical property path, or the power-level key, or the ID
	glob  *pushGlob
	word  bool // event_match on content.body: word-boundary substring match
	value any  // event_property_is / _contains: string, int64, bool or nil
	op    string
	n     int64
}

type compiledRule struct {
	id      string
	enabled bool
	conds   []compiledCond
	actions []any
	notify  bool
	high    bool
	sound   string
	tweaks  map[string]any
}

// compileRule compiles one rule; template is set for the server defaults'
// template, whose placeholders stand for the recipient.
func compileRule(kind string, r map[string]any, template bool) compiledRule {
	cr := compiledRule{enabled: true}
	cr.id, _ = r["rule_id"].(string)
	if e, ok := r["enabled"].(bool); ok {
		cr.enabled = e
	}
	switch kind {
	case "override", "underride":
		if list, ok := r["conditions"].([]any); ok {
			for _, c := range list {
				m, _ := c.(map[string]any)
				cr.conds = append(cr.conds, compileCond(m, template))
			}
		} else if _, present := r["conditions"]; present {
			cr.conds = []compiledCond{{kind: condNever}}
		}
	case "content":
		p, ok := r["pattern"].(string)
		switch {
		case !ok:
			cr.conds = []compiledCond{{kind: condNever}}
		case template && p == "@LOCALPART@":
			cr.conds = []compiledCond{{kind: condBodyLocalpart}}
		default:
			cr.conds = []compiledCond{{kind: condEventMatch, key: "content.body", glob: compileGlob(p), word: true}}
		}
	case "room":
		cr.conds = []compiledCond{{kind: condRoomID, key: cr.id}}
	case "sender":
		cr.conds = []compiledCond{{kind: condSender, key: cr.id}}
	default:
		// postcontent rules test thread subscriptions, which Strand
		// does not keep.
		cr.conds = []compiledCond{{kind: condNever}}
	}
	acts, _ := r["actions"].([]any)
	cr.setActions(acts)
	return cr
}

// setActions compiles a rule's actions.
func (cr *compiledRule) setActions(acts []any) {
	cr.actions = []any{}
	cr.notify, cr.high, cr.sound, cr.tweaks = false, false, "", nil
	for _, a := range acts {
		switch x := a.(type) {
		case string:
			switch x {
			case "notify":
				cr.notify = true
			case "dont_notify", "coalesce":
				continue // historical no-ops, stripped as the spec asks
			}
		case map[string]any:
			name, _ := x["set_tweak"].(string)
			if name == "" {
				break
			}
			v, present := x["value"]
			if name == "highlight" && !present {
				v, present = true, true // "a highlight tweak with no value is true"
			}
			if !present {
				break
			}
			switch name {
			case "highlight":
				cr.high, _ = v.(bool)
			case "sound":
				cr.sound, _ = v.(string)
			}
			if cr.tweaks == nil {
				cr.tweaks = map[string]any{}
			}
			cr.tweaks[name] = v
		}
		cr.actions = append(cr.actions, a)
	}
}

func compileCond(m map[string]any, template bool) compiledCond {
	kind, _ := m["kind"].(string)
	switch kind {
	case "event_match":
		key, ok1 := m["key"].(string)
		pat, ok2 := m["pattern"].(string)
		if !ok1 || !ok2 || len(pat) > MaxPushPatternBytes {
			// An over-long glob (PUT /pushrules refuses them; one
			// stored before it did) is not matched: its length
			// multiplies the cost of every event it meets.
			return compiledCond{kind: condNever}
		}
		key = canonicalPushKey(key)
		if template && pat == "@USER_ID@" {
			return compiledCond{kind: condMatchesUserID, key: key}
		}
		return compiledCond{kind: condEventMatch, key: key, glob: compileGlob(pat), word: key == "content.body"}
	case "event_property_is", "event_property_contains":
		key, ok := m["key"].(string)
		v, present := m["value"]
		sv, okv := pushScalar(v)
		if !ok || !present || !okv {
			return compiledCond{kind: condNever}
		}
		k := condPropertyIs
		if kind == "event_property_contains" {
			k = condPropertyContains
			if template && sv == "@USER_ID@" {
				k = condContainsUserID
			}
		}
		return compiledCond{kind: k, key: canonicalPushKey(key), value: sv}
	case "contains_display_name":
		return compiledCond{kind: condDisplayName}
	case "room_member_count":
		is, ok := m["is"].(string)
		if !ok {
			return compiledCond{kind: condNever}
		}
		op := "=="
		for _, p := range []string{"==", "<=", ">=", "<", ">"} {
			if strings.HasPrefix(is, p) {
				op, is = p, is[len(p):]
				break
			}
		}
		n, err := strconv.ParseInt(is, 10, 64)
		if err != nil {
			return compiledCond{kind: condNever}
		}
		return compiledCond{kind: condMemberCount, op: op, n: n}
	case "sender_notification_permission":
		key, ok := m["key"].(string)
		if !ok {
			return compiledCond{kind: condNever}
		}
		return compiledCond{kind: condSenderPermission, key: key}
	}
	return compiledCond{kind: condNever}
}

// pushScalar normalises a value for exact comparison: strings, booleans,
// null, and integers within the canonical JSON range (as int64). Other
// values (floats, objects, arrays) report false.
func pushScalar(v any) (any, bool) {
	switch x := v.(type) {
	case nil, string, bool:
		return x, true
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil || n > maxCanonicalInt || n < -maxCanonicalInt {
			return nil, false
		}
		return n, true
	case float64:
		if x != float64(int64(x)) || x > maxCanonicalInt || x < -maxCanonicalInt {
			return nil, false
		}
		return int64(x), true
	}
	return nil, false
}

const maxCanonicalInt = 1<<53 - 1

// Evaluate runs the ruleset against one event for one recipient. An
// event the recipient sent themselves never notifies (the spec's "MUST
// NOT notify ... for events that the user has sent themselves").
func (rs *PushRuleset) Evaluate(ev *PushEvent, c PushConditionContext) PushDecision {
	if rs == nil || ev == nil || (c.UserID != "" && ev.Sender == c.UserID) {
		return PushDecision{}
	}
	for i := range rs.rules {
		r := &rs.rules[i]
		if !r.enabled || !r.matches(ev, &c) {
			continue
		}
		d := PushDecision{RuleID: r.id, Notify: r.notify, Actions: r.actions}
		if r.notify {
			d.Highlight, d.Sound, d.Tweaks = r.high, r.sound, r.tweaks
		}
		return d
	}
	return PushDecision{}
}

func (r *compiledRule) matches(ev *PushEvent, c *PushConditionContext) bool {
	for i := range r.conds {
		if !r.conds[i].holds(ev, c) {
			return false
		}
	}
	return true
}

func (cd *compiledCond) holds(ev *PushEvent, c *PushConditionContext) bool {
	switch cd.kind {
	case condEventMatch:
		if cd.word {
			if !cd.glob.wild {
				return ev.hasBody && containsWord(ev.bodyLower, cd.glob.lit)
			}
			return ev.hasBody && cd.glob.matchWords([]rune(ev.bodyLower))
		}
		v, ok := ev.props[cd.key]
		if !ok {
			return false
		}
		if _, isString := v.v.(string); !isString {
			return false
		}
		return cd.glob.matchWhole(v.lower)
	case condPropertyIs:
		v, ok := ev.props[cd.key]
		if !ok {
			return false
		}
		s, ok := pushScalar(v.v)
		return ok && s == cd.value
	case condPropertyContains:
		v, ok := ev.props[cd.key]
		if !ok {
			return false
		}
		arr, ok := v.v.([]any)
		if !ok {
			return false
		}
		for _, x := range arr {
			if s, ok := pushScalar(x); ok && s == cd.value {
				return true
			}
		}
		return false
	case condDisplayName:
		if c.DisplayName == "" || !ev.hasBody {
			return false
		}
		return containsWord(ev.bodyLower, strings.ToLower(c.DisplayName))
	case condMemberCount:
		n := int64(c.MemberCount)
		switch cd.op {
		case "<":
			return n < cd.n
		case ">":
			return n > cd.n
		case "<=":
			return n <= cd.n
		case ">=":
			return n >= cd.n
		}
		return n == cd.n
	case condSenderPermission:
		need, ok := c.NotificationLevels[cd.key]
		if !ok {
			need = 50
		}
		return c.SenderPowerLevel >= need
	case condMatchesUserID:
		v, ok := ev.props[cd.key]
		s, isString := v.v.(string)
		return ok && isString && c.UserID != "" && strings.EqualFold(s, c.UserID)
	case condContainsUserID:
		v, ok := ev.props[cd.key]
		arr, isArray := v.v.([]any)
		return ok && isArray && c.UserID != "" && slices.Contains(arr, any(c.UserID))
	case condBodyLocalpart:
		lp := strings.TrimPrefix(c.UserID, "@")
		if i := strings.IndexByte(lp, ':'); i >= 0 {
			lp = lp[:i]
		}
		return ev.hasBody && lp != "" && containsWord(ev.bodyLower, strings.ToLower(lp))
	case condRoomID:
		return ev.RoomID == cd.key
	case condSender:
		return ev.Sender == cd.key
	}
	return false
}

// pushGlob is a lower-cased glob pattern: '*' any run of characters, '?'
// exactly one, everything else itself. Matching is a set simulation over
// positions, never backtracking, so a hostile pattern costs no more than
// a plain one; the sets are bitsets, so each pattern character costs one
// pass over len(value)/64 words: a content rule's 1,024 characters
// against a 64 KiB body is a million word operations, not 67 million
// steps (a quarter of a second per event and recipient, per rule).
type pushGlob struct {
	lit   string // the pattern when it has no wildcards
	runes []rune
	wild  bool
	// lits maps each literal character of the pattern to its index in
	// the per-value masks.
	lits map[rune]int
}

func compileGlob(p string) *pushGlob {
	p = strings.ToLower(p)
	g := &pushGlob{lit: p, runes: []rune(p), wild: strings.ContainsAny(p, "*?")}
	if g.wild {
		g.lits = map[rune]int{}
		for _, r := range g.runes {
			if _, ok := g.lits[r]; !ok && r != '*' && r != '?' {
				g.lits[r] = len(g.lits)
			}
		}
	}
	return g
}

// matchWhole reports whether the whole (lower-cased) value matches.
func (g *pushGlob) matchWhole(s string) bool {
	if !g.wild {
		return s == g.lit
	}
	sr := []rune(s)
	starts := newPosSet(len(sr))
	starts.set(0)
	return g.run(sr, starts).has(len(sr))
}

// matchWords reports whether some substring of s (lower-cased runes)
// matches, starting and ending at a word boundary: the start or end of
// the value, or next to a character outside [A-Za-z0-9_] (on either side,
// so "@room" also matches in "x@room", as a regular expression's \b
// would).
func (g *pushGlob) matchWords(s []rune) bool {
	if len(g.runes) == 0 {
		return false
	}
	bounds := newPosSet(len(s))
	for i := 0; i <= len(s); i++ {
		if boundaryAt(s, i) {
			bounds.set(i)
		}
	}
	starts := newPosSet(len(s))
	copy(starts, bounds)
	return g.run(s, starts).intersects(bounds)
}

// denseLiteral is how often a pattern's literal must occur in a value to
// get a bitset of its positions; rarer ones keep a list. So a step costs
// at most len(value)/64 words plus denseLiteral positions, and the
// bitsets at most len(value)/denseLiteral of them whatever the pattern
// (a pattern of a thousand distinct characters does not cost a thousand
// bitsets).
const denseLiteral = 512

// run advances the set of positions (0 to len(s)) reachable in s through
// the pattern, from cur.
func (g *pushGlob) run(s []rune, cur posSet) posSet {
	words := len(cur)
	// Where each of the pattern's literals occurs in s.
	at := make([][]int32, len(g.lits))
	for j, r := range s {
		if k, ok := g.lits[r]; ok {
			at[k] = append(at[k], int32(j))
		}
	}
	dense := make([]posSet, len(g.lits))
	for k, js := range at {
		if len(js) >= denseLiteral {
			m := make(posSet, words)
			for _, j := range js {
				m.set(int(j))
			}
			dense[k] = m
		}
	}
	chars := newPosSet(len(s)) // positions 0 to len(s)-1: before some character
	for j := range s {
		chars.set(j)
	}
	next := make(posSet, words)
	for _, pr := range g.runes {
		switch pr {
		case '*':
			// Every position from the first reachable one on.
			clear(next)
			first := -1
			for w, x := range cur {
				if x != 0 {
					first = w<<6 + bits.TrailingZeros64(x)
					break
				}
			}
			if first >= 0 {
				for w := first >> 6; w < words; w++ {
					next[w] = ^uint64(0)
				}
				next[first>>6] &^= 1<<(first&63) - 1
				next.trim(len(s))
			}
		case '?':
			next.shiftFrom(cur, chars)
		default:
			k := g.lits[pr]
			if dense[k] != nil {
				next.shiftFrom(cur, dense[k])
				break
			}
			clear(next)
			for _, j := range at[k] {
				if cur.has(int(j)) {
					next.set(int(j) + 1)
				}
			}
		}
		cur, next = next, cur
	}
	return cur
}

// posSet is a set of positions in a value, 0 to its length, as a bitset.
type posSet []uint64

func newPosSet(n int) posSet { return make(posSet, (n+1+63)/64) }

func (p posSet) set(i int)      { p[i>>6] |= 1 << (i & 63) }
func (p posSet) has(i int) bool { return p[i>>6]&(1<<(i&63)) != 0 }

// trim clears the bits past position n.
func (p posSet) trim(n int) {
	if r := (n + 1) & 63; r != 0 {
		p[len(p)-1] &= 1<<r - 1
	}
}

func (p posSet) intersects(q posSet) bool {
	for i := range p {
		if p[i]&q[i] != 0 {
			return true
		}
	}
	return false
}

// shiftFrom sets p to the positions j+1 for every j in both cur and mask.
func (p posSet) shiftFrom(cur, mask posSet) {
	var carry uint64
	for i := range p {
		x := cur[i] & mask[i]
		p[i] = x<<1 | carry
		carry = x >> 63
	}
}

func boundaryAt(s []rune, i int) bool {
	if i <= 0 || i >= len(s) {
		return true
	}
	return !isWordRune(s[i-1]) || !isWordRune(s[i])
}

func isWordRune(r rune) bool {
	return r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
}

// containsWord reports whether word occurs in s at word boundaries (both
// lower-cased). Word characters are ASCII, so a byte of a multi-byte
// character is never one and boundaries can be told byte by byte.
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	for off := 0; off+len(word) <= len(s); {
		i := strings.Index(s[off:], word)
		if i < 0 {
			return false
		}
		i += off
		j := i + len(word)
		if (i == 0 || !isWordByte(s[i-1]) || !isWordByte(s[i])) && (j == len(s) || !isWordByte(s[j]) || !isWordByte(s[j-1])) {
			return true
		}
		off = i + 1
	}
	return false
}

func isWordByte(b byte) bool { return b < utf8RuneSelf && isWordRune(rune(b)) }

const utf8RuneSelf = 0x80
