package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Header names of the record envelope.
const (
	HeaderType = "Strand-Type"
	HeaderRoom = "Strand-Room"
)

// ErrConflict means the subject's last sequence was not the expected one:
// someone else appended first. The caller re-reads and re-checks.
var ErrConflict = errors.New("eventlog: subject changed since it was read")

// Log appends to and reads from Strand's streams.
type Log struct {
	nc *nats.Conn
	js jetstream.JetStream

	appends   *prometheus.CounterVec
	conflicts *prometheus.CounterVec

	mediaStore mediaStore
}

// RegisterMetrics exposes append counts and per-subject conflicts.
func (l *Log) RegisterMetrics(reg prometheus.Registerer) error {
	l.appends = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strand_log_appends_total", Help: "Records appended to the log, by record type.",
	}, []string{"type"})
	l.conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strand_log_append_conflicts_total", Help: "Appends refused because the subject moved on (expected-sequence conflicts), by record type.",
	}, []string{"type"})
	for _, c := range []prometheus.Collector{l.appends, l.conflicts} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// New wraps a NATS connection. It does not declare streams; call
// EnsureStreams once at start-up.
func New(nc *nats.Conn) (*Log, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Log{nc: nc, js: js}, nil
}

// JetStream exposes the underlying context for stream administration.
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// Connected reports whether the log's NATS connection is up now.
func (l *Log) Connected() bool { return l.nc.Status() == nats.CONNECTED }

// Conn exposes the NATS connection (for core-NATS notifications).
func (l *Log) Conn() *nats.Conn { return l.nc }

// AppendOptions control one append.
type AppendOptions struct {
	// ExpectSeq, when set, is the subject sequence the write was checked
	// against; 0 means "the subject must be empty".
	ExpectSeq *uint64
	// MsgID makes the append idempotent within DuplicateWindow: a second
	// append with the same ID returns the first one's sequence.
	MsgID string
	// Room is put in the Strand-Room header for room events.
	Room string
}

// Expect returns a pointer to seq, for AppendOptions.ExpectSeq.
func Expect(seq uint64) *uint64 { return &seq }

// Append writes a record and returns its stream sequence once JetStream
// has stored it.
func (l *Log) Append(ctx context.Context, subject string, r Record, o AppendOptions) (uint64, error) {
	seq, _, err := l.AppendDedup(ctx, subject, r, o)
	return seq, err
}

// AppendDedup is Append that also reports whether JetStream recognised
// o.MsgID as a duplicate, in which case the returned sequence is that of
// the first append and this record was not stored.
func (l *Log) AppendDedup(ctx context.Context, subject string, r Record, o AppendOptions) (seq uint64, dup bool, err error) {
	// Whatever is appended is permanent: a record the projection would
	// refuse for its shape is refused here, whichever handler built it.
	if rv, ok := r.(interface{ check() error }); ok {
		if err := rv.check(); err != nil {
			return 0, false, err
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return 0, false, fmt.Errorf("encode %s: %w", r.RecordType(), err)
	}
	ack, err := l.publish(ctx, subject, r.RecordType(), data, o)
	if err != nil {
		return 0, false, err
	}
	return ack.Sequence, ack.Duplicate, nil
}

func (l *Log) publish(ctx context.Context, subject, typ string, data []byte, o AppendOptions) (*jetstream.PubAck, error) {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(HeaderType, typ)
	if o.Room != "" {
		m.Header.Set(HeaderRoom, o.Room)
	}
	var opts []jetstream.PublishOpt
	if o.ExpectSeq != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*o.ExpectSeq))
	}
	if o.MsgID != "" {
		opts = append(opts, jetstream.WithMsgID(o.MsgID))
	}
	ack, err := l.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		if isConflict(err) {
			if l.conflicts != nil {
				l.conflicts.WithLabelValues(typ).Inc()
			}
			return nil, ErrConflict
		}
		return nil, fmt.Errorf("append %s to %s: %w", typ, subject, err)
	}
	if l.appends != nil {
		l.appends.WithLabelValues(typ).Inc()
	}
	return ack, nil
}

// isConflict matches JetStream's "wrong last sequence" by error code, never
// by text: 10071 on R1 streams, 10164 on clustered ones.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == 10071 || apiErr.ErrorCode == 10164
	}
	return false
}

// LastSeq returns the stream sequence of the newest record on subject, or
// 0 when the subject has none.
func (l *Log) LastSeq(ctx context.Context, stream, subject string) (uint64, error) {
	s, err := l.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last message on %s: %w", subject, err)
	}
	return m.Sequence, nil
}

