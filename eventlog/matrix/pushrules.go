package matrix

import (
	_ "embed"
	"encoding/json"
	"strings"
)

//go:embed pushrules.json
var defaultPushRulesJSON string

// DefaultPushRules returns the spec's predefined push ruleset for a user
// (the bare ruleset: override, content, postcontent, room, sender,
// underride). postcontent (MSC4306) is empty: its predefined rules test
// thread subscriptions, which Strand does not keep, and clients may not
// add rules of that kind.
func DefaultPushRules(userID string) json.RawMessage {
	lp := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(lp, ':'); i >= 0 {
		lp = lp[:i]
	}
	s := strings.ReplaceAll(defaultPushRulesJSON, "@USER_ID@", userID)
	s = strings.ReplaceAll(s, "@LOCALPART@", lp)
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return json.RawMessage(`{"override":[],"content":[],"postcontent":[],"room":[],"sender":[],"underride":[]}`)
	}
	b, _ := json.Marshal(v)
	return b
}
