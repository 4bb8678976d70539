package syncstream

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"strand/eventlog"
	"strand/projector/store"
)

// Consumer reads the streams and feeds every record's touched rooms and
// users to the notifier, until its context ends. The responses themselves
// come from the projection (and, for typing and presence, from Ephemeral);
// the log tells a worker whom to wake, as soon as a record is stored.
//
// It reports its position on each stream through Readers (topic
// ReadersTopic(stream)), so that a write answers only once every sync
// worker has read it: the fast paths answer from what the worker has read.
type Consumer struct {
	Log       *eventlog.Log
	Store     *store.Store
	Notifier  *Notifier
	Ephemeral *Ephemeral
	Readers   *eventlog.Readers
	Logger    *slog.Logger
	// Watermark, when set, is told the lane of every ROOMS record read, so
	// that it knows ROOMS applied past lanes with nothing to apply, and
	// the worker reports as read only what is applied too (reported). It
	// also holds ROOMS records back from the notifier until they are
	// applied (held).
	Watermark *eventlog.Watermark

	setAside atomic.Uint64

	heldMu sync.Mutex    // orders releases: notifier records, reports, wakes
	held   []change      // ROOMS changes read but not applied yet (G), in order
	holds  chan struct{} // signalled when a change is held
}

// heldMax bounds the ROOMS changes a consumer holds back while ROOMS is not
// applied (a lane's projector is down): past it, the oldest are passed to
// the notifier at once, as if they were applied.
const heldMax = DefaultRecent

// RegisterMetrics exposes how many records the consumer set aside.
func (c *Consumer) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "strand_sync_set_aside_total", Help: "Records this sync worker could not read and passed over (the projector decides what they mean).",
	}, func() float64 { return float64(c.setAside.Load()) }))
}

// SetAside returns how many records the consumer passed over unread.
func (c *Consumer) SetAside() uint64 { return c.setAside.Load() }

// Run consumes until ctx ends or the log or the database fails.
func (c *Consumer) Run(ctx context.Context) error {
	log, n, eph, readers := c.Log, c.Notifier, c.Ephemeral, c.Readers
	g, ctx := errgroup.WithContext(ctx)
	for _, stream := range []string{eventlog.StreamRooms, eventlog.StreamAccounts, eventlog.StreamReceipts, eventlog.StreamEphemeral} {
		head, count, err := log.HeadAndCount(ctx, stream)
		if err != nil {
			return err
		}
		n.SetFloor(stream, head)
		if stream == eventlog.StreamRooms && c.Watermark != nil {
			c.Watermark.ObserveFrom(head)
			c.holds = make(chan struct{}, 1)
			g.Go(func() error { return c.releaseApplied(ctx) })
		}
		from := head + 1
		if stream == eventlog.StreamEphemeral {
			from = 1 // rebuild typing and presence from what the stream holds
			if count == 0 {
				eph.markCaughtUp() // nothing to read back (all aged out, or none yet)
			}
		}
		g.Go(func() error {
			readers.Beat(ctx, ReadersTopic(stream), func() uint64 { return c.reported(stream) })
			return nil
		})
		g.Go(func() error {
			return log.Read(ctx, stream, eventlog.ReadOptions{From: from}, func(ctx context.Context, batch []eventlog.Msg) error {
				for _, m := range batch {
					if stream == eventlog.StreamRooms && c.Watermark != nil {
						c.Watermark.Observe(m.Seq, m.Subject)
					}
					ch, err := touched(ctx, c.Store, eph, m, m.Seq > head)
					if err != nil {
						if !store.IsUnappliable(err) {
							return fmt.Errorf("sync consumer: %s seq %d: %w", stream, m.Seq, err)
						}
						// A record no reader can make sense of wakes
						// nobody, and must not stop the worker
						// (invariant 11); the projector sets it aside.
						c.passOver(m, err)
						ch = change{stream: m.Stream, seq: m.Seq}
					}
					switch {
					case stream == eventlog.StreamRooms && c.Watermark != nil:
						c.hold(ch) // ROOMS starts after head
					case m.Seq > head:
						n.Notify(ch)
					}
					if stream == eventlog.StreamEphemeral && m.Seq >= head {
						eph.markCaughtUp()
					}
				}
				if stream == eventlog.StreamRooms && c.Watermark != nil {
					if c.release() != 0 { // what the lanes applied before it was read
						select {
						case c.holds <- struct{}{}:
						default:
						}
					}
					return nil
				}
				readers.Report(ReadersTopic(stream), c.reported(stream))
				return nil
			})
		})
	}
	g.Go(func() error { return writeAtDeadlines(ctx, log, eph, typingExpiries(eph)) })
	g.Go(func() error { return writeAtDeadlines(ctx, log, eph, presenceDecay(eph)) })
	return g.Wait()
}

