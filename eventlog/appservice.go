package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// AppserviceBucket is the key-value bucket where each application
// service's delivery worker keeps how far it has delivered the log and the
// transaction it is sending. The position and the in-flight transaction
// are one fact, written with compare-and-set on the key's revision, so a
// worker that restarts (or a second worker for the same service) retries
// exactly the transaction that was being sent, with the same ID and the
// same events, and never skips or repeats a record. It is not a durable
// consumer's ack floor: that would be a second copy of the position that
// could disagree with the in-flight transaction (the reason the projector
// keeps its position in Postgres with its rows).
const AppserviceBucket = "strand_appservices"

// AppserviceTxn is a transaction being sent to a service: the ROOMS
// records From..To it covers and the IDs of the events of those records
// it carries, in log order. Re-reading the records gives back the same
// events, so a retry sends the same body.
type AppserviceTxn struct {
	ID     string   `json:"id"`
	From   uint64   `json:"from"`
	To     uint64   `json:"to"`
	Events []string `json:"events,omitempty"`
	// Ephemeral is the ephemeral data of a RECEIPTS or EPHEMERAL
	// transaction, kept as sent: it is computed from more than the
	// records of the range (the room's typing users), and small.
	Ephemeral []json.RawMessage `json:"ephemeral,omitempty"`
	// ToDevice is likewise the to-device messages of an ACCOUNTS
	// transaction (a "*" device expanded when it was first built).
	ToDevice []json.RawMessage `json:"to_device,omitempty"`
	// Rebuild: the bodies were too large to keep here; a retry builds
	// them again from the records From..To.
	Rebuild bool `json:"rebuild,omitempty"`
}

// AppserviceState is a service's delivery position: every ROOMS record
// at or below Through has been delivered (or was of no interest), and
// InFlight, when set, is the transaction covering the records after it.
type AppserviceState struct {
	Through  uint64         `json:"through"`
	InFlight *AppserviceTxn `json:"in_flight,omitempty"`
}

// ErrStateChanged is returned by PutAppserviceState when another writer
// changed the state since it was read.
var ErrStateChanged = errors.New("application service state changed meanwhile")

func ensureAppservices(ctx context.Context, js jetstream.JetStream, replicas int) error {
	_, err := js.KeyValue(ctx, AppserviceBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: AppserviceBucket,
			Description: "Strand application service delivery positions", Storage: jetstream.FileStorage,
			Replicas: replicas, History: 1}); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("declare application service bucket: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("declare application service bucket: %w", err)
	}
	return nil
}

func (l *Log) appservices(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := l.js.KeyValue(ctx, AppserviceBucket)
	if err != nil {
		return nil, fmt.Errorf("open application service bucket: %w", err)
	}
	return kv, nil
}

// AppserviceState reads the delivery state under id (a service's ID, or
// its ID and a stream for its ephemeral lanes) and its revision (0:
// none yet).
func (l *Log) AppserviceState(ctx context.Context, id string) (AppserviceState, uint64, error) {
	var st AppserviceState
	kv, err := l.appservices(ctx)
	if err != nil {
		return st, 0, err
	}
	e, err := kv.Get(ctx, key(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return st, 0, nil
	}
	if err != nil {
		return st, 0, fmt.Errorf("read application service state: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, 0, fmt.Errorf("decode application service state: %w", err)
	}
	return st, e.Revision(), nil
}

// PutAppserviceState writes st if the state is still at revision rev (0:
// none), and returns the new revision; ErrStateChanged if it is not.
func (l *Log) PutAppserviceState(ctx context.Context, id string, st AppserviceState, rev uint64) (uint64, error) {
	kv, err := l.appservices(ctx)
	if err != nil {
		return 0, err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = kv.Create(ctx, key(id), b)
	} else {
		nrev, err = kv.Update(ctx, key(id), b, rev)
	}
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)) {
			return 0, ErrStateChanged
		}
		return 0, fmt.Errorf("write application service state: %w", err)
	}
	return nrev, nil
}
