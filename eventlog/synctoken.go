package eventlog

import (
	"fmt"
	"strconv"
	"strings"

	"strand/eventlog/matrix"
)

// SyncToken is a sync position (next_batch, since, and the from/to of
// /keys/changes): one stream sequence per stream a sync response covers,
// so any sync worker can serve any token (invariant 5). Written
// "s<rooms>_<accounts>_<receipts>_<ephemeral>". It lives here, beside the
// streams it names, because the api reads tokens too.
type SyncToken struct {
	Rooms     uint64
	Accounts  uint64
	Receipts  uint64
	Ephemeral uint64
}

func (t SyncToken) String() string {
	return fmt.Sprintf("s%d_%d_%d_%d", t.Rooms, t.Accounts, t.Receipts, t.Ephemeral)
}

// ParseSyncToken reads a token; a malformed one is M_INVALID_PARAM.
func ParseSyncToken(s string) (SyncToken, error) {
	bad := matrix.InvalidParam("malformed sync token %q", s)
	if len(s) < 2 || s[0] != 's' {
		return SyncToken{}, bad
	}
	parts := strings.Split(s[1:], "_")
	if len(parts) != 4 {
		return SyncToken{}, bad
	}
	var v [4]uint64
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 63)
		if err != nil {
			return SyncToken{}, bad
		}
		v[i] = n
	}
	return SyncToken{Rooms: v[0], Accounts: v[1], Receipts: v[2], Ephemeral: v[3]}, nil
}