// Last returns the newest record on subject; ok is false when the subject
// has none.
func (l *Log) Last(ctx context.Context, stream, subject string) (m Msg, ok bool, err error) {
	s, err := l.js.Stream(ctx, stream)
	if err != nil {
		return m, false, fmt.Errorf("stream %s: %w", stream, err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("last message on %s: %w", subject, err)
	}
	return Msg{Stream: stream, Seq: raw.Sequence, Subject: raw.Subject, Type: raw.Header.Get(HeaderType),
		Room: raw.Header.Get(HeaderRoom), Data: raw.Data, Time: raw.Time}, true, nil
}

// Get returns the record at seq in stream (for an append that JetStream
// recognised as a duplicate: the record the first append stored).
func (l *Log) Get(ctx context.Context, stream string, seq uint64) (Msg, error) {
	s, err := l.js.Stream(ctx, stream)
	if err != nil {
		return Msg{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		return Msg{}, fmt.Errorf("message %d of %s: %w", seq, stream, err)
	}
	return Msg{Stream: stream, Seq: raw.Sequence, Subject: raw.Subject, Type: raw.Header.Get(HeaderType),
		Room: raw.Header.Get(HeaderRoom), Data: raw.Data, Time: raw.Time}, nil
}

// Head returns the sequence of the newest record in a stream.
func (l *Log) Head(ctx context.Context, stream string) (uint64, error) {
	head, _, err := l.HeadAndCount(ctx, stream)
	return head, err
}

// HeadAndCount returns the sequence of the newest record in a stream and
// how many records it holds now (fewer than the head once some have aged
// out, none when all have).
func (l *Log) HeadAndCount(ctx context.Context, stream string) (head, count uint64, err error) {
	s, err := l.js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	return info.State.LastSeq, info.State.Msgs, nil
}

// Msg is one record read from the log.
type Msg struct {
	Stream  string
	Seq     uint64
	Subject string
	Type    string
	Room    string
	Data    []byte
	Time    time.Time
	// Pending is how many records of the stream (within the filter) came
	// after this one when it was delivered: the reader's lag.
	Pending uint64
}

// Decode parses the record in m.
func (m Msg) Decode() (Record, error) { return Decode(m.Type, m.Data) }

// ReadOptions control Read.
type ReadOptions struct {
	// From is the first sequence to deliver (1 for the whole stream).
	From uint64
	// MaxBatch bounds how many records one handler call receives.
	MaxBatch int
	// Subjects optionally filters the stream.
	Subjects []string
	// StopAt, when non-zero, makes Read return nil once it has delivered a
	// record with sequence >= StopAt (used by replay).
	StopAt uint64
}

// Read delivers the stream in order from o.From, in batches: the handler
// gets whatever has arrived (at least one record, at most MaxBatch), so a
// busy stream is applied in large batches and a quiet one without delay.
// It runs until ctx ends, the handler fails, or StopAt is reached.
//
// Read uses an ordered consumer: the reader's position lives with the
// reader (in Postgres for projectors), so there is no durable consumer
// state on the server that could disagree with it.
func (l *Log) Read(ctx context.Context, stream string, o ReadOptions, handle func(ctx context.Context, batch []Msg) error) error {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 512
	}
	if o.From == 0 {
		o.From = 1
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: o.Subjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    o.From,
	}
	cons, err := l.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer on %s: %w", stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * o.MaxBatch))
	if err != nil {
		return fmt.Errorf("consume %s: %w", stream, err)
	}
	defer it.Stop()

	ch := make(chan Msg, 2*o.MaxBatch)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			jm, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					errc <- fmt.Errorf("read %s: %w", stream, err)
				}
				close(ch)
				return
			}
			md, err := jm.Metadata()
			if err != nil {
				errc <- fmt.Errorf("read %s metadata: %w", stream, err)
				close(ch)
				return
			}
			h := jm.Headers()
			m := Msg{
				Stream:  stream,
				Seq:     md.Sequence.Stream,
				Subject: jm.Subject(),
				Type:    h.Get(HeaderType),
				Room:    h.Get(HeaderRoom),
				Data:    jm.Data(),
				Time:    md.Timestamp,
				Pending: md.NumPending,
			}
			select {
			case ch <- m:
			case <-done:
				return
			}
		}
	}()

	batch := make([]Msg, 0, o.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case m, ok := <-ch:
			if !ok {
				// The reader stopped: report its cause if it left one.
				select {
				case err := <-errc:
					return err
				default:
					return fmt.Errorf("read %s: message iterator closed", stream)
				}
			}
			batch = append(batch, m)
		}
	drain:
		for len(batch) < o.MaxBatch {
			select {
			case m, ok := <-ch:
				if !ok {
					break drain
				}
				batch = append(batch, m)
			default:
				break drain
			}
		}
		if err := handle(ctx, batch); err != nil {
			return err
		}
		last := batch[len(batch)-1]
		// Stop at StopAt, or when a filtered read has nothing pending (its
		// subjects' last record may lie before StopAt).
		if o.StopAt != 0 && (last.Seq >= o.StopAt || (len(o.Subjects) > 0 && last.Pending == 0)) {
			return nil
		}
	}
}
