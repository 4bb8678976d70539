package syncstream

import (
	"encoding/json"
	"strings"
)

// splitFieldPath splits an event_fields entry on unescaped dots ("\." is
// a literal dot, as in "content.m\.relates_to").
func splitFieldPath(p string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(p); i++ {
		switch {
		case p[i] == '\\' && i+1 < len(p) && p[i+1] == '.':
			cur.WriteByte('.')
			i++
		case p[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(p[i])
		}
	}
	return append(parts, cur.String())
}

// selectFields keeps only the listed fields of an event (the filter's
// event_fields); an empty list keeps everything.
func selectFields(ev json.RawMessage, fields []string) json.RawMessage {
	if len(fields) == 0 {
		return ev
	}
	var src map[string]any
	if err := json.Unmarshal(ev, &src); err != nil {
		return ev
	}
	dst := map[string]any{}
	for _, f := range fields {
		path := splitFieldPath(f)
		var from any = src
		ok := true
		for _, k := range path {
			m, isMap := from.(map[string]any)
			if !isMap {
				ok = false
				break
			}
			if from, ok = m[k]; !ok {
				break
			}
		}
		if !ok {
			continue
		}
		to := dst
		for _, k := range path[:len(path)-1] {
			next, isMap := to[k].(map[string]any)
			if !isMap {
				next = map[string]any{}
				to[k] = next
			}
			to = next
		}
		to[path[len(path)-1]] = from
	}
	b, err := json.Marshal(dst)
	if err != nil {
		return ev
	}
	return b
}
