package syncstream

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"strand/eventlog"
	"strand/projector/store"
)

// Consume reads the streams and feeds every record's touched rooms and
// users to the notifier, until ctx ends. The responses themselves come from
// the projection (and, for typing and presence, from eph); the log tells a
// worker whom to wake, as soon as a record is stored.
func Consume(ctx context.Context, log *eventlog.Log, st *store.Store, n *Notifier, eph *Ephemeral) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, stream := range []string{eventlog.StreamRooms, eventlog.StreamAccounts, eventlog.StreamReceipts, eventlog.StreamEphemeral} {
		head, err := log.Head(ctx, stream)
		if err != nil {
			return err
		}
		n.SetFloor(stream, head)
		from := head + 1
		if stream == eventlog.StreamEphemeral {
			from = 1 // rebuild typing and presence from what the stream holds
		}
		g.Go(func() error {
			return log.Read(ctx, stream, eventlog.ReadOptions{From: from}, func(ctx context.Context, batch []eventlog.Msg) error {
				for _, m := range batch {
					c, err := touched(ctx, st, eph, m, m.Seq > head)
					if err != nil {
						return fmt.Errorf("sync consumer: %s seq %d: %w", stream, m.Seq, err)
					}
					if m.Seq > head {
						n.Notify(c)
					}
				}
				return nil
			})
		})
	}
	g.Go(func() error { return expireTyping(ctx, log, eph) })
	g.Go(func() error { return decayPresence(ctx, log, eph) })
	return g.Wait()
}

// touched extracts the rooms and users a record concerns: the room of a
// room record, the targets of its membership events (an invitee must wake
// before the room is one of theirs), the user of an account record, and
// the rooms of a user whose presence changed.
func touched(ctx context.Context, st *store.Store, eph *Ephemeral, m eventlog.Msg, live bool) (change, error) {
	c := change{stream: m.Stream, seq: m.Seq}
	switch m.Type {
	case (eventlog.RoomEvents{}).RecordType():
		var r eventlog.RoomEvents
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return c, err
		}
		c.rooms = []string{r.RoomID}
		for _, raw := range r.Events {
			var ev struct {
				Type     string  `json:"type"`
				StateKey *string `json:"state_key"`
			}
			if err := json.Unmarshal(raw, &ev); err != nil {
				return c, err
			}
			if ev.Type == "m.room.member" && ev.StateKey != nil {
				c.users = append(c.users, *ev.StateKey)
			}
		}
	case (eventlog.RoomPublished{}).RecordType(), (eventlog.AliasSet{}).RecordType(), (eventlog.AliasDeleted{}).RecordType():
		// Nothing a sync response shows.
	case (eventlog.ReceiptSet{}).RecordType(), (eventlog.TypingSet{}).RecordType(), (eventlog.PresenceSet{}).RecordType():
		rec, err := m.Decode()
		if err != nil {
			return c, err
		}
		switch r := rec.(type) {
		case *eventlog.ReceiptSet:
			c.rooms = []string{r.RoomID}
		case *eventlog.TypingSet:
			eph.apply(m.Seq, m.Time, r)
			c.rooms = []string{r.RoomID}
		case *eventlog.PresenceSet:
			eph.apply(m.Seq, m.Time, r)
			c.users = []string{r.UserID}
			if live {
				rooms, err := st.JoinedRooms(ctx, r.UserID)
				if err != nil {
					return c, err
				}
				c.rooms = rooms
			}
		}
	default:
		var r struct {
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return c, err
		}
		if r.UserID != "" {
			c.users = []string{r.UserID}
		}
	}
	return c, nil
}

// expireTyping writes a stop record when a typing notice runs out, at the
// moment it does. Every worker does so; the message ID makes JetStream
// keep one of them. Being a record, the expiry advances every token like
// any typing change and wakes the room's long-polls through the consumer.
func expireTyping(ctx context.Context, log *eventlog.Log, eph *Ephemeral) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now().UnixMilli()
		next := int64(0)
		var due []eventlog.TypingSet
		eph.mu.Lock()
		for room, users := range eph.typing {
			for u, t := range users {
				switch {
				case t.expires <= now && !t.ended:
					due = append(due, eventlog.TypingSet{RoomID: room, UserID: u, ExpiresTS: t.expires})
				case t.expires > now && (next == 0 || t.expires < next):
					next = t.expires
				}
			}
		}
		ch := eph.advanced
		eph.mu.Unlock()
		for _, rec := range due {
			id := fmt.Sprintf("typing-expired|%s|%s|%d", rec.RoomID, rec.UserID, rec.ExpiresTS)
			if _, err := log.Append(ctx, eventlog.TypingSubject(rec.RoomID), &rec, eventlog.AppendOptions{MsgID: id, Room: rec.RoomID}); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// The log is unavailable; try again shortly.
				next = now + 1000
			}
		}
		wait := time.Hour
		if next != 0 {
			wait = time.Duration(max(next-now, 1)) * time.Millisecond
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-ch:
		}
	}
}

// decayPresence writes a user down as unavailable, then offline, when they
// have been inactive for IdleAfter, then OfflineAfter, so that the users
// who share a room with them are told, not just those who ask. Every
// worker writes the same record with the same message ID; JetStream keeps
// one. Any activity (a sync, a presence update) is a newer record with a
// later last-active time, which moves both deadlines.
func decayPresence(ctx context.Context, log *eventlog.Log, eph *Ephemeral) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now().UnixMilli()
		next := int64(0)
		var due []eventlog.PresenceSet
		eph.mu.Lock()
		idle, offline := eph.IdleAfter.Milliseconds(), eph.OfflineAfter.Milliseconds()
		for _, p := range eph.presence {
			r := p.rec
			var at int64
			var to string
			switch r.Presence {
			case "online":
				at, to = r.LastActiveTS+idle, "unavailable"
			case "unavailable":
				at, to = r.LastActiveTS+offline, "offline"
			default:
				continue
			}
			if at <= now {
				d := r
				d.Presence = to
				due = append(due, d)
			} else if next == 0 || at < next {
				next = at
			}
		}
		ch := eph.advanced
		eph.mu.Unlock()
		for _, rec := range due {
			id := fmt.Sprintf("presence-%s|%s|%d", rec.Presence, rec.UserID, rec.LastActiveTS)
			if _, err := log.Append(ctx, eventlog.PresenceSubject(rec.UserID), &rec, eventlog.AppendOptions{MsgID: id}); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				next = now + 1000 // log unavailable: try again shortly
			}
		}
		wait := time.Hour
		if next != 0 {
			wait = time.Duration(max(next-now, 1)) * time.Millisecond
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-ch:
		}
	}
}
