package eventlog

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A conflict is recognised by JetStream's error code, on single-replica
// (10071) and clustered (10164) streams, wrapped or not, and nothing else
// is one, whatever its text says.
func TestConflictCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{ErrorCode: 10071, Code: 400}, true},
		{&jetstream.APIError{ErrorCode: 10164, Code: 400}, true},
		{fmt.Errorf("publish: %w", &jetstream.APIError{ErrorCode: 10071}), true},
		{&jetstream.APIError{ErrorCode: 10060, Description: "wrong last sequence"}, false},
		{errors.New("wrong last sequence: 3"), false},
		{nil, false},
	} {
		if got := isConflict(tc.err); got != tc.want {
			t.Errorf("isConflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
