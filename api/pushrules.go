package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Push rules. A user's ruleset lives in their m.push_rules account data
// (so it is on the log and reaches clients through sync like any account
// data); until they change anything it is the spec's default ruleset.

// pushKinds are the rule kinds in the order they are evaluated.
// postcontent comes from MSC4306 (thread subscriptions), between content
// and room: clients look its predefined rules up by kind (a 404 for a rule
// this server does not have, not a 400 for an unknown kind), and the MSC
// lets no client add rules to it.
var pushKinds = []string{"override", "content", "postcontent", "room", "sender", "underride"}

type pushRule map[string]any

type ruleset map[string][]pushRule

func (s *Server) loadRuleset(r *http.Request) (ruleset, error) {
	uid := session(r).UserID
	raw, err := s.store.AccountData(r.Context(), uid, "", "m.push_rules")
	if errors.Is(err, store.ErrNotFound) {
		raw = nil
	} else if err != nil {
		return nil, err
	}
	// The stored copy merged with the current server defaults, as the
	// evaluator merges it (matrix.ParsePushRules): a default added or
	// renamed since the user first saved their rules is listed too.
	merged, err := matrix.MergePushRules(uid, raw)
	if err != nil {
		return nil, err
	}
	var rs ruleset
	if err := json.Unmarshal(merged, &rs); err != nil {
		return nil, err
	}
	for _, k := range pushKinds {
		if rs[k] == nil {
			rs[k] = []pushRule{}
		}
	}
	return rs, nil
}

func (s *Server) saveRuleset(r *http.Request, rs ruleset) error {
	uid := session(r).UserID
	b, err := json.Marshal(map[string]any{"global": rs})
	if err != nil {
		return err
	}
	return s.appendAccount(r.Context(), uid, &eventlog.AccountDataSet{UserID: uid, Type: "m.push_rules", Content: b}, nil)
}

// GET /_matrix/client/v3/pushrules/
// GET /_matrix/client/v3/pushrules/global/
func (s *Server) getPushRules(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.loadRuleset(r)
	if err != nil {
		return err
	}
	if strings.HasSuffix(r.URL.Path, "/global/") {
		matrix.WriteJSON(w, http.StatusOK, rs)
		return nil
	}
	matrix.WriteJSON(w, http.StatusOK, map[string]any{"global": rs})
	return nil
}

// ruleRef locates {scope}/{kind}/{ruleId} of the path.
func ruleRef(r *http.Request) (kind, id string, err error) {
	if pathVar(r, "scope") != "global" {
		return "", "", matrix.InvalidParam("unknown push rule scope %q", pathVar(r, "scope"))
	}
	kind, id = pathVar(r, "kind"), pathVar(r, "ruleId")
	if !slices.Contains(pushKinds, kind) {
		return "", "", matrix.InvalidParam("unknown push rule kind %q", kind)
	}
	if err := matrix.CheckLength("the rule ID", id, matrix.MaxPushRuleIDBytes); err != nil {
		return "", "", err
	}
	return kind, id, nil
}

func findRule(rs ruleset, kind, id string) int {
	for i, rule := range rs[kind] {
		if rule["rule_id"] == id {
			return i
		}
	}
	return -1
}

// GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
// GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/{attr}
func (s *Server) getPushRule(w http.ResponseWriter, r *http.Request) error {
	if pathVar(r, "scope") == "global" && !slices.Contains(pushKinds, pathVar(r, "kind")) {
		// A kind this server does not have (a newer one such as MSC4306's
		// postcontent) holds no rules here: reading one is "no such
		// rule", which clients probe for, not a malformed request.
		return matrix.NotFound("no push rule %s/%s", pathVar(r, "kind"), pathVar(r, "ruleId"))
	}
	kind, id, err := ruleRef(r)
	if err != nil {
		return err
	}
	rs, err := s.loadRuleset(r)
	if err != nil {
		return err
	}
	i := findRule(rs, kind, id)
	if i < 0 {
		return matrix.NotFound("no push rule %s/%s", kind, id)
	}
	rule := rs[kind][i]
	switch attr := pathVar(r, "attr"); attr {
	case "":
		matrix.WriteJSON(w, http.StatusOK, rule)
	case "enabled":
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"enabled": rule["enabled"]})
	case "actions":
		matrix.WriteJSON(w, http.StatusOK, map[string]any{"actions": rule["actions"]})
	default:
		return matrix.Unrecognized("unknown push rule attribute %q", attr)
	}
	return nil
}

// PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
// PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/{attr}
func (s *Server) putPushRule(w http.ResponseWriter, r *http.Request) error {
	kind, id, err := ruleRef(r)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := matrix.DecodeJSON(r, &body, false); err != nil {
		return err
	}
	// What is stored goes to the log as account data, re-encoded from Go
	// values: a number with no canonical form (1.5, 2^53) would be changed
	// or stored non-canonical, for good. The spec's values are integers.
	for _, name := range []string{"actions", "conditions"} {
		if raw, ok := body[name]; ok {
			if _, err := matrix.CanonicalJSON(raw); err != nil {
				return matrix.BadJSON("%s: %v", name, err)
			}
		}
	}
	rs, err := s.loadRuleset(r)
	if err != nil {
		return err
	}
	i := findRule(rs, kind, id)
	switch attr := pathVar(r, "attr"); attr {
	case "enabled", "actions":
		if i < 0 {
			return matrix.NotFound("no push rule %s/%s", kind, id)
		}
		raw, ok := body[attr]
		if !ok {
			return matrix.MissingParam("%s is required", attr)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return matrix.BadJSON("invalid %s", attr)
		}
		if _, isBool := v.(bool); attr == "enabled" && !isBool {
			return matrix.BadJSON("enabled must be a boolean")
		}
		if attr == "actions" {
			l, isList := v.([]any)
			if !isList {
				return matrix.BadJSON("actions must be a list of action names and set_tweak objects")
			}
			if err := checkPushActions(l); err != nil {
				return err
			}
		}
		rs[kind][i][attr] = v
	case "":
		if strings.HasPrefix(id, ".") {
			return matrix.InvalidParam("rule IDs starting with '.' are reserved for server rules")
		}
		if kind == "postcontent" {
			// MSC4306: postcontent holds only the server's predefined
			// rules for now; creating one is 400 M_INVALID_PARAM.
			return matrix.InvalidParam("clients may not create postcontent rules")
		}
		if err := checkNewRuleID(kind, id); err != nil {
			return err
		}
		var actions []any
		if raw, ok := body["actions"]; !ok || json.Unmarshal(raw, &actions) != nil {
			return matrix.BadJSON("actions must be a list of action names and set_tweak objects")
		}
		if err := checkPushActions(actions); err != nil {
			return err
		}
		rule := pushRule{"rule_id": id, "default": false, "enabled": true, "actions": actions}
		switch kind {
		case "override", "underride":
			var conds []any
			if raw, ok := body["conditions"]; ok && json.Unmarshal(raw, &conds) != nil {
				return matrix.BadJSON("conditions must be a list")
			}
			if conds == nil {
				conds = []any{}
			}
			// A condition's glob is bounded as a content rule's is: its
			// length multiplies the cost of every event it is matched
			// against, for the pusher and for sync's counts.
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if k, _ := m["kind"].(string); k == "" {
					// Stored as given, a condition that is no object with
					// a kind would be on the user's ruleset for every client.
					return matrix.BadJSON("each condition must be an object with a kind")
				}
				if p, ok := m["pattern"].(string); ok {
					if err := matrix.CheckMaxLength("a condition's pattern", p, matrix.MaxPushPatternBytes); err != nil {
						return err
					}
				}
			}
			rule["conditions"] = conds
		case "content":
			var pattern string
			if raw, ok := body["pattern"]; !ok || json.Unmarshal(raw, &pattern) != nil {
				return matrix.MissingParam("content rules need a pattern")
			}
			if err := matrix.CheckMaxLength("pattern", pattern, matrix.MaxPushPatternBytes); err != nil {
				return err
			}
			rule["pattern"] = pattern
		}
		if i >= 0 {
			rs[kind] = slices.Delete(rs[kind], i, i+1)
		}
		pos := len(rs[kind])
		// New user rules go before the server-default rules of their kind.
		for j, existing := range rs[kind] {
			if d, _ := existing["default"].(bool); d {
				pos = j
				break
			}
		}
		q := r.URL.Query()
		if b := q.Get("before"); b != "" {
			if pos = findRule(rs, kind, b); pos < 0 {
				return matrix.NotFound("no push rule %s to put this one before", b)
			}
		} else if a := q.Get("after"); a != "" {
			if pos = findRule(rs, kind, a); pos < 0 {
				return matrix.NotFound("no push rule %s to put this one after", a)
			}
			pos++
		}
		if ref := q.Get("before") + q.Get("after"); ref != "" && strings.HasPrefix(ref, ".") {
			// The spec: "It is not possible to add a rule relative to a
			// predefined server rule."
			return matrix.InvalidParam("a rule can only be placed relative to a user rule, not %s", ref)
		}
		rs[kind] = slices.Insert(rs[kind], pos, rule)
		if err := checkGlobBudget(session(r).UserID, rs); err != nil {
			return err
		}
	default:
		return matrix.Unrecognized("unknown push rule attribute %q", attr)
	}
	if err := s.saveRuleset(r, rs); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
