package matrix

import (
	"strings"
	"testing"
)

// An alias's localpart may hold any character but ":" (the spec allows
// any Unicode but ":" and NUL; Strand also refuses whitespace and control
// characters, which no one could show or type back).
func TestParseRoomAlias(t *testing.T) {
	for _, ok := range []string{"#a:localhost", "#a/b:localhost", "#..:localhost", "#50%:localhost", "#what?:localhost", "##hash:localhost", "#é中:localhost", "#a:example.org:8448"} {
		if _, err := ParseRoomAlias(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "#", "#:localhost", "a:localhost", "#a", "#a b:localhost", "#a\tb:localhost", "#a\u0085:localhost", "#\xff:localhost", "#a:bad host", "#" + strings.Repeat("a", 250) + ":localhost"} {
		if _, err := ParseRoomAlias(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