// reported is the position the worker reports as read on stream: for
// ROOMS, only as far as ROOMS is also applied (G), because a write that
// waits for the report must then be in every response this worker builds,
// and a response shows ROOMS as of G. Lanes apply independently, so a
// record read here may not be applicable yet though its own lane has it.
func (c *Consumer) reported(stream string) uint64 {
	read := c.Notifier.Consumed(stream)
	if stream == eventlog.StreamRooms && c.Watermark != nil {
		return min(read, c.Watermark.Applied(stream))
	}
	return read
}

// hold keeps a ROOMS change from the notifier until ROOMS is applied
// through it (release).
func (c *Consumer) hold(ch change) {
	c.heldMu.Lock()
	defer c.heldMu.Unlock()
	c.held = append(c.held, ch)
}

// releaseApplied releases held changes, and reports the ROOMS position
// again, whenever G rises. While a change is held and G stands still, it
// reads the lanes' positions every RefreshEvery: an applied notification
// is at-most-once, and a lost one must not keep the change from its
// long-polls until the lane's next record.
func (c *Consumer) releaseApplied(ctx context.Context) error {
	for {
		_, ch := c.Watermark.Changed(eventlog.StreamRooms)
		holds, refresh := c.holds, (<-chan time.Time)(nil)
		if c.release() != 0 {
			holds, refresh = nil, time.After(c.Watermark.RefreshEvery)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		case <-holds:
		case <-refresh:
			if err := c.Watermark.Refresh(ctx, eventlog.StreamRooms); err != nil && ctx.Err() == nil && c.Logger != nil {
				c.Logger.Warn("sync consumer: read the applied position", eventlog.LogErr, err)
			}
		}
	}
}

// release passes the held ROOMS changes that G covers to the notifier, and
// reports the new position before the notifier wakes anyone. A write waits
// for its lane's commit and for this report, and its record may wake
// thousands of long-polls: woken when the record was read, their responses
// were written before the projector's commit, the report and the writer's
// answer, which all waited behind them (about 0.5 s for 5,000 polls). Held
// until applied, a change wakes its polls once a build can show it anyway
// (as of G), and the writer is answered first.
//
// It returns the sequence of the oldest change still held (0 if none).
func (c *Consumer) release() (next uint64) {
	c.heldMu.Lock()
	defer c.heldMu.Unlock()
	g := c.Watermark.Applied(eventlog.StreamRooms)
	i := 0
	for i < len(c.held) && (c.held[i].seq <= g || len(c.held)-i > heldMax) {
		i++
	}
	c.Notifier.NotifyAll(c.held[:i], func() {
		c.Readers.Report(ReadersTopic(eventlog.StreamRooms), c.reported(eventlog.StreamRooms))
	})
	c.held = slices.Delete(c.held, 0, i)
	if len(c.held) > 0 {
		next = c.held[0].seq
	}
	return next
}

func (c *Consumer) passOver(m eventlog.Msg, err error) {
	c.setAside.Add(1)
	if c.Logger != nil {
		c.Logger.Error("sync worker passed over a record it cannot read", eventlog.LogStream, m.Stream, eventlog.LogSeq, m.Seq,
			"subject", m.Subject, eventlog.LogRecord, m.Type, eventlog.LogErr, err)
	}
}

// ReadersTopic is the eventlog.Readers topic under which sync workers
// report how far they have read stream.
func ReadersTopic(stream string) string { return eventlog.SyncReadersTopic(stream) }

// wakeRule is whom a record of some type wakes (see touched).
type wakeRule int

const (
	wakeUser       wakeRule = iota + 1 // the record's user_id (account records)
	wakeNobody                         // nothing a sync response shows
	wakeRoomEvents                     // the room, and the targets of its membership events
	wakeRoom                           // the record's room (receipts)
	wakeTyping                         // the room, after updating the ephemeral view
	wakePresence                       // the user and their rooms, after updating the ephemeral view
	wakeToDevice                       // the recipients
	wakeDeviceList                     // the user and everyone sharing a room with them
)