func (s *Server) deletePushRule(w http.ResponseWriter, r *http.Request) error {
	kind, id, err := ruleRef(r)
	if err != nil {
		return err
	}
	if strings.HasPrefix(id, ".") {
		return matrix.Forbidden("server-default rules cannot be deleted")
	}
	rs, err := s.loadRuleset(r)
	if err != nil {
		return err
	}
	i := findRule(rs, kind, id)
	if i < 0 {
		return matrix.NotFound("no push rule %s/%s", kind, id)
	}
	rs[kind] = slices.Delete(rs[kind], i, i+1)
	if err := s.saveRuleset(r, rs); err != nil {
		return err
	}
	matrix.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// checkGlobBudget refuses a ruleset whose wildcard patterns total more
// than matrix.MaxPushGlobRunes: each costs its length for every event the
// user could be notified of (the evaluator would not match those past
// the bound).
func checkGlobBudget(userID string, rs ruleset) error {
	b, err := json.Marshal(map[string]any{"global": rs})
	if err != nil {
		return err
	}
	parsed, err := matrix.ParsePushRules(userID, b)
	if err != nil {
		return err
	}
	if parsed.GlobBudgetExceeded() {
		return matrix.InvalidParam("the wildcard patterns of a user's push rules total at most %d characters", matrix.MaxPushGlobRunes)
	}
	return nil
}

// pushActionNames are the action names a rule may hold: notify, and the
// two the spec keeps as no-ops (dont_notify, coalesce) because clients
// still send them. Any other name would be stored and served to every
// client of the user as part of their rule, with no meaning to any.
var pushActionNames = map[string]bool{"notify": true, "dont_notify": true, "coalesce": true}

// checkPushActions refuses actions that are not names or tweaks (an object
// with a string set_tweak) with M_BAD_JSON, and unknown names with
// M_INVALID_PARAM.
func checkPushActions(actions []any) error {
	for _, a := range actions {
		switch a := a.(type) {
		case string:
			if !pushActionNames[a] {
				return matrix.InvalidParam("unknown push rule action %q", a)
			}
		case map[string]any:
			if _, ok := a["set_tweak"].(string); !ok {
				return matrix.BadJSON("actions must be a list of action names and set_tweak objects")
			}
		default:
			return matrix.BadJSON("actions must be a list of action names and set_tweak objects")
		}
	}
	return nil
}

// checkNewRuleID refuses the rule IDs the spec forbids for a new rule:
// slashes and backslashes for any kind, and for room and sender rules an
// ID that is not the room's or the user's ID (the ID is what such a rule
// matches, so any other string would be a rule that never fires).
func checkNewRuleID(kind, id string) error {
	if strings.ContainsAny(id, `/\`) {
		return matrix.InvalidParam("rule IDs may not contain slashes or backslashes")
	}
	switch kind {
	case "room":
		if _, err := matrix.ParseRoomID(id); err != nil {
			return matrix.InvalidParam("the ID of a room rule must be a room ID: %v", err)
		}
	case "sender":
		if _, err := matrix.ParseUserID(id); err != nil {
			return matrix.InvalidParam("the ID of a sender rule must be a user ID: %v", err)
		}
	}
	return nil
}
