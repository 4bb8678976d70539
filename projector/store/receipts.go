package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"strand/eventlog"
)

// Read receipts: their projection and what /sync reads of them.

// SetReceipt records a read receipt, unless the user already has a receipt
// of that type for a later event: receipts only move forward. The position
// is only ever that of an event of the receipt's room: one naming another
// room's event (which the api refuses) takes no position from it.
func (t *Tx) SetReceipt(seq uint64, r *eventlog.ReceiptSet) {
	t.queue(`INSERT INTO receipts (room_id, user_id, type, thread_id, event_id, event_pos, ts, stream_seq)
		VALUES ($1, $2, $3, $4, $5, COALESCE((SELECT pos FROM events WHERE event_id = $5 AND room_id = $1), 0), $6, $7)
		ON CONFLICT (room_id, user_id, type, thread_id) DO UPDATE SET
			event_id = EXCLUDED.event_id, event_pos = EXCLUDED.event_pos, ts = EXCLUDED.ts, stream_seq = EXCLUDED.stream_seq
		WHERE receipts.event_pos < EXCLUDED.event_pos`,
		r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.TS, int64(seq))
}

// Receipt is one read receipt.
type Receipt struct {
	RoomID   string
	UserID   string
	Type     string
	ThreadID string
	EventID  string
	TS       int64
}

// ReceiptsSince returns the receipts in rooms set after receipts position
// since (all current ones for since 0), leaving out other users' private
// receipts.
func (t *SyncTx) ReceiptsSince(ctx context.Context, userID string, roomIDs []string, since uint64) ([]Receipt, error) {
	if len(roomIDs) == 0 {
		return nil, nil
	}
	rows, err := t.tx.Query(ctx, `SELECT room_id, user_id, type, thread_id, event_id, ts FROM receipts
		WHERE room_id = ANY($1) AND stream_seq > $2 AND stream_seq <= $3 AND (type <> 'm.read.private' OR user_id = $4)
		ORDER BY room_id, stream_seq`, roomIDs, int64(since), int64(t.Pos.Receipts), userID)
	if err != nil {
		return nil, fmt.Errorf("sync receipts: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[Receipt])
}