// wakes says, for every record type on a stream sync workers read, whom it
// wakes. TestEveryRecordTypeWakes holds it to eventlog's record table; a
// type missing here (one written by a newer Strand) wakes its user_id.
var wakes = map[string]wakeRule{
	(eventlog.UserRegistered{}).RecordType():          wakeUser,
	(eventlog.DeviceCreated{}).RecordType():           wakeUser,
	(eventlog.TokenRefreshed{}).RecordType():          wakeUser,
	(eventlog.TokenUsed{}).RecordType():               wakeUser,
	(eventlog.DeviceUpdated{}).RecordType():           wakeUser,
	(eventlog.PusherSet{}).RecordType():               wakeUser,
	(eventlog.DevicesDeleted{}).RecordType():          wakeDeviceList,
	(eventlog.PasswordChanged{}).RecordType():         wakeDeviceList,
	(eventlog.UserDeactivated{}).RecordType():         wakeDeviceList,
	(eventlog.FilterCreated{}).RecordType():           wakeUser,
	(eventlog.ContentReported{}).RecordType():         wakeNobody, // read only by administrators
	(eventlog.AccountDataSet{}).RecordType():          wakeUser,
	(eventlog.ProfileSet{}).RecordType():              wakeUser,
	(eventlog.KeysUploaded{}).RecordType():            wakeDeviceList,
	(eventlog.KeysClaimed{}).RecordType():             wakeUser,
	(eventlog.ToDeviceSent{}).RecordType():            wakeToDevice,
	(eventlog.ToDeviceAcked{}).RecordType():           wakeNobody, // only drops messages the device already has
	(eventlog.CrossSigningKeysSet{}).RecordType():     wakeDeviceList,
	(eventlog.SignaturesAdded{}).RecordType():         wakeDeviceList,
	(eventlog.KeyBackupVersionSet{}).RecordType():     wakeUser,
	(eventlog.KeyBackupVersionDeleted{}).RecordType(): wakeUser,
	(eventlog.RoomKeysPut{}).RecordType():             wakeUser,
	(eventlog.RoomKeysDeleted{}).RecordType():         wakeUser,
	(eventlog.RoomEvents{}).RecordType():              wakeRoomEvents,
	(eventlog.RoomPublished{}).RecordType():           wakeNobody,
	(eventlog.AliasSet{}).RecordType():                wakeNobody,
	(eventlog.AliasDeleted{}).RecordType():            wakeNobody,
	(eventlog.RoomForgotten{}).RecordType():           wakeUser,
	(eventlog.ReceiptSet{}).RecordType():              wakeRoom,
	(eventlog.TypingSet{}).RecordType():               wakeTyping,
	(eventlog.PresenceSet{}).RecordType():             wakePresence,
}

// touched extracts the rooms and users a record concerns (wakes): the room
// of a room record, the targets of its membership events (an invitee must
// wake before the room is one of theirs), the user of an account record,
// and the rooms of a user whose presence changed.
func touched(ctx context.Context, st *store.Store, eph *Ephemeral, m eventlog.Msg, live bool) (change, error) {
	c := change{stream: m.Stream, seq: m.Seq}
	var err error
	switch wakes[m.Type] {
	case wakeRoomEvents:
		err = touchedRoomEvents(&c, m, live)
	case wakeNobody:
	case wakeRoom, wakeTyping, wakePresence:
		err = touchedEphemeral(ctx, &c, st, eph, m, live)
	case wakeToDevice:
		var r eventlog.ToDeviceSent
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return c, store.Unappliable(err)
		}
		for u := range r.Messages {
			c.users = append(c.users, u)
		}
	case wakeDeviceList:
		err = touchedDeviceList(ctx, &c, st, m, live)
	default: // wakeUser, and types this version does not know
		var r struct {
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return c, store.Unappliable(err)
		}
		if r.UserID != "" {
			c.users = []string{r.UserID}
		}
	}
	return c, err
}

