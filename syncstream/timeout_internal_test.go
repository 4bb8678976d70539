package syncstream

import (
	"testing"
	"time"
)

// A timeout too large for a Duration is capped, not wrapped around to a
// negative wait that answers at once.
func TestParseTimeoutCaps(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"30000", 30 * time.Second, false},
		{"300000", MaxTimeout, false},
		{"300001", MaxTimeout, false},
		{"9223372036854", MaxTimeout, false},
		{"9223372036855", MaxTimeout, false}, // the first that overflowed
		{"9223372036854775807", MaxTimeout, false},
		{"99999999999999999999999", MaxTimeout, false},
		{"-1", 0, true},
		{"-99999999999999999999999", 0, true},
		{"1.5", 0, true},
		{"soon", 0, true},
	} {
		got, err := parseTimeout(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("timeout=%s: accepted as %v, want M_INVALID_PARAM", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("timeout=%s: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
