package eventlog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Room pagination tokens name a point in the total order of room events
// (see EventPos): the events before the point have a smaller position. A
// point is written "t<seq>_<index>" from the stream sequence it is built
// from. A sync token ("s<roomsSeq>_...") also names a point: just after
// every event of record roomsSeq, which is what lets a /sync prev_batch or
// next_batch continue into /messages.

// ErrBadToken is returned for a token that does not parse.
var ErrBadToken = errors.New("malformed pagination token")

// FormatRoomPoint writes a pagination token for point p.
func FormatRoomPoint(p int64) string {
	return fmt.Sprintf("t%d_%d", p/MaxEventsPerRecord, p%MaxEventsPerRecord)
}

// ParseRoomPoint reads a pagination or sync token as a point.
func ParseRoomPoint(tok string) (int64, error) {
	if len(tok) < 2 {
		return 0, ErrBadToken
	}
	switch tok[0] {
	case 't':
		seqS, idxS, ok := strings.Cut(tok[1:], "_")
		if !ok {
			return 0, ErrBadToken
		}
		seq, err1 := strconv.ParseUint(seqS, 10, 53)
		idx, err2 := strconv.ParseUint(idxS, 10, 16)
		if err1 != nil || err2 != nil || idx >= MaxEventsPerRecord || seq > 1<<52 {
			return 0, ErrBadToken
		}
		return EventPos(seq, int(idx)), nil
	case 's':
		seqS, _, _ := strings.Cut(tok[1:], "_")
		seq, err := strconv.ParseUint(seqS, 10, 53)
		if err != nil || seq > 1<<52 {
			return 0, ErrBadToken
		}
		return EventPos(seq+1, 0), nil
	}
	return 0, ErrBadToken
}
