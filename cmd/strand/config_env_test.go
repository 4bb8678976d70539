package main

import (
	"strings"
	"testing"
	"time"
)

// An environment variable is a flag's default; one whose value does not
// parse (an integer, a duration, a boolean) is an error naming it, unless
// the command line sets that flag, and never a silent fallback to the
// built-in default.
func TestEnvironmentValues(t *testing.T) {
	t.Run("parsed", func(t *testing.T) {
		t.Setenv("STRAND_REPLICAS", "3")
		t.Setenv("STRAND_APPLY_TIMEOUT", "3s")
		t.Setenv("STRAND_METRICS_ON_LISTEN", "true")
		t.Setenv("STRAND_SERVER_NAME", "example.org")
		c, err := parseServerFlags(t)
		if err != nil {
			t.Fatal(err)
		}
		if c.Replicas != 3 || c.ApplyTimeout != 3*time.Second || !c.MetricsOnListen || c.ServerName != "example.org" {
			t.Fatalf("config %+v", c)
		}
	})
	for _, tc := range []struct{ env, value, flag string }{
		{"STRAND_REPLICAS", "three", "--replicas"},
		{"STRAND_BCRYPT_COST", "12.5", "--bcrypt-cost"},
		{"STRAND_APPLY_TIMEOUT", "10", "--apply-timeout"},
		{"STRAND_METRICS_ON_LISTEN", "yes please", "--metrics-on-listen"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			_, err := parseServerFlags(t)
			if err == nil || !strings.Contains(err.Error(), tc.env) {
				t.Fatalf("%s=%q: %v, want an error naming it", tc.env, tc.value, err)
			}
			// The command line overrides the environment, and then the
			// environment's value does not matter.
			value := "1"
			if tc.flag == "--apply-timeout" {
				value = "1s"
			} else if tc.flag == "--metrics-on-listen" {
				value = "true"
			} else if tc.flag == "--bcrypt-cost" {
				value = "10"
			}
			if _, err := parseServerFlags(t, tc.flag+"="+value); err != nil {
				t.Fatalf("%s=%q with %s=%s: %v", tc.env, tc.value, tc.flag, value, err)
			}
		})
	}
	// A boolean flag whose environment value did not parse still works
	// without a value on the command line.
	t.Setenv("STRAND_METRICS_ON_LISTEN", "maybe")
	c, err := parseServerFlags(t, "--metrics-on-listen")
	if err != nil || !c.MetricsOnListen {
		t.Fatalf("--metrics-on-listen: %v %+v", err, c)
	}
}
