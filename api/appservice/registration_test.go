package appservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `id: "IRC Bridge"
url: "http://127.0.0.1:1234"
as_token: "as1"
hs_token: "hs1"
sender_localpart: "_irc_bot"
rate_limited: false
protocols: ["irc"]
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_bridge_.*"
  aliases:
    - exclusive: false
      regex: "#_irc_bridge_.*"
  rooms: []
`

func TestParseRegistration(t *testing.T) {
	r, err := Parse([]byte(good), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if r.Sender != "@_irc_bot:example.org" || r.LimitsUsers() || !r.HasURL() || r.Protocols[0] != "irc" {
		t.Fatalf("parsed %+v", r)
	}
	if !r.OwnsUser("@_irc_bridge_bob:example.org") || r.OwnsUser("@bob:example.org") || !r.OwnsUser("@_irc_bot:example.org") {
		t.Fatal("user namespace")
	}
	// The whole ID must match, not a part of it.
	if r.OwnsUser("@x_@_irc_bridge_bob:example.org") {
		t.Fatal("regex matched inside an ID")
	}
	if !r.InterestedInUser("@_irc_bridge_bob:example.org", "example.org") || r.InterestedInUser("@_irc_bridge_bob:other.org", "example.org") {
		t.Fatal("only local users concern a service")
	}
	set, err := NewSet([]*Registration{r})
	if err != nil {
		t.Fatal(err)
	}
	if set.ExclusiveUser("@_irc_bridge_x:example.org") != r || set.ExclusiveAlias("#_irc_bridge_x:example.org") != nil {
		t.Fatal("exclusivity: users are exclusive, aliases are not")
	}
	// url: null is a service that wants no traffic.
	r2, err := Parse([]byte(strings.Replace(good, `url: "http://127.0.0.1:1234"`, "url: null", 1)), "example.org")
	if err != nil || r2.HasURL() {
		t.Fatalf("url null: %v %+v", err, r2)
	}
	// A missing rate_limited means limited.
	r3, err := Parse([]byte(strings.Replace(good, "rate_limited: false\n", "", 1)), "example.org")
	if err != nil || !r3.LimitsUsers() {
		t.Fatalf("rate_limited default: %v", err)
	}
}

func TestRegistrationErrors(t *testing.T) {
	without := func(field string) string {
		var out []string
		for _, l := range strings.Split(good, "\n") {
			if !strings.HasPrefix(l, field+":") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	cases := []struct{ name, yaml, want string }{
		{"not YAML", "id: [", "not a valid registration"},
		{"not a mapping", "- a\n- b\n", "not a valid registration"},
		{"missing id", without("id"), `missing required field "id"`},
		{"missing url", without("url"), `missing required field "url"`},
		{"missing as_token", without("as_token"), `missing required field "as_token"`},
		{"missing hs_token", without("hs_token"), `missing required field "hs_token"`},
		{"missing sender_localpart", without("sender_localpart"), `missing required field "sender_localpart"`},
		{"missing namespaces", strings.Split(good, "namespaces:")[0], `missing required field "namespaces"`},
		{"empty id", strings.Replace(good, `id: "IRC Bridge"`, `id: ""`, 1), `"id" must not be empty`},
		{"long id", strings.Replace(good, `id: "IRC Bridge"`, `id: "`+strings.Repeat("x", MaxIDBytes+1)+`"`, 1), "longer than"},
		{"empty as_token", strings.Replace(good, `as_token: "as1"`, `as_token: ""`, 1), `"as_token" must not be empty`},
		{"same tokens", strings.Replace(good, `hs_token: "hs1"`, `hs_token: "as1"`, 1), "must differ"},
		{"bad sender", strings.Replace(good, `sender_localpart: "_irc_bot"`, `sender_localpart: "a:b"`, 1), "not a localpart"},
		{"bad url", strings.Replace(good, `url: "http://127.0.0.1:1234"`, `url: "ftp://x"`, 1), `"url"`},
		{"bad regex", strings.Replace(good, `regex: "@_irc_bridge_.*"`, `regex: "@_irc_(bridge"`, 1), "bad regex"},
		{"missing regex", strings.Replace(good, `regex: "#_irc_bridge_.*"`, `regex: ""`, 1), `missing "regex"`},
		{"bad protocol", strings.Replace(good, `protocols: ["irc"]`, `protocols: ["a b"]`, 1), "not a protocol name"},
		{"wrong type", strings.Replace(good, "rate_limited: false", "rate_limited: maybe", 1), "not a valid registration"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.yaml), "example.org")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestLoadRejectsDuplicates(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.yaml", good)
	other := func(id, as, hs, sender string) string {
		s := strings.Replace(good, `id: "IRC Bridge"`, `id: "`+id+`"`, 1)
		s = strings.Replace(s, `as_token: "as1"`, `as_token: "`+as+`"`, 1)
		s = strings.Replace(s, `hs_token: "hs1"`, `hs_token: "`+hs+`"`, 1)
		return strings.Replace(s, `sender_localpart: "_irc_bot"`, `sender_localpart: "`+sender+`"`, 1)
	}
	ok := write("ok.yaml", other("two", "as2", "hs2", "_two"))
	if set, err := Load([]string{a, ok}, "example.org"); err != nil || len(set.All()) != 2 || set.ByASToken("as2").ID != "two" || set.ByID("IRC Bridge") == nil {
		t.Fatalf("two distinct services: %v", err)
	}
	cases := []struct{ name, content, want string }{
		{"id", other("IRC Bridge", "as2", "hs2", "_two"), `id "IRC Bridge" is also used`},
		{"as_token", other("two", "as1", "hs2", "_two"), "as_token is also used"},
		{"hs_token", other("two", "as2", "hs1", "_two"), "hs_token is also used"},
		{"token crossed", other("two", "hs1", "hs2", "_two"), "as_token is the hs_token"},
		{"sender", other("two", "as2", "hs2", "_irc_bot"), "sender_localpart is also used"},
	}
	for _, c := range cases {
		b := write("b.yaml", c.content)
		_, err := Load([]string{a, b}, "example.org")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "b.yaml") {
			t.Errorf("duplicate %s: got %v, want %q naming the file", c.name, err, c.want)
		}
	}
	if _, err := Load([]string{filepath.Join(dir, "missing.yaml")}, "example.org"); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}
