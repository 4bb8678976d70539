// Package eventlog is Strand's log: the JetStream streams that hold every
// durable fact, the records written to them, and the operations the other
// packages use (Append with per-subject optimistic concurrency, Read for
// projectors, sync workers and replay, and watermark waits).
//
// The log is the truth. Postgres holds projections that can be rebuilt from
// it at any time (DESIGN.md, invariants 1 and 2).
package eventlog

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"strand/eventlog/matrix"
)

// Stream names. Every stream Strand uses is declared in streamConfigs below,
// and nowhere else.
const (
	StreamRooms     = "ROOMS"
	StreamAccounts  = "ACCOUNTS"
	StreamReceipts  = "RECEIPTS"
	StreamEphemeral = "EPHEMERAL"
	StreamNonces    = "NONCES"
	StreamPushes    = "PUSHES"
)

// PushesMaxAge is how long a push notification waits on the PUSHES work
// queue for its gateway: one still undelivered after a day (the gateway
// down all that time) is dropped, as Synapse gives up on a pusher's
// backlog, since a phone woken a day late for a message is no help.
const PushesMaxAge = 24 * time.Hour

// EphemeralMaxAge is how long typing notices and presence stay on the log.
// They are worth nothing older: a presence older than this reads as
// offline anyway.
const EphemeralMaxAge = time.Hour

// NonceMaxAge is how long the NONCES stream keeps a used nonce: far longer
// than any nonce is valid (api: five minutes, plus clock skew between
// processes), so a nonce cannot be used again while it is valid.
const NonceMaxAge = time.Hour

// RoomPartitions is the fixed number of room partitions. A room's subject
// carries its partition so that several projectors can later share the rooms
// while each room stays in order. Changing it re-homes rooms: never do.
const RoomPartitions = 16

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id, and so how
// long a blind client retry of the same write is absorbed by the log itself.
const DuplicateWindow = 10 * time.Minute

// StreamOptions tune the stream declarations for a deployment.
type StreamOptions struct {
	// Replicas is the stream replication factor (1, or 3 on a NATS cluster).
	Replicas int
}

