package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Work consumers. Projectors and sync workers keep their own positions
// (Read); work that is done once per record by whichever process of a
// role gets it (push delivery) uses a durable JetStream consumer instead:
// every process of the role pulls from the same consumer, and a record is
// done when its handler acknowledges it. A record not acknowledged (its
// process died, or its handler asked for a retry) is delivered again, to
// any process, so a restart resumes where the role stopped.

// WorkOptions declare a durable work consumer.
type WorkOptions struct {
	// Durable names the consumer; every process of the role uses it.
	Durable string
	// Subjects optionally filters the stream.
	Subjects []string
	// DeliverNew makes a consumer created now start after the stream's
	// current last record instead of at its first (a pusher set up on a
	// server with history pushes nothing old). It matters only when the
	// consumer is created; afterwards it resumes where it stopped.
	DeliverNew bool
	// AckWait is how long a delivered record may stay unacknowledged
	// before it is delivered again; handlers must finish well within it.
	AckWait time.Duration
	// MaxAckPending bounds the records delivered and not yet
	// acknowledged, over all processes.
	MaxAckPending int
	// Workers is how many handlers run at once in this process.
	Workers int
}

// WorkMsg is a record delivered by a work consumer. Its handler must
// acknowledge it (Ack) or ask for it again later (Retry).
type WorkMsg struct {
	Msg
	// Delivered counts the deliveries of this record, this one included.
	Delivered uint64
	raw       jetstream.Msg
}

// Ack marks the record done, and returns once the server has recorded it
// (a lost acknowledgement would deliver the record again).
func (m *WorkMsg) Ack(ctx context.Context) error { return m.raw.DoubleAck(ctx) }

// Retry asks for the record to be delivered again after delay.
func (m *WorkMsg) Retry(delay time.Duration) error { return m.raw.NakWithDelay(delay) }

// InProgress resets the record's AckWait: its handler is still at it.
func (m *WorkMsg) InProgress() error { return m.raw.InProgress() }

// WorkItem is one record for a work stream.
type WorkItem struct {
	Subject string
	Type    string
	Data    []byte
	// MsgID makes the enqueue idempotent within DuplicateWindow.
	MsgID string
}

// Enqueue appends items to a work stream, all published before any
// acknowledgement is awaited (a room's notifications are many small
// records), and returns once JetStream has stored every one, with how
// many it recognised as duplicates of earlier items (and did not store).
// On an error some items may be stored; enqueueing them all again
// stores each at most once.
func (l *Log) Enqueue(ctx context.Context, items []WorkItem) (dups int, err error) {
	for len(items) > 0 {
		n := min(len(items), enqueueWindow)
		d, err := l.enqueue(ctx, items[:n])
		dups += d
		if err != nil {
			return dups, err
		}
		items = items[n:]
	}
	return dups, nil
}

// enqueueWindow bounds the publications awaiting acknowledgement, well
// under the client's limit on outstanding asynchronous publications
// (which it answers by stalling, then failing).
const enqueueWindow = 256

func (l *Log) enqueue(ctx context.Context, items []WorkItem) (dups int, err error) {
	futures := make([]jetstream.PubAckFuture, 0, len(items))
	for _, it := range items {
		m := nats.NewMsg(it.Subject)
		m.Data = it.Data
		m.Header.Set(HeaderType, it.Type)
		f, err := l.js.PublishMsgAsync(m, jetstream.WithMsgID(it.MsgID))
		if err != nil {
			return 0, fmt.Errorf("enqueue %s: %w", it.Type, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				dups++
			} else if l.appends != nil {
				l.appends.WithLabelValues(f.Msg().Header.Get(HeaderType)).Inc()
			}
		case err := <-f.Err():
			return dups, fmt.Errorf("enqueue to %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return dups, ctx.Err()
		}
	}
	return dups, nil
}

// Work delivers stream's records through the durable consumer o.Durable
// to handle, o.Workers at a time, until ctx ends or the consumer fails.
// Records still being handled when ctx ends are left unacknowledged, so
// they are delivered again (to this role's next process).
func (l *Log) Work(ctx context.Context, stream string, o WorkOptions, handle func(ctx context.Context, m *WorkMsg)) error {
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = 1024
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        o.Durable,
		Description:    "Strand work consumer " + o.Durable,
		FilterSubjects: o.Subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        o.AckWait,
		MaxAckPending:  o.MaxAckPending,
		MaxDeliver:     -1,
	}
	if o.DeliverNew {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	cons, err := l.js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("work consumer %s on %s: %w", o.Durable, stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * o.Workers))
	if err != nil {
		return fmt.Errorf("consume %s: %w", o.Durable, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		it.Stop() // ends Next below
	}()

	ch := make(chan *WorkMsg)
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				handle(ctx, m)
			}
		}()
	}
	defer wg.Wait()
	defer close(ch)
	for {
		jm, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("consume %s: iterator closed", o.Durable)
			}
			return fmt.Errorf("consume %s: %w", o.Durable, err)
		}
		md, err := jm.Metadata()
		if err != nil {
			return fmt.Errorf("consume %s metadata: %w", o.Durable, err)
		}
		h := jm.Headers()
		m := &WorkMsg{Msg: Msg{Stream: stream, Seq: md.Sequence.Stream, Subject: jm.Subject(), Type: h.Get(HeaderType),
			Room: h.Get(HeaderRoom), Data: jm.Data(), Time: md.Timestamp, Pending: md.NumPending},
			Delivered: md.NumDelivered, raw: jm}
		select {
		case ch <- m:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WorkBacklog returns how many records of stream the durable consumer
// has still to finish: those not yet delivered and those delivered but
// not acknowledged (being handled, or waiting for a retry). A consumer
// that does not exist yet has none.
func (l *Log) WorkBacklog(ctx context.Context, stream, durable string) (uint64, error) {
	c, err := l.js.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", durable, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", durable, err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}
