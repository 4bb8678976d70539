// Package syncstream serves /sync. Sync workers are stateless apart from
// what they can rebuild: each consumes the log to learn which users and
// rooms changed (to wake long-polls the moment something arrives for them)
// and reads the projection for the response, in one snapshot that also
// yields the stream positions the next_batch token is built from. So any
// worker can serve any token, also after restarts.
package syncstream

import (
	"fmt"
	"strconv"
	"strings"

	"strand/eventlog/matrix"
)

// Token is a sync position: one stream sequence per stream a sync
// response covers. Written "s<rooms>_<accounts>_<receipts>_<ephemeral>".
type Token struct {
	Rooms     uint64
	Accounts  uint64
	Receipts  uint64
	Ephemeral uint64
}

func (t Token) String() string {
	return fmt.Sprintf("s%d_%d_%d_%d", t.Rooms, t.Accounts, t.Receipts, t.Ephemeral)
}

// ParseToken reads a token; a malformed one is M_INVALID_PARAM.
func ParseToken(s string) (Token, error) {
	bad := matrix.InvalidParam("malformed sync token %q", s)
	if len(s) < 2 || s[0] != 's' {
		return Token{}, bad
	}
	parts := strings.Split(s[1:], "_")
	if len(parts) != 4 {
		return Token{}, bad
	}
	var v [4]uint64
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 63)
		if err != nil {
			return Token{}, bad
		}
		v[i] = n
	}
	return Token{Rooms: v[0], Accounts: v[1], Receipts: v[2], Ephemeral: v[3]}, nil
}