// touchedRoomEvents: the room, and the targets of its membership events.
func touchedRoomEvents(c *change, m eventlog.Msg, live bool) error {
	var r eventlog.RoomEvents
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return store.Unappliable(err)
	}
	c.rooms = []string{r.RoomID}
	if live {
		// An event this worker cannot parse is left to builds (the
		// projector decides whether the record is valid).
		if evs, err := windowEvents(m.Seq, &r); err == nil {
			c.events = evs
			for _, e := range evs {
				if e.Type == "m.room.member" && e.StateKey != nil {
					c.users = append(c.users, *e.StateKey)
				}
			}
			return nil
		}
	}
	for _, raw := range r.Events {
		var ev struct {
			Type     string  `json:"type"`
			StateKey *string `json:"state_key"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			return store.Unappliable(err)
		}
		if ev.Type == "m.room.member" && ev.StateKey != nil {
			c.users = append(c.users, *ev.StateKey)
		}
	}
	return nil
}

// touchedEphemeral: receipts, typing and presence; the last two also
// update the worker's ephemeral view.
func touchedEphemeral(ctx context.Context, c *change, st *store.Store, eph *Ephemeral, m eventlog.Msg, live bool) error {
	rec, err := m.Decode()
	if err != nil {
		return store.Unappliable(err)
	}
	switch r := rec.(type) {
	case *eventlog.ReceiptSet:
		c.rooms = []string{r.RoomID}
	case *eventlog.TypingSet:
		eph.apply(m.Seq, m.Time, r)
		c.rooms = []string{r.RoomID}
		c.typing = live
	case *eventlog.PresenceSet:
		eph.apply(m.Seq, m.Time, r)
		c.users = []string{r.UserID}
		if live {
			rooms, err := st.JoinedRooms(ctx, r.UserID)
			if err != nil {
				return err
			}
			c.rooms = rooms
			c.presence = r
		}
	}
	return nil
}

// touchedDeviceList: the user's device list may have changed, so everyone
// sharing a room with them is told (device_lists.changed).
func touchedDeviceList(ctx context.Context, c *change, st *store.Store, m eventlog.Msg, live bool) error {
	var r struct {
		UserID     string                     `json:"user_id"`
		Signatures map[string]json.RawMessage `json:"signatures"`
		DeviceKeys json.RawMessage            `json:"device_keys"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return store.Unappliable(err)
	}
	c.users = []string{r.UserID}
	if m.Type == (eventlog.KeysUploaded{}).RecordType() && len(r.DeviceKeys) == 0 {
		return nil // one-time or fallback keys only: the owner's counts
	}
	owners := []string{r.UserID}
	for u := range r.Signatures {
		if u != r.UserID {
			c.users = append(c.users, u)
			owners = append(owners, u)
		}
	}
	if live {
		for _, u := range owners {
			rooms, err := st.JoinedRooms(ctx, u)
			if err != nil {
				return err
			}
			c.rooms = append(c.rooms, rooms...)
		}
	}
	return nil
}

// deadlineRecord is a record a worker writes when a deadline passes.
type deadlineRecord struct {
	subject, msgID, room string
	rec                  eventlog.Record
}

// writeAtDeadlines writes the records that scan says are due, at the
// moment they fall due. Every worker does so; the message IDs make
// JetStream keep one of each. Being records, they advance tokens and wake
// long-polls like any other change. scan runs under eph.mu and returns the
// due records and the next deadline (unix ms, 0 for none). It starts only
// once the worker's view holds the whole stream, so that a worker still
// reading old records does not write outdated ones.
func writeAtDeadlines(ctx context.Context, log *eventlog.Log, eph *Ephemeral, scan func(now int64) ([]deadlineRecord, int64)) error {
	select {
	case <-eph.caughtUp:
	case <-ctx.Done():
		return ctx.Err()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now().UnixMilli()
		eph.mu.Lock()
		due, next := scan(now)
		ch := eph.advanced
		eph.mu.Unlock()
		for _, d := range due {
			if _, err := log.Append(ctx, d.subject, d.rec, eventlog.AppendOptions{MsgID: d.msgID, Room: d.room}); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				next = now + 1000 // the log is unavailable: try again shortly
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

// typingExpiries ends a typing notice when it runs out.
func typingExpiries(eph *Ephemeral) func(now int64) ([]deadlineRecord, int64) {
	return func(now int64) (due []deadlineRecord, next int64) {
		for room, users := range eph.typing {
			for u, t := range users {
				switch {
				case t.expires <= now && !t.ended:
					due = append(due, deadlineRecord{
						subject: eventlog.TypingSubject(room), room: room,
						msgID: fmt.Sprintf("typing-expired|%s|%s|%d", room, u, t.expires),
						rec:   &eventlog.TypingSet{RoomID: room, UserID: u, ExpiresTS: t.expires},
					})
				case t.expires > now && (next == 0 || t.expires < next):
					next = t.expires
				}
			}
		}
		return due, next
	}
}

// presenceDecay writes a user down as unavailable, then offline, when they
// have been inactive for IdleAfter, then OfflineAfter, so that the users
// who share a room with them are told, not just those who ask. Any
// activity is a newer record with a later last-active time, which moves
// both deadlines.
func presenceDecay(eph *Ephemeral) func(now int64) ([]deadlineRecord, int64) {
	return func(now int64) (due []deadlineRecord, next int64) {
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
			if at > now {
				if next == 0 || at < next {
					next = at
				}
				continue
			}
			d := r
			d.Presence = to
			due = append(due, deadlineRecord{
				subject: eventlog.PresenceSubject(r.UserID),
				msgID:   fmt.Sprintf("presence-%s|%s|%d", to, r.UserID, r.LastActiveTS),
				rec:     &d,
			})
		}
		return due, next
	}
}
