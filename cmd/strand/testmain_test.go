package main

import (
	"fmt"
	"os"
	"testing"
)

// TestMain turns the rate limits off for the servers this package's tests
// start, in this process and in the processes they run (deploy/run-local.sh,
// strand serve as a child): most tests write faster than a person would.
// The tests of the limits themselves, and the matrix-js-sdk flow, turn them
// on with --rate-limits on.
func TestMain(m *testing.M) {
	if err := os.Setenv("STRAND_RATE_LIMITS", "off"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