func streamConfigs(o StreamOptions) []jetstream.StreamConfig {
	r := o.Replicas
	if r < 1 {
		r = 1
	}
	// ROOMS, ACCOUNTS and RECEIPTS keep everything forever (Limits
	// retention with no limits) and refuse deletes and purges: projections
	// are rebuilt from them. EPHEMERAL and NONCES keep records for a
	// maximum age only: nothing is rebuilt from them.
	return []jetstream.StreamConfig{
		{
			Name:        StreamRooms,
			Description: "Strand room events, one subject per room, and room aliases, one subject per alias",
			Subjects:    []string{"room.>", "alias.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Duplicates:  DuplicateWindow,
			DenyDelete:  true,
			DenyPurge:   true,
			Replicas:    r,
		},
		{
			Name:        StreamAccounts,
			Description: "Strand accounts: users, devices, token hashes, filters, account data, profiles",
			Subjects:    []string{"acct.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Duplicates:  DuplicateWindow,
			DenyDelete:  true,
			DenyPurge:   true,
			Replicas:    r,
		},
		{
			Name:        StreamReceipts,
			Description: "Strand read receipts, one subject per room",
			Subjects:    []string{"rcpt.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Duplicates:  DuplicateWindow,
			DenyDelete:  true,
			DenyPurge:   true,
			Replicas:    r,
		},
		{
			// Typing and presence, kept for a max age. Sync workers rebuild
			// their view by reading this stream from its start, so it holds
			// all the state there is. File storage, although the data is
			// short-lived, because its sequence numbers are in every sync
			// token: a memory stream would start again at 1 after a NATS
			// restart and make every client's token point into the future.
			Name:        StreamEphemeral,
			Description: "Strand typing notices and presence",
			Subjects:    []string{"eph.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      EphemeralMaxAge,
			Duplicates:  time.Minute,
			Replicas:    r,
		},
		{
			// Single-use nonces: a nonce is used by appending the first
			// record of its subject (expected sequence 0), so of any
			// number of uses on any number of processes one succeeds.
			// Nothing projects or reads this stream; a used nonce only
			// needs to be remembered while it is valid.
			Name:        StreamNonces,
			Description: "Strand used single-use nonces (shared-secret registration), one subject per nonce",
			Subjects:    []string{"nonce.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      NonceMaxAge,
			Duplicates:  time.Minute,
			Replicas:    r,
		},
		{
			// Push notifications waiting for delivery, one message per
			// (event, pusher), removed when acknowledged (work queue).
			// Not a fact: derived from ROOMS and ACCOUNTS by the pusher
			// role, never projected or replayed. The Nats-Msg-Id of each
			// (event ID and pusher) makes a redelivered room event enqueue
			// nothing twice within DuplicateWindow.
			Name:        StreamPushes,
			Description: "Strand push notifications waiting for their push gateway (work queue)",
			Subjects:    []string{"push.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.WorkQueuePolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      PushesMaxAge,
			Duplicates:  DuplicateWindow,
			Replicas:    r,
		},
	}
}

// EnsureStreams creates the streams (and the media bucket) or updates them
// to the declared config.
// A change JetStream cannot apply in place (e.g. storage type) is an error:
// Strand never deletes and recreates a stream, and never falls back to
// memory storage. So is a replica count other than the stream's: one
// process started without --replicas 3 must not quietly scale a cluster's
// streams down to one copy (change it deliberately, with the nats CLI).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	for _, cfg := range streamConfigs(o) {
		s, err := js.Stream(ctx, cfg.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if _, err := js.CreateStream(ctx, cfg); err != nil {
				return fmt.Errorf("declare stream %s: %w", cfg.Name, err)
			}
			continue
		case err != nil:
			return fmt.Errorf("declare stream %s: %w", cfg.Name, err)
		}
		if have := s.CachedInfo().Config.Replicas; have != cfg.Replicas {
			return fmt.Errorf("stream %s has %d replicas, but this process was started with --replicas %d: start it with --replicas %d (or change the stream with the nats CLI first)",
				cfg.Name, have, cfg.Replicas, have)
		}
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("declare stream %s: %w", cfg.Name, err)
		}
	}
	if err := ensureAppservices(ctx, js, mediaConfig(o).Replicas); err != nil {
		return err
	}
	return ensureMedia(ctx, js, o)
}

// key encodes an identifier as one subject-safe token. Matrix IDs contain
// dots and colons, which NATS subjects cannot carry; raw URL-safe base64 is
// lossless, so two IDs never share a subject.
func key(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(id))
}

// RoomSubject is the subject of a room's events.
func RoomSubject(roomID string) string {
	h := fnv.New32a()
	h.Write([]byte(roomID))
	return fmt.Sprintf("room.%d.%s", h.Sum32()%RoomPartitions, key(roomID))
}

// AliasSubject is the subject of a room alias. Creating an alias appends
// with the subject's last sequence as read (0 for a never-used alias), so
// two rooms can never both take one alias.
func AliasSubject(alias string) string { return "alias." + key(alias) }

// ReceiptSubject is the subject of a room's read receipts.
func ReceiptSubject(roomID string) string { return "rcpt." + key(roomID) }

// TypingSubject is the subject of a room's typing notices.
func TypingSubject(roomID string) string { return "eph.typing." + key(roomID) }

// PresenceSubject is the subject of a user's presence.
func PresenceSubject(userID string) string { return "eph.presence." + key(userID) }

// PushSubject is the subject of the push notifications queued for one
// user's pushers.
func PushSubject(userID string) string { return "push." + key(userID) }

// NonceSubject is the subject whose first record marks nonce used.
func NonceSubject(nonce string) string { return "nonce." + key(nonce) }

// UserSubject is the subject of every account fact about one user. The
// first record on it is the registration, appended with expected sequence
// 0, which is what makes user IDs unique.
func UserSubject(userID string) string { return "acct.user." + key(userID) }

// MaxEventsPerRecord bounds the events one RoomEvents record carries, so
// that an event's position fits EventPos.
const MaxEventsPerRecord = 1024

// check refuses a room record the projector could never apply: none or
// more than MaxEventsPerRecord events (their positions would overlap the
// next record's).
func (r *RoomEvents) check() error {
	if len(r.Events) == 0 || len(r.Events) > MaxEventsPerRecord {
		return matrix.TooLarge("a room write holds 1 to %d events, not %d", MaxEventsPerRecord, len(r.Events))
	}
	return nil
}

// EventPos is an event's place in the total order of room events: the
// stream sequence of its record and its index within it. Tokens are built
// from it, so it is derived from stream sequences alone.
func EventPos(seq uint64, idx int) int64 { return int64(seq)*MaxEventsPerRecord + int64(idx) }
