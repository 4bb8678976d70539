// Package pushgateway delivers notifications to HTTP pushers through the
// Matrix Push Gateway API (POST {data.url} = /_matrix/push/v1/notify).
//
// Delivery is driven from the log, in two stages, each a durable
// JetStream work consumer shared by every process of the pusher role:
//
//  1. match: for each room record on ROOMS, once the projection has
//     applied it, find the pushers of the room's members, evaluate each
//     member's push rules, and enqueue one notification per (event,
//     pusher) on the PUSHES work queue, with a Nats-Msg-Id made of the
//     event ID and the pusher, so a room record delivered again enqueues
//     nothing twice; then acknowledge the room record.
//  2. send: for each queued notification, POST it to the pusher's
//     gateway; acknowledge it on a 2xx, retry it with back-off on a
//     network error or 5xx, and delete the pusher (a pusher.set record
//     without kind) when the gateway rejects its pushkey.
//
// A gateway that is down delays only its own notifications: each one is
// retried on its own schedule while the others are sent.
package pushgateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"strand/eventlog"
	"strand/projector/store"
)

// Durable consumer names: every pusher process uses the same two.
const (
	matchConsumer = "strand-push-match"
	sendConsumer  = "strand-push-send"
)

// queuedType is the Strand-Type of a notification on PUSHES.
const queuedType = "push.queued"

// Defaults of Pusher's settings.
const (
	DefaultSenders  = 16
	DefaultMatchers = 4
	DefaultAckWait  = time.Minute
	DefaultRetryMin = time.Second
	DefaultRetryMax = 5 * time.Minute
)

// Pusher is the pusher role: both stages.
type Pusher struct {
	Log       *eventlog.Log
	Store     *store.Store
	Watermark *eventlog.Watermark
	// Client makes the requests to push gateways: outbound.NewClient,
	// so that a pusher's URL cannot reach internal addresses unless
	// --outbound-allow says so.
	Client *http.Client
	Logger *slog.Logger

	// Senders is how many notifications this process sends at once, and
	// Matchers how many room records it matches at once.
	Senders, Matchers int
	// AckWait is how long a stage may hold a record unacknowledged
	// before JetStream delivers it again (to any process): a process
	// that died is taken over after it. A gateway request is bounded by
	// half of it, so JetStream never delivers a notification again while
	// a request for it is still running.
	AckWait time.Duration
	// RetryMin and RetryMax bound the back-off between attempts at a
	// notification whose gateway failed (doubling from RetryMin).
	RetryMin, RetryMax time.Duration

	rules                          rulesCache
	gate                           pusherGate
	sent, failed, rejected, queued prometheus.Counter
}

// RegisterMetrics exposes the delivery counters.
func (p *Pusher) RegisterMetrics(reg prometheus.Registerer) error {
	p.initMetrics()
	for _, c := range []prometheus.Collector{p.sent, p.failed, p.rejected, p.queued} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pusher) initMetrics() {
	if p.sent != nil {
		return
	}
	p.sent = prometheus.NewCounter(prometheus.CounterOpts{Name: "strand_push_sent_total",
		Help: "Notifications a push gateway accepted."})
	p.failed = prometheus.NewCounter(prometheus.CounterOpts{Name: "strand_push_failed_total",
		Help: "Attempts to send a notification that failed (network error or error status; most are retried)."})
	p.rejected = prometheus.NewCounter(prometheus.CounterOpts{Name: "strand_push_rejected_total",
		Help: "Pushkeys a push gateway rejected (their pushers are deleted)."})
	p.queued = prometheus.NewCounter(prometheus.CounterOpts{Name: "strand_push_queued_total",
		Help: "Notifications queued for delivery, one per event and pusher."})
}

func (p *Pusher) defaults() {
	p.initMetrics()
	if p.gate.query == nil {
		p.gate.query = p.Store.AnyHTTPPushers
		p.gate.holdYes = gateHoldYes
	}
	if p.Senders <= 0 {
		p.Senders = DefaultSenders
	}
	if p.Matchers <= 0 {
		p.Matchers = DefaultMatchers
	}
	if p.AckWait <= 0 {
		p.AckWait = DefaultAckWait
	}
	if p.RetryMin <= 0 {
		p.RetryMin = DefaultRetryMin
	}
	if p.RetryMax < p.RetryMin {
		p.RetryMax = max(DefaultRetryMax, p.RetryMin)
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run runs both stages until ctx ends. A stage whose consumer fails (NATS
// restarting) starts again after a pause; the records it held are
// delivered again.
func (p *Pusher) Run(ctx context.Context) error {
	p.defaults()
	errc := make(chan error, 2)
	go func() { errc <- p.keep(ctx, "match", p.runMatch) }()
	go func() { errc <- p.keep(ctx, "send", p.runSend) }()
	err := <-errc
	err2 := <-errc
	if err == nil {
		err = err2
	}
	return err
}

// keep runs stage until ctx ends, starting it again after failures.
func (p *Pusher) keep(ctx context.Context, name string, stage func(context.Context) error) error {
	for {
		err := stage(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.Logger.Warn("push stage stopped; starting again", "stage", name, "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// backoff is the wait before attempt n+1 of a record delivered n times.
func (p *Pusher) backoff(delivered uint64) time.Duration {
	d := p.RetryMin
	for i := uint64(1); i < delivered && d < p.RetryMax; i++ {
		d *= 2
	}
	return min(d, p.RetryMax)
}

// retry asks for m again after its back-off, logging why.
func (p *Pusher) retry(m *eventlog.WorkMsg, stage string, err error) {
	d := p.backoff(m.Delivered)
	if !errors.Is(err, context.Canceled) {
		p.Logger.Warn("push: will retry", "stage", stage, "seq", m.Seq, "attempt", m.Delivered, "in", d, "err", err)
	}
	if rerr := m.Retry(d); rerr != nil {
		p.Logger.Debug("push: retry not recorded (the record comes back after its ack wait)", "err", rerr)
	}
}

// ack acknowledges m; a lost acknowledgement means the record comes
// again, which stage 1 absorbs (message IDs) and stage 2 cannot.
func (p *Pusher) ack(ctx context.Context, m *eventlog.WorkMsg, stage string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := m.Ack(actx); err != nil {
		p.Logger.Warn("push: acknowledgement failed", "stage", stage, "seq", m.Seq, "err", err)
	}
}

// Backlog returns how much delivery work is left: room records not yet
// matched plus notifications not yet sent (or waiting for a retry). Zero
// means every room record on the log so far has been pushed.
func (p *Pusher) Backlog(ctx context.Context) (uint64, error) {
	// Matching first: once it has nothing left, it queues nothing more
	// that the second count could miss.
	m, err := p.Log.WorkBacklog(ctx, eventlog.StreamRooms, matchConsumer)
	if err != nil {
		return 0, err
	}
	s, err := p.Log.WorkBacklog(ctx, eventlog.StreamPushes, sendConsumer)
	if err != nil {
		return 0, err
	}
	return m + s, nil
}
