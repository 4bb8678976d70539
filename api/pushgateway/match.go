package pushgateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"strand/eventlog"
	"strand/projector/store"
)

// queued is one notification for one pusher, as stage 1 puts it on
// PUSHES: everything stage 2 needs, so sending reads nothing but whether
// the pusher still exists.
type queued struct {
	UserID  string          `json:"user_id"`
	AppID   string          `json:"app_id"`
	Pushkey string          `json:"pushkey"`
	Data    json.RawMessage `json:"data"`
	// PushkeyTS is when the pusher was last set, in seconds.
	PushkeyTS    int64          `json:"pushkey_ts"`
	Tweaks       map[string]any `json:"tweaks"`
	Notification notification   `json:"notification"`
}

// notification is the gateway API's notification object without its
// devices, which stage 2 adds.
type notification struct {
	EventID           string          `json:"event_id"`
	RoomID            string          `json:"room_id"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	Membership        string          `json:"membership,omitempty"`
	Prio              string          `json:"prio"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            counts          `json:"counts"`
	Devices           []device        `json:"devices"`
}

type counts struct {
	Unread int `json:"unread"`
}

type device struct {
	AppID     string          `json:"app_id"`
	Pushkey   string          `json:"pushkey"`
	PushkeyTS int64           `json:"pushkey_ts,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Tweaks    map[string]any  `json:"tweaks"`
}

// runMatch is stage 1: ROOMS to PUSHES. The consumer starts at the
// stream's end when first created: history is not pushed.
func (p *Pusher) runMatch(ctx context.Context) error {
	return p.Log.Work(ctx, eventlog.StreamRooms, eventlog.WorkOptions{
		Durable:    matchConsumer,
		Subjects:   []string{"room.>"},
		DeliverNew: true,
		AckWait:    p.AckWait,
		Workers:    p.Matchers,
	}, p.match)
}

// match handles one room record: it waits until the projection has
// applied it, then queues its notifications, then acknowledges it. Any
// failure leaves it to be delivered again, and the message IDs make the
// notifications already queued count once.
func (p *Pusher) match(ctx context.Context, m *eventlog.WorkMsg) {
	if m.Type != (eventlog.RoomEvents{}).RecordType() {
		p.ack(ctx, m, "match")
		return
	}
	if err := p.queueRecord(ctx, m); err != nil {
		p.retry(m, "match", err)
		return
	}
	p.ack(ctx, m, "match")
}

func (p *Pusher) queueRecord(ctx context.Context, m *eventlog.WorkMsg) error {
	// Without any http pusher there is nothing to queue, and no need to
	// wait for the projection (the gate's read began after the record was
	// appended, so it sees every pusher set before it).
	if any, err := p.gate.anyPushers(ctx); err != nil {
		return err
	} else if !any {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, p.AckWait/2)
	// The record's own lane: what is read is its room's state at its
	// position, and counts over the users' rooms as they are now.
	err := p.Watermark.Wait(wctx, eventlog.LaneName(eventlog.SubjectLane(m.Subject)), m.Seq)
	cancel()
	if err != nil {
		return fmt.Errorf("wait for the projection of record %d: %w", m.Seq, err)
	}
	_ = m.InProgress() // the wait may have been long: restart the ack wait
	evs, err := p.Store.RecordEvents(ctx, m.Seq)
	if err != nil {
		return err
	}
	for i := range evs {
		if err := p.queueEvent(ctx, &evs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pusher) queueEvent(ctx context.Context, ev *store.RecordEvent) error {
	var e struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(ev.Client, &e)
	var mem struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(e.Content, &mem)
	var also []string
	if ev.Type == "m.room.member" && ev.StateKey != nil && mem.Membership == "invite" {
		also = []string{*ev.StateKey} // an invite may notify its invitee, who has not joined
	}
	targets, err := p.Store.PushTargets(ctx, ev.RoomID, ev.Pos, ev.Sender, also)
	if err != nil || len(targets) == 0 {
		return err
	}
	pr, err := p.Store.PushRoom(ctx, ev.RoomID)
	if err != nil {
		return err
	}
	decisions, rulesets := p.decide(ev, pr, targets)
	if len(decisions) == 0 {
		return nil
	}
	room, err := p.Store.NotifyRoomInfo(ctx, ev.RoomID, ev.Sender)
	if err != nil {
		return err
	}
	unread, err := p.unread(ctx, rulesets)
	if err != nil {
		return err
	}
	var items []eventlog.WorkItem
	for _, t := range targets {
		d, ok := decisions[t.UserID]
		if !ok || !d.Notify {
			continue
		}
		n := notification{EventID: ev.EventID, RoomID: ev.RoomID, Type: ev.Type, Sender: ev.Sender,
			SenderDisplayName: room.SenderDisplayName, RoomName: room.Name, RoomAlias: room.CanonicalAlias,
			Prio: "low", Content: e.Content, Counts: counts{Unread: unread[t.UserID]}}
		if ev.Type == "m.room.member" && ev.StateKey != nil {
			n.Membership = mem.Membership
			n.UserIsTarget = *ev.StateKey == t.UserID
		}
		// High priority wakes the phone at once: for what rings or
		// highlights, and for encrypted events, whose content the
		// server cannot judge (as Synapse does).
		if d.Highlight || d.Sound != "" || ev.Type == "m.room.encrypted" {
			n.Prio = "high"
		}
		tweaks := d.Tweaks
		if tweaks == nil {
			tweaks = map[string]any{}
		}
		q := queued{UserID: t.UserID, AppID: t.AppID, Pushkey: t.Pushkey, Data: t.Data, PushkeyTS: t.TS / 1000,
			Tweaks: tweaks, Notification: n}
		data, err := json.Marshal(q)
		if err != nil {
			return fmt.Errorf("encode notification: %w", err)
		}
		items = append(items, eventlog.WorkItem{Subject: eventlog.PushSubject(t.UserID), Type: queuedType, Data: data,
			MsgID: pushMsgID(ev.EventID, t)})
	}
	dups, err := p.Log.Enqueue(ctx, items)
	if err != nil {
		return err
	}
	p.queued.Add(float64(len(items) - dups))
	return nil
}

// pushMsgID identifies one notification of one event for one pusher:
// the same on every delivery of the room record, so JetStream stores it
// once. Hashed, because pushkeys may be 512 bytes.
func pushMsgID(eventID string, t store.PushTarget) string {
	h := sha256.New()
	for _, s := range []string{eventID, t.UserID, t.AppID, t.Pushkey} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "push-" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
