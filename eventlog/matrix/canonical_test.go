package matrix

import (
	"encoding/json"
	"strings"
	"testing"
)

// The examples of content/appendices.md, "Canonical JSON" / "Examples",
// with the exact expected output.
var specCanonicalExamples = []struct{ in, want string }{
	{`{}`, `{}`},
	{"{\n    \"one\": 1,\n    \"two\": \"Two\"\n}", `{"one":1,"two":"Two"}`},
	{"{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}", `{"a":"1","b":"2"}`},
	{`{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
	{`{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
	{"{\n    \"a\": \"日本語\"\n}", `{"a":"日本語"}`},
	{"{\n    \"本\": 2,\n    \"日\": 1\n}", `{"日":1,"本":2}`},
	{"{\n    \"a\": \"\\u65E5\"\n}", `{"a":"日"}`},
	{"{\n    \"a\": null\n}", `{"a":null}`},
	{"{\n    \"a\": -0,\n    \"b\": 1e10\n}", `{"a":0,"b":10000000000}`},
}

func TestCanonicalJSONSpecExamples(t *testing.T) {
	for _, tc := range specCanonicalExamples {
		got, err := CanonicalJSON([]byte(tc.in))
		if err != nil {
			t.Errorf("CanonicalJSON(%q): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("CanonicalJSON(%q)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestCanonicalJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"top-level string", `"x"`, `"x"`},
		{"top-level number", ` 42 `, `42`},
		{"literals", `[true, false, null]`, `[true,false,null]`},
		{"empty containers", `{ "a" : [ ] , "b" : { } }`, `{"a":[],"b":{}}`},
		{"nested sort", `{"z":{"b":1,"a":2},"a":[{"d":1,"c":2}]}`, `{"a":[{"c":2,"d":1}],"z":{"a":2,"b":1}}`},
		{"many keys reversed", `{"j":0,"i":1,"h":2,"g":3,"f":4,"e":5,"d":6,"c":7,"b":8,"a":9}`, `{"a":9,"b":8,"c":7,"d":6,"e":5,"f":4,"g":3,"h":2,"i":1,"j":0}`},
		{"sort by code point not UTF-16", `{"\ud83d\ude00":1,"\uffff":2}`, `{"` + "\uffff" + `":2,"😀":1}`},
		{"escaped key sorts decoded", `{"A":1,"\"":2}`, `{"\"":2,"A":1}`},
		{"short escapes kept", `"\b\f\n\r\t\"\\"`, `"\b\f\n\r\t\"\\"`},
		{"other controls as lower-case \\u00XX", `"\u0001\u001F\u0000\u000B"`, `"\u0001\u001f\u0000\u000b"`},
		{"solidus unescaped", `"\/"`, `"/"`},
		{"unicode escape decoded", `"\u00e9\u20AC"`, `"é€"`},
		{"surrogate pair decoded", `"\ud834\udd1e"`, `"𝄞"`},
		{"DEL and U+2028 raw", "\"\x7f\u2028\"", "\"\x7f\u2028\""},
		{"max safe integer", `9007199254740991`, `9007199254740991`},
		{"min safe integer", `-9007199254740991`, `-9007199254740991`},
		{"integral fraction", `[1.0, 1.50e1, 100e-2, -0.0, 0e5]`, `[1,15,1,0,0]`},
		{"exponent to max", `9.007199254740991e15`, `9007199254740991`},
		{"whitespace everywhere", " \t\n\r[ 1 ,\n2 ] \n", `[1,2]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalJSON([]byte(tc.in))
			if err != nil {
				t.Fatalf("CanonicalJSON(%q): %v", tc.in, err)
			}
			if string(got) != tc.want {
				t.Fatalf("CanonicalJSON(%q)\n got %s\nwant %s", tc.in, got, tc.want)
			}
			// Canonical output is a fixed point.
			again, err := CanonicalJSON(got)
			if err != nil || string(again) != string(got) {
				t.Fatalf("not idempotent: %s -> %s (%v)", got, again, err)
			}
		})
	}
}

func TestCanonicalJSONRejects(t *testing.T) {
	tests := []struct {
		name, in, code string
	}{
		{"float", `1.5`, "M_BAD_JSON"},
		{"small float", `1e-1`, "M_BAD_JSON"},
		{"just above max", `9007199254740992`, "M_BAD_JSON"},
		{"just below min", `-9007199254740992`, "M_BAD_JSON"},
		{"huge exponent", `1e400`, "M_BAD_JSON"},
		{"exponent over range", `1e16`, "M_BAD_JSON"},
		{"long integer", `123456789012345678901234567890`, "M_BAD_JSON"},
		{"duplicate key", `{"a":1,"a":2}`, "M_BAD_JSON"},
		{"duplicate key unsorted", `{"b":1,"a":1,"b":2}`, "M_BAD_JSON"},
		{"duplicate key by escape", `{"a":1,"\u0061":2}`, "M_BAD_JSON"},
		{"lone high surrogate", `"\ud800"`, "M_BAD_JSON"},
		{"lone low surrogate", `"\udc00"`, "M_BAD_JSON"},
		{"invalid UTF-8", "\"\xff\"", "M_BAD_JSON"},
		{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\"", "M_BAD_JSON"},
		{"too deep", strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), "M_BAD_JSON"},
		{"empty", ``, "M_NOT_JSON"},
		{"leading zero", `01`, "M_NOT_JSON"},
		{"plus sign", `+1`, "M_NOT_JSON"},
		{"bare dot", `1.`, "M_NOT_JSON"},
		{"NaN", `NaN`, "M_NOT_JSON"},
		{"trailing comma", `[1,]`, "M_NOT_JSON"},
		{"trailing data", `{} {}`, "M_NOT_JSON"},
		{"unquoted key", `{a:1}`, "M_NOT_JSON"},
		{"raw control char", "\"\x01\"", "M_NOT_JSON"},
		{"bad escape", `"\x"`, "M_NOT_JSON"},
		{"short unicode escape", `"\u12"`, "M_NOT_JSON"},
		{"unterminated string", `"abc`, "M_NOT_JSON"},
		{"unterminated object", `{"a":1`, "M_NOT_JSON"},
		{"bad literal", `tru`, "M_NOT_JSON"},
		{"single quotes", `'a'`, "M_NOT_JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalJSON([]byte(tc.in))
			if err == nil {
				t.Fatalf("CanonicalJSON(%q) = %s, want error", tc.in, got)
			}
			me, ok := AsError(err)
			if !ok || me.Code != tc.code {
				t.Fatalf("CanonicalJSON(%q) error %v, want %s", tc.in, err, tc.code)
			}
		})
	}
}

// TestCanonicalJSONAgainstStdlib compares with a slow reference built from
// encoding/json (which sorts map keys) on inputs whose numbers are small.
func TestCanonicalJSONAgainstStdlib(t *testing.T) {
	inputs := []string{
		`{"content":{"body":"hello <b>&</b>","msgtype":"m.text"},"type":"m.room.message","origin_server_ts":1700000000000}`,
		`{"k":["a",{"y":[1,2,{"q":null}],"x":false}],"e":"\u00e9\n"}`,
	}
	for _, in := range inputs {
		var v any
		if err := json.Unmarshal([]byte(in), &v); err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		enc := json.NewEncoder(&sb)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(sb.String(), "\n")
		got, err := CanonicalJSON([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("CanonicalJSON(%s)\n got %s\nwant %s", in, got, want)
		}
	}
}

func FuzzCanonicalJSON(f *testing.F) {
	for _, tc := range specCanonicalExamples {
		f.Add([]byte(tc.in))
	}
	f.Add([]byte(`{"b":[1,{"d":"\u0000","c":-0}],"a":"\ud83d\ude00"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := CanonicalJSON(in)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON output %q for %q", out, in)
		}
		again, err := CanonicalJSON(out)
		if err != nil || string(again) != string(out) {
			t.Fatalf("not a fixed point: %q -> %q (%v)", out, again, err)
		}
	})
}

func BenchmarkCanonicalJSON(b *testing.B) {
	inputs := map[string]string{
		// A typical message event as a client sends it plus the server's
		// fields, keys out of order.
		"message": `{"type":"m.room.message","sender":"@alice:example.org","room_id":"!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ","content":{"msgtype":"m.text","body":"Hello, world! This is a fairly ordinary chat message with some text.","m.mentions":{"user_ids":["@bob:example.org"]}},"origin_server_ts":1700000000000,"depth":1234,"prev_events":["$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"],"auth_events":["$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg","$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zh","$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zi"],"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"signatures":{"example.org":{"ed25519:1":"KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}}}`,
	}
	var users strings.Builder
	users.WriteString(`{"users":{`)
	for i := range 1000 {
		if i > 0 {
			users.WriteByte(',')
		}
		users.WriteString(`"@user` + strings.Repeat("x", i%7) + itoa(999-i) + `:example.org":50`)
	}
	users.WriteString(`},"ban":50,"kick":50}`)
	inputs["power_levels_1000_users"] = users.String()
	for name, in := range inputs {
		raw := []byte(in)
		canon, err := CanonicalJSON(raw)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/unsorted", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CanonicalJSON(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/already_canonical", func(b *testing.B) {
			b.SetBytes(int64(len(canon)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CanonicalJSON(canon); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/stdlib_roundtrip_for_comparison", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				var v any
				if err := json.Unmarshal(raw, &v); err != nil {
					b.Fatal(err)
				}
				if _, err := json.Marshal(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func itoa(i int) string { return string(appendInt(nil, int64(i))) }

// TestStringRoundTrip checks that appendString and decodeString invert
// each other, and that decodeString also reads the escapes canonical JSON
// never writes.
func TestStringRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "\b\f\n\r\t\x00\x01\x1f\x7f", "é日本😀", "\u2028/"} {
		enc, ok := appendString(nil, s)
		if !ok {
			t.Fatalf("appendString(%q) failed", s)
		}
		if canon, err := CanonicalJSON(enc); err != nil || string(canon) != string(enc) {
			t.Fatalf("appendString(%q) = %s is not canonical (%v)", s, enc, err)
		}
		if got, ok := decodeString(enc); !ok || got != s {
			t.Fatalf("decodeString(%s) = %q, %v", enc, got, ok)
		}
	}
	if _, ok := appendString(nil, "bad\xff"); ok {
		t.Fatal("appendString accepted invalid UTF-8")
	}
	for in, want := range map[string]string{`"\/\u00e9\ud83d\ude00"`: "/é😀", `"\u0041"`: "A"} {
		if got, ok := decodeString([]byte(in)); !ok || got != want {
			t.Errorf("decodeString(%s) = %q, %v", in, got, ok)
		}
	}
	for _, bad := range []string{`"\`, `"\x"`, `"\u12"`, `"\ud83d"`, `x`, `"`} {
		if got, ok := decodeString([]byte(bad)); ok {
			t.Errorf("decodeString(%s) = %q, want failure", bad, got)
		}
	}
}
