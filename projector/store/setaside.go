package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"strand/eventlog"
)

// A record that can never be applied (invariant 11) differs from a
// transient failure: applying it again, now or after a restart, fails the
// same way, because the cause is in the record (or in what the log holds
// before it), not in PostgreSQL or NATS being away. Such a record is set
// aside instead of stopping its lane; a transient failure still ends the
// lane, which starts again from its committed position.

// ErrUnappliable marks an error caused by the record being applied: it
// cannot be decoded, or names something it may not.
var ErrUnappliable = errors.New("record cannot be applied")

// Unappliable marks err as caused by the record being applied.
func Unappliable(err error) error {
	if err == nil || errors.Is(err, ErrUnappliable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnappliable, err)
}

// IsUnappliable reports whether err means that the record being applied
// can never be: marked so by Unappliable, or refused by PostgreSQL for
// what it holds. SQLSTATE classes 22 (data exception: a value out of range,
// invalid JSON text), 23 (integrity constraint violation) and 54 (program
// limit exceeded: an index row too large) depend only on the data written,
// never on the server's condition. Everything else (connections, a
// shutdown, serialisation failures, timeouts) is transient.
func IsUnappliable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnappliable) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && len(pe.Code) == 5 {
		switch pe.Code[:2] {
		case "22", "23", "54":
			return true
		}
	}
	return false
}

// SetAsideRecord is a record the projection could not apply.
type SetAsideRecord struct {
	Stream     string
	Seq        uint64
	Subject    string
	RecordType string
	RoomID     string
	Error      string
	LoggedTS   int64 // the record's time on the log, unix ms
}

// The columns of set_aside hold what the log and an error say, which may
// be anything: they are bounded and made valid text so that setting a
// record aside cannot itself fail.
const (
	setAsideFieldMax = 255
	setAsideErrorMax = 2000
)

func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// SetAside records m as set aside because of cause and moves stream's
// position past it, in one transaction, so that the lane goes on with the
// next record. expect is the position the reader believes is stored, as for
// Project. For a room record, the room's last sequence moves too, although
// none of its events are projected: the api appends a room's next event
// expecting the room subject's last sequence, which is now this record's,
// and a room whose projection stayed behind its subject could never be
// written again. It returns the position after the record.
func (s *Store) SetAside(ctx context.Context, stream string, expect uint64, m eventlog.Msg, cause error) (uint64, error) {
	pos, err := s.setAside(ctx, stream, expect, m, cause, true)
	if err != nil {
		return 0, fmt.Errorf("set aside %s seq %d: %w", stream, m.Seq, err)
	}
	return pos, nil
}

// setAside is SetAside; without tracked, for a fresh build, the
// stream's position is neither read nor moved.
func (s *Store) setAside(ctx context.Context, stream string, expect uint64, m eventlog.Msg, cause error, tracked bool) (uint64, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit TO OFF"); err != nil {
		return 0, err
	}
	if tracked {
		if _, err := tx.Exec(ctx, "INSERT INTO projector_positions (stream, seq) VALUES ($1, 0) ON CONFLICT DO NOTHING", stream); err != nil {
			return 0, err
		}
		var cur int64
		if err := tx.QueryRow(ctx, "SELECT seq FROM projector_positions WHERE stream = $1 FOR UPDATE", stream).Scan(&cur); err != nil {
			return 0, err
		}
		if uint64(cur) < expect {
			return 0, fmt.Errorf("%w: %s is stored at %d, the reader applied up to %d", ErrPositionBehind, stream, cur, expect)
		}
		if m.Seq <= uint64(cur) {
			return uint64(cur), nil // applied or set aside before
		}
	}
	room := ""
	whole := eventlog.LaneStream(stream) // a ROOMS lane's records are listed as ROOMS
	if whole == eventlog.StreamRooms {
		room = m.Room
	}
	room = cleanText(room, setAsideFieldMax)
	if _, err := tx.Exec(ctx, `INSERT INTO set_aside (stream, seq, subject, record_type, room_id, error, logged_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
		whole, int64(m.Seq), cleanText(m.Subject, setAsideFieldMax), cleanText(m.Type, setAsideFieldMax), room,
		cleanText(cause.Error(), setAsideErrorMax), m.Time.UnixMilli()); err != nil {
		return 0, err
	}
	if room != "" {
		if _, err := tx.Exec(ctx, "UPDATE rooms SET last_seq = $2 WHERE room_id = $1 AND last_seq < $2", room, int64(m.Seq)); err != nil {
			return 0, err
		}
	}
	if tracked {
		if _, err := tx.Exec(ctx, "UPDATE projector_positions SET seq = $2 WHERE stream = $1", stream, int64(m.Seq)); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return m.Seq, nil
}

// SetAsideRecords lists the records set aside, oldest first per stream.
func (s *Store) SetAsideRecords(ctx context.Context) ([]SetAsideRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT stream, seq, subject, record_type, room_id, error, logged_ts
		FROM set_aside ORDER BY stream, seq`)
	if err != nil {
		return nil, fmt.Errorf("list set-aside records: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (SetAsideRecord, error) {
		var r SetAsideRecord
		var seq int64
		err := row.Scan(&r.Stream, &seq, &r.Subject, &r.RecordType, &r.RoomID, &r.Error, &r.LoggedTS)
		r.Seq = uint64(seq)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list set-aside records: %w", err)
	}
	return out, nil
}
