package pushgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"strand/api/outbound"
	"strand/eventlog"
	"strand/eventlog/matrix"
)

// NotifyPath is the path the spec requires of an http pusher's URL.
const NotifyPath = matrix.PushGatewayNotifyPath

// maxGatewayResponse bounds how much of a gateway's answer is read.
const maxGatewayResponse = 64 << 10

// runSend is stage 2: PUSHES to the gateways.
func (p *Pusher) runSend(ctx context.Context) error {
	return p.Log.Work(ctx, eventlog.StreamPushes, eventlog.WorkOptions{
		Durable: sendConsumer,
		AckWait: p.AckWait,
		Workers: p.Senders,
		// Enough in flight that notifications waiting for their retry
		// (each holds a slot until it comes back) do not stop the rest.
		MaxAckPending: 16384,
	}, p.send)
}

// outcome of one attempt at a notification.
type outcome int

const (
	delivered outcome = iota // acknowledge
	dropped                  // acknowledge: trying again cannot help
	again                    // retry with back-off
)

// send handles one queued notification.
func (p *Pusher) send(ctx context.Context, m *eventlog.WorkMsg) {
	var q queued
	if err := json.Unmarshal(m.Data, &q); err != nil {
		p.Logger.Error("push: undecodable notification dropped", "seq", m.Seq, "err", err)
		p.ack(ctx, m, "send")
		return
	}
	// The request is not cut short when the role stops: a notification
	// the gateway has taken is acknowledged before the process exits,
	// so stopping the role sends nothing twice.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.AckWait/2)
	defer cancel()
	ok, err := p.Store.PusherExists(sctx, q.UserID, q.AppID, q.Pushkey)
	if err != nil {
		p.retry(m, "send", err)
		return
	}
	if !ok { // deleted since it was queued
		p.ack(ctx, m, "send")
		return
	}
	switch p.post(sctx, &q) {
	case delivered:
		p.sent.Inc()
		p.ack(ctx, m, "send")
	case dropped:
		p.failed.Inc()
		p.ack(ctx, m, "send")
	case again:
		p.failed.Inc()
		p.retry(m, "send", fmt.Errorf("push gateway of %s unavailable", q.UserID))
	}
}

// post sends q to its gateway and handles the answer.
func (p *Pusher) post(ctx context.Context, q *queued) outcome {
	var data map[string]json.RawMessage
	if err := json.Unmarshal(q.Data, &data); err != nil {
		p.Logger.Warn("push: pusher data is not an object", "user_id", q.UserID, "err", err)
		return dropped
	}
	var rawURL, format string
	_ = json.Unmarshal(data["url"], &rawURL)
	_ = json.Unmarshal(data["format"], &format)
	u, ok := matrix.PushGatewayURL(rawURL)
	if !ok {
		// POST /pushers/set refuses such URLs; one from elsewhere is
		// not worth a request.
		p.Logger.Warn("push: pusher URL is not a push gateway's", "user_id", q.UserID)
		return dropped
	}
	delete(data, "url") // the gateway's own address is not for it
	devData, _ := json.Marshal(data)
	n := q.Notification
	n.Devices = []device{{AppID: q.AppID, Pushkey: q.Pushkey, PushkeyTS: q.PushkeyTS, Data: devData, Tweaks: q.Tweaks}}
	var body any = map[string]any{"notification": n}
	if format == "event_id_only" {
		// Only what identifies the event: the client fetches the rest.
		body = map[string]any{"notification": map[string]any{"event_id": n.EventID, "room_id": n.RoomID,
			"prio": n.Prio, "counts": n.Counts, "devices": n.Devices}}
	}
	b, err := json.Marshal(body)
	if err != nil {
		p.Logger.Error("push: encode notification", "err", err)
		return dropped
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(b))
	if err != nil {
		return dropped
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := p.Client.Do(req)
	if err != nil {
		if outbound.IsForbidden(err) {
			p.Logger.Warn("push: gateway address not allowed (see --outbound-allow)", "user_id", q.UserID, "host", u.Host)
			return dropped
		}
		p.Logger.Debug("push: gateway unreachable", "host", u.Host, "err", err)
		return again
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, maxGatewayResponse))
	switch {
	case res.StatusCode >= 200 && res.StatusCode <= 299:
	case res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusRequestTimeout:
		p.Logger.Debug("push: gateway failed", "host", u.Host, "status", res.StatusCode)
		return again
	default:
		// The gateway refuses this request: the same request would be
		// refused again.
		p.Logger.Warn("push: gateway refused the notification", "host", u.Host, "status", res.StatusCode)
		return dropped
	}
	var ans struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(raw, &ans) // an answer without a list rejects nothing
	for _, k := range ans.Rejected {
		if k != q.Pushkey {
			continue
		}
		// "The homeserver should remove the pusher": as POST
		// /pushers/set with kind null would.
		p.rejected.Inc()
		rec := &eventlog.PusherSet{UserID: q.UserID, AppID: q.AppID, Pushkey: q.Pushkey}
		if _, err := p.Log.Append(ctx, eventlog.UserSubject(q.UserID), rec, eventlog.AppendOptions{}); err != nil {
			// The notification was delivered; the next one is
			// rejected again and tries again.
			p.Logger.Warn("push: could not delete a rejected pusher", "user_id", q.UserID, "err", err)
		} else {
			p.Logger.Info("push: gateway rejected a pushkey; pusher deleted", "user_id", q.UserID, "app_id", q.AppID)
		}
	}
	return delivered
}
