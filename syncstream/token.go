// Package syncstream serves /sync. Sync workers are stateless apart from
// what they can rebuild: each consumes the log to learn which users and
// rooms changed (to wake long-polls the moment something arrives for them)
// and reads the projection for the response, in one snapshot that also
// yields the stream positions the next_batch token is built from. So any
// worker can serve any token, also after restarts.
package syncstream

import "strand/eventlog"

// Token is the sync token; its codec is eventlog.SyncToken, shared with
// the api.
type Token = eventlog.SyncToken

// ParseToken reads a token; a malformed one is M_INVALID_PARAM.
func ParseToken(s string) (Token, error) { return eventlog.ParseSyncToken(s) }
