package matrix

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCheckStoredJSON(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct {
		name, in string
		want     string // errcode, "" for accepted
	}{
		{"plain", `{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, ""},
		{"surrogate pair", `{"k":"\ud83d\ude00"}`, ""},
		{"upper-case pair", `{"k":"\uD83D\uDE00"}`, ""},
		{"escaped backslash before u", `{"k":"\\ud800"}`, ""},
		{"other escapes", `{"k":"\"\\\/\b\f\n\r\t\u00e9"}`, ""},
		{"lone high surrogate", `{"k":"\ud800"}`, "M_BAD_JSON"},
		{"lone high surrogate in a key", `{"\ud800":1}`, "M_BAD_JSON"},
		{"lone low surrogate", `{"k":"\udc00"}`, "M_BAD_JSON"},
		{"high then non-surrogate", `{"k":"\ud800\u0041"}`, "M_BAD_JSON"},
		{"high then high", `{"k":"\ud800\ud800"}`, "M_BAD_JSON"},
		{"high at end of string", `{"k":"a\ud800"}`, "M_BAD_JSON"},
		{"high then text", `{"k":"\ud800abcdefgh"}`, "M_BAD_JSON"},
		{"reversed pair", `{"k":"\ude00\ud83d"}`, "M_BAD_JSON"},
		{"floats", `{"a":1.5,"b":-0.25,"c":1e10,"d":6.02e23,"e":1E-7}`, ""},
		{"largest double", `{"k":1.7976931348623157e308}`, ""},
		{"underflow to zero", `{"k":1e-400}`, ""},
		{"huge exponent", `{"k":1e200000}`, "M_BAD_JSON"},
		{"huge negative exponent", `{"k":1e-200000}`, "M_BAD_JSON"},
		{"zero with huge exponent", `{"k":0e-99999}`, "M_BAD_JSON"},
		{"exponent beyond int", `{"k":1e99999999999999999999}`, "M_BAD_JSON"},
		{"beyond double", `{"k":1e309}`, "M_BAD_JSON"},
		{"negative beyond double", `{"k":-2e308}`, "M_BAD_JSON"},
		{"long literal", `{"k":` + strings.Repeat("1", MaxJSONNumberBytes+1) + `}`, "M_BAD_JSON"},
		{"longest literal", `{"k":` + strings.Repeat("1", MaxJSONNumberBytes) + `}`, ""},
		{"big integer", `{"k":123456789012345678901234567890}`, ""},
		{"numbers in strings are text", `{"k":"1e200000"}`, ""},
		{"deepest", deep(MaxJSONDepth), ""},
		{"too deep", deep(MaxJSONDepth + 1), "M_BAD_JSON"},
		{"too deep objects", strings.Repeat(`{"a":`, MaxJSONDepth+1) + "1" + strings.Repeat("}", MaxJSONDepth+1), "M_BAD_JSON"},
		{"unterminated string", `{"k":"abc`, "M_NOT_JSON"},
		{"bad escape", `{"k":"\uzzzz"}`, "M_NOT_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckStoredJSON([]byte(tc.in))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			me, ok := AsError(err)
			if !ok || me.Code != tc.want || me.Status != http.StatusBadRequest {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}
}

// DecodeJSON applies the check to the whole body, also to values a
// handler passes through untouched.
func TestDecodeJSONRefusesUnstorableValues(t *testing.T) {
	for _, body := range []string{
		`{"k":"\ud800"}`,
		`{"k":1e200000}`,
		`{"nested":{"raw":[1,2,"\udfff"]}}`,
		`{"k":` + strings.Repeat("[", MaxJSONDepth+1) + strings.Repeat("]", MaxJSONDepth+1) + `}`,
	} {
		var v map[string]any
		var passThrough struct {
			Nested json.RawMessage `json:"nested"`
		}
		for _, dst := range []any{&v, &passThrough} {
			r := httptest.NewRequest(http.MethodPut, "/", strings.NewReader(body))
			err := DecodeJSON(r, dst, false)
			if me, ok := AsError(err); !ok || me.Status != http.StatusBadRequest {
				t.Errorf("%.60s into %T: %v, want a 400", body, dst, err)
			}
		}
	}
	r := httptest.NewRequest(http.MethodPut, "/", strings.NewReader(`{"k":"\ud83d\ude00","n":1.5}`))
	var ok map[string]any
	if err := DecodeJSON(r, &ok, false); err != nil {
		t.Fatalf("valid body refused: %v", err)
	}
}
