package store

import "context"

// NotificationPositionsSQL is the scan GET /notifications examines, for
// a test of how many rows it reads.
const NotificationPositionsSQL = notificationPositionsSQL

// XactFetched is how many live rows of table this snapshot's transaction
// has fetched so far (sequential and index scans; the transaction's own
// statistics, so no other session counts): for tests of how much a read
// reads.
func (t *SyncTx) XactFetched(ctx context.Context, table string) (int64, error) {
	var n int64
	err := t.tx.QueryRow(ctx, `SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)
		FROM pg_stat_xact_user_tables WHERE relname = $1`, table).Scan(&n)
	return n, err
}

// TxnLookupQueries is how many queries EventByTxn lookups have made.
func (s *Store) TxnLookupQueries() int {
	s.txns.mu.Lock()
	defer s.txns.mu.Unlock()
	return s.txns.queries
}
