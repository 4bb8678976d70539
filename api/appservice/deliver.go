package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"strand/eventlog"
	"strand/eventlog/matrix"
	"strand/projector/store"
)

// Deliverer pushes the room events each service is interested in to it,
// in log order, in transactions (the appservice role).
//
// Each service has its own reader of ROOMS, which starts after the
// service's delivered position (eventlog.AppserviceState). A batch of
// records is matched against the service's namespaces, using the
// projection once it has applied the batch (room aliases and joined
// members are projected state). If any event matches, the transaction
// (its ID, the records it covers, the IDs of its events) is written to
// the state first, then sent; only a 2xx answer moves the position past
// it. A failure (no connection, a timeout, any other status, a 403 for a
// wrong hs_token included) ends the reader; the transaction is sent again,
// the same ID with the same events, with exponential back-off, until the
// service takes it, and reading resumes after it. A restart finds the
// transaction in the state and does the same, so nothing is skipped and
// nothing is sent under two IDs.
type Deliverer struct {
	Log       *eventlog.Log
	Store     *store.Store
	Watermark *eventlog.Watermark
	Client    *Client
	Services  *Set
	Server    matrix.ServerName
	Logger    *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts
	// (defaults 500 ms and 5 min).
	MinBackoff, MaxBackoff time.Duration
	// MaxRecords bounds the ROOMS records one transaction covers
	// (default 100).
	MaxRecords int

	txns     *prometheus.CounterVec // nil until RegisterMetrics
	position *prometheus.GaugeVec
}

// RegisterMetrics counts transactions sent (by service, stream and
// result) and exposes each lane's delivered position.
func (d *Deliverer) RegisterMetrics(reg prometheus.Registerer) error {
	d.txns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strand_appservice_transactions_total",
		Help: "Transactions sent to application services, by result (ok, failed: to be sent again)."}, []string{"appservice", "stream", "result"})
	d.position = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strand_appservice_position",
		Help: "Stream sequence through which each application service has been served."}, []string{"appservice", "stream"})
	for _, c := range []prometheus.Collector{d.txns, d.position} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// send sends one transaction and counts it.
func (d *Deliverer) send(ctx context.Context, reg *Registration, ln *lane, id string, body Transaction) error {
	err := d.Client.SendTransaction(ctx, reg, id, body)
	if d.txns != nil {
		result := "ok"
		if err != nil {
			result = "failed"
		}
		d.txns.WithLabelValues(reg.ID, ln.stream, result).Inc()
	}
	if err != nil {
		return fmt.Errorf("transaction %s: %w", id, err)
	}
	return nil
}

func (d *Deliverer) setPosition(reg *Registration, ln *lane, seq uint64) {
	if d.position != nil {
		d.position.WithLabelValues(reg.ID, ln.stream).Set(float64(seq))
	}
}

// lane is one stream delivered to one service: ROOMS (room events),
// and RECEIPTS and EPHEMERAL (ephemeral data) for services that asked for
// it. Each lane has its own position and transactions.
type lane struct {
	stream string
	key    string // the service's key in the state bucket
	prefix string // of its transaction IDs
	typing map[string]map[string]int64
}

// Run delivers to every service with a url until ctx ends.
func (d *Deliverer) Run(ctx context.Context) error {
	if d.MinBackoff <= 0 {
		d.MinBackoff = 500 * time.Millisecond
	}
	if d.MaxBackoff <= 0 {
		d.MaxBackoff = 5 * time.Minute
	}
	if d.MaxRecords <= 0 {
		d.MaxRecords = 100
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, reg := range d.Services.All() {
		if !reg.HasURL() {
			continue
		}
		lanes := []*lane{{stream: eventlog.StreamRooms, key: reg.ID}}
		if reg.Ephemeral() {
			lanes = append(lanes,
				&lane{stream: eventlog.StreamReceipts, key: reg.ID + "\n" + eventlog.StreamReceipts, prefix: "c"},
				&lane{stream: eventlog.StreamEphemeral, key: reg.ID + "\n" + eventlog.StreamEphemeral, prefix: "e", typing: map[string]map[string]int64{}},
				&lane{stream: eventlog.StreamAccounts, key: reg.ID + "\n" + eventlog.StreamAccounts, prefix: "d"})
		}
		for _, ln := range lanes {
			g.Go(func() error { return d.runLane(ctx, reg, ln) })
		}
	}
	return g.Wait()
}

func (d *Deliverer) runLane(ctx context.Context, reg *Registration, ln *lane) error {
	logger := d.Logger.With("appservice", reg.ID, eventlog.LogStream, ln.stream)
	wait := d.MinBackoff
	for {
		progressed, err := d.deliver(ctx, reg, ln, logger)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			wait = d.MinBackoff
		}
		logger.Warn("application service delivery interrupted; retrying", eventlog.LogErr, err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if !progressed {
			wait = min(2*wait, d.MaxBackoff)
		}
	}
}

// skipSaveEvery bounds how often the position is written while records
// of no interest go by: re-reading them after a restart costs nothing.
const skipSaveEvery = 2 * time.Second

// deliver sends the lane's in-flight transaction, if any, then reads on
// until an error. progressed reports whether a transaction was delivered.
func (d *Deliverer) deliver(ctx context.Context, reg *Registration, ln *lane, logger *slog.Logger) (progressed bool, err error) {
	st, rev, err := d.Log.AppserviceState(ctx, ln.key)
	if err != nil {
		return false, err
	}
	if rev == 0 {
		// A service new to this server starts with what happens from now
		// on, not with the server's whole history.
		head, err := d.Log.Head(ctx, ln.stream)
		if err != nil {
			return false, err
		}
		st.Through = head
		if rev, err = d.Log.PutAppserviceState(ctx, ln.key, st, 0); err != nil {
			return false, err
		}
		logger.Info("application service delivery starts", eventlog.LogSeq, head)
	}
	if st.InFlight != nil {
		txn := *st.InFlight
		body := Transaction{Ephemeral: txn.Ephemeral, ToDevice: txn.ToDevice}
		switch {
		case ln.stream == eventlog.StreamRooms:
			if body.Events, err = d.reread(ctx, txn); err != nil {
				return false, err
			}
		case txn.Rebuild:
			if body, err = d.rebuild(ctx, reg, ln, txn); err != nil {
				return false, err
			}
		}
		if err := d.send(ctx, reg, ln, txn.ID, body); err != nil {
			return false, err
		}
		st.Through, st.InFlight = txn.To, nil
		d.setPosition(reg, ln, st.Through)
		if rev, err = d.Log.PutAppserviceState(ctx, ln.key, st, rev); err != nil {
			return true, err
		}
		logger.Debug("transaction delivered", "txn_id", txn.ID)
		progressed = true
	}
	lastSave := time.Now()
	// process turns records into at most one transaction and sends it.
	process := func(ctx context.Context, batch []eventlog.Msg) error {
		last := batch[len(batch)-1].Seq
		ids, body, err := d.build(ctx, reg, ln, batch)
		if err != nil {
			return err
		}
		if len(body.Events) == 0 && len(body.Ephemeral) == 0 && len(body.ToDevice) == 0 {
			st.Through = last
			d.setPosition(reg, ln, last)
			if time.Since(lastSave) >= skipSaveEvery {
				if rev, err = d.Log.PutAppserviceState(ctx, ln.key, st, rev); err != nil {
					return err
				}
				lastSave = time.Now()
			}
			return nil
		}
		// Record the transaction before sending it: whatever happens
		// next, this ID goes out with exactly these events (room events
		// by ID, read again from the log; ephemeral data and to-device
		// messages, which are computed from more than their records, as
		// sent).
		txn := eventlog.AppserviceTxn{ID: fmt.Sprintf("%s%d-%d", ln.prefix, st.Through+1, last), From: st.Through + 1, To: last,
			Events: ids, Ephemeral: body.Ephemeral, ToDevice: body.ToDevice}
		if size(txn.Ephemeral)+size(txn.ToDevice) > maxKeptBodies {
			// Too large to keep in the bucket (its values are NATS
			// messages): keep the range only and build it again from
			// the log if it must be sent again (a "*" device list or a
			// typing list may then differ).
			txn.Ephemeral, txn.ToDevice, txn.Rebuild = nil, nil, true
		}
		st.InFlight = &txn
		if rev, err = d.Log.PutAppserviceState(ctx, ln.key, st, rev); err != nil {
			return err
		}
		if err := d.send(ctx, reg, ln, txn.ID, body); err != nil {
			return err
		}
		st.Through, st.InFlight = last, nil
		d.setPosition(reg, ln, last)
		if rev, err = d.Log.PutAppserviceState(ctx, ln.key, st, rev); err != nil {
			return err
		}
		lastSave = time.Now()
		progressed = true
		logger.Debug("transaction delivered", "txn_id", txn.ID, "events", len(body.Events), "ephemeral", len(body.Ephemeral), "to_device", len(body.ToDevice))
		return nil
	}
	err = d.Log.Read(ctx, ln.stream, eventlog.ReadOptions{From: st.Through + 1, MaxBatch: d.MaxRecords},
		func(ctx context.Context, batch []eventlog.Msg) error {
			// Transactions stay small: a batch of large records is sent
			// in several, in order.
			for len(batch) > 0 {
				n, bytes := 0, 0
				for n < len(batch) && (n == 0 || bytes+len(batch[n].Data) <= maxTxnRecordBytes) {
					bytes += len(batch[n].Data)
					n++
				}
				if err := process(ctx, batch[:n]); err != nil {
					return err
				}
				batch = batch[n:]
			}
			return nil
		})
	return progressed, err
}

// maxTxnRecordBytes bounds the records one transaction is built from (at
// least one record); maxKeptBodies bounds the ephemeral and to-device
// bodies kept with an in-flight transaction.
const (
	maxTxnRecordBytes = 256 << 10
	maxKeptBodies     = 512 << 10
)

func size(list []json.RawMessage) int {
	n := 0
	for _, b := range list {
		n += len(b)
	}
	return n
}

// build matches records of the lane's stream against the service: the
// room events (with their IDs) or the ephemeral data or to-device messages
// of one transaction.
func (d *Deliverer) build(ctx context.Context, reg *Registration, ln *lane, batch []eventlog.Msg) (ids []string, body Transaction, err error) {
	last := batch[len(batch)-1].Seq
	switch ln.stream {
	case eventlog.StreamRooms:
		// Aliases and members are read from the projection: wait until
		// it shows the batch.
		if err := d.Watermark.Wait(ctx, eventlog.StreamRooms, last); err != nil {
			return nil, body, err
		}
		ids, body.Events, err = d.match(ctx, reg, batch, nil)
	case eventlog.StreamAccounts:
		// "*" is read from the projection's devices.
		if err := d.Watermark.Wait(ctx, eventlog.StreamAccounts, last); err != nil {
			return nil, body, err
		}
		body.ToDevice, err = d.matchToDevice(ctx, reg, batch)
	default:
		body.Ephemeral, err = d.matchEphemeral(ctx, reg, ln, batch)
	}
	return ids, body, err
}

// rebuild builds an in-flight transaction of an ephemeral or to-device
// lane again from its records, when its bodies were too large to keep.
func (d *Deliverer) rebuild(ctx context.Context, reg *Registration, ln *lane, txn eventlog.AppserviceTxn) (Transaction, error) {
	var msgs []eventlog.Msg
	err := d.Log.Read(ctx, ln.stream, eventlog.ReadOptions{From: txn.From, StopAt: txn.To, MaxBatch: d.MaxRecords},
		func(ctx context.Context, batch []eventlog.Msg) error {
			for _, m := range batch {
				if m.Seq <= txn.To {
					msgs = append(msgs, m)
				}
			}
			return nil
		})
	if err != nil || len(msgs) == 0 {
		return Transaction{}, err
	}
	_, body, err := d.build(ctx, reg, ln, msgs)
	return body, err
}

// reread reads the records of an in-flight transaction again and returns
// its events, in the order first sent.
func (d *Deliverer) reread(ctx context.Context, txn eventlog.AppserviceTxn) ([]json.RawMessage, error) {
	want := make(map[string]bool, len(txn.Events))
	for _, id := range txn.Events {
		want[id] = true
	}
	var out []json.RawMessage
	err := d.Log.Read(ctx, eventlog.StreamRooms, eventlog.ReadOptions{From: txn.From, StopAt: txn.To, MaxBatch: d.MaxRecords},
		func(ctx context.Context, batch []eventlog.Msg) error {
			var inRange []eventlog.Msg
			for _, m := range batch {
				if m.Seq <= txn.To {
					inRange = append(inRange, m)
				}
			}
			_, evs, err := d.match(ctx, nil, inRange, want)
			out = append(out, evs...)
			return err
		})
	if err != nil {
		return nil, err
	}
	if len(out) != len(txn.Events) {
		return nil, fmt.Errorf("transaction %s: found %d of its %d events on the log", txn.ID, len(out), len(txn.Events))
	}
	return out, nil
}

// match returns the events of batch the service is interested in (or,
// with want, the events whose IDs are in want), with their IDs.
func (d *Deliverer) match(ctx context.Context, reg *Registration, batch []eventlog.Msg, want map[string]bool) (ids []string, events []json.RawMessage, err error) {
	rooms := map[roomAt]bool{}
	for _, m := range batch {
		if m.Type != (eventlog.RoomEvents{}).RecordType() {
			continue
		}
		rec, err := m.Decode()
		if err != nil {
			// Set aside by the projector too; nothing a service could use.
			d.Logger.Warn("application service delivery passes over a record it cannot decode", eventlog.LogSeq, m.Seq, eventlog.LogErr, err)
			continue
		}
		re := rec.(*eventlog.RoomEvents)
		// Membership as of just after this record: a namespace user who
		// joins and leaves within one batch still brings what was said
		// in between.
		at := eventlog.EventPos(m.Seq, len(re.Events)-1)
		for _, raw := range re.Events {
			ev, err := matrix.ParseEvent(matrix.RoomVersion(re.RoomVersion), raw)
			if err != nil {
				d.Logger.Warn("application service delivery passes over an event it cannot parse", eventlog.LogSeq, m.Seq, eventlog.LogErr, err)
				continue
			}
			if want != nil {
				if !want[string(ev.ID())] {
					continue
				}
			} else {
				ok, err := d.interested(ctx, reg, ev, at, rooms)
				if err != nil {
					return nil, nil, err
				}
				if !ok {
					continue
				}
			}
			ids = append(ids, string(ev.ID()))
			events = append(events, matrix.ClientEvent(ev))
		}
	}
	return ids, events, nil
}

// interested decides whether ev concerns reg: its sender or the target of
// a membership event is one of the service's users, or its room is in a
// rooms namespace, has an alias in an aliases namespace or a joined member
// who is one of the service's users just after position at. rooms caches
// the answers for one batch.
func (d *Deliverer) interested(ctx context.Context, reg *Registration, ev *matrix.Event, at int64, rooms map[roomAt]bool) (bool, error) {
	if reg.InterestedInUser(string(ev.Sender()), d.Server) {
		return true, nil
	}
	if sk := ev.StateKey(); sk != nil && ev.Type() == "m.room.member" && reg.InterestedInUser(*sk, d.Server) {
		return true, nil
	}
	roomID := string(ev.RoomID())
	if reg.InterestedInRoomID(roomID) {
		return true, nil
	}
	k := roomAt{roomID, at}
	if v, ok := rooms[k]; ok {
		return v, nil
	}
	v, err := d.roomInterest(ctx, reg, roomID, at)
	if err != nil {
		return false, err
	}
	rooms[k] = v
	return v, nil
}

type roomAt struct {
	room string
	pos  int64
}

// roomInterest reports whether the room has an alias of the service's
// namespaces (now: aliases are not kept by position) or a member of its
// users joined just after position at (0: now).
func (d *Deliverer) roomInterest(ctx context.Context, reg *Registration, roomID string, at int64) (bool, error) {
	aliases, err := d.Store.RoomAliases(ctx, roomID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	for _, a := range aliases {
		if reg.OwnsAlias(a) {
			return true, nil
		}
	}
	members, err := d.Store.Members(ctx, roomID, at, []string{"join"}, nil)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	for _, m := range members {
		if m.StateKey != nil && reg.InterestedInUser(*m.StateKey, d.Server) {
			return true, nil
		}
	}
	return false, nil
}

// matchEphemeral turns a batch of RECEIPTS or EPHEMERAL records into the
// ephemeral events the service is to get: receipts and typing in rooms it
// is interested in (private receipts only of its own users), presence of
// its users and of users in rooms it is interested in. Typing is the
// room's whole list of typing users, kept in the lane from the records
// read (after a restart, those typing before it are not listed until
// they type again; typing notices expire in seconds anyway).
func (d *Deliverer) matchEphemeral(ctx context.Context, reg *Registration, ln *lane, batch []eventlog.Msg) ([]json.RawMessage, error) {
	rooms := map[string]bool{}
	roomOK := func(roomID string) (bool, error) {
		if reg.InterestedInRoomID(roomID) {
			return true, nil
		}
		if v, ok := rooms[roomID]; ok {
			return v, nil
		}
		v, err := d.roomInterest(ctx, reg, roomID, 0)
		rooms[roomID] = v
		return v, err
	}
	var out []json.RawMessage
	for _, m := range batch {
		rec, err := m.Decode()
		if err != nil {
			d.Logger.Warn("application service delivery passes over a record it cannot decode", eventlog.LogStream, m.Stream, eventlog.LogSeq, m.Seq, eventlog.LogErr, err)
			continue
		}
		switch r := rec.(type) {
		case *eventlog.ReceiptSet:
			if r.Type == "m.read.private" && !reg.InterestedInUser(r.UserID, d.Server) {
				continue
			}
			if ok, err := roomOK(r.RoomID); err != nil {
				return nil, err
			} else if !ok && !reg.InterestedInUser(r.UserID, d.Server) {
				continue
			}
			receipt := map[string]any{"ts": r.TS}
			if r.ThreadID != "" {
				receipt["thread_id"] = r.ThreadID
			}
			out = append(out, mustJSON(map[string]any{"type": "m.receipt", "room_id": r.RoomID,
				"content": map[string]any{r.EventID: map[string]any{r.Type: map[string]any{r.UserID: receipt}}}}))
		case *eventlog.TypingSet:
			if ln.typing == nil {
				continue
			}
			users := ln.typing[r.RoomID]
			if users == nil {
				users = map[string]int64{}
				ln.typing[r.RoomID] = users
			}
			switch {
			case r.Typing:
				users[r.UserID] = r.ExpiresTS
			case r.ExpiresTS == 0 || users[r.UserID] == r.ExpiresTS:
				// A stop, or the expiry of the notice still current.
				delete(users, r.UserID)
			default:
				continue // the expiry of a notice since renewed
			}
			if ok, err := roomOK(r.RoomID); err != nil {
				return nil, err
			} else if !ok {
				continue
			}
			now := m.Time.UnixMilli()
			ids := []string{}
			for u, exp := range users {
				if exp == 0 || exp > now {
					ids = append(ids, u)
				}
			}
			slices.Sort(ids)
			out = append(out, mustJSON(map[string]any{"type": "m.typing", "room_id": r.RoomID, "content": map[string]any{"user_ids": ids}}))
		case *eventlog.PresenceSet:
			ok := reg.InterestedInUser(r.UserID, d.Server)
			if !ok {
				joined, err := d.Store.JoinedRooms(ctx, r.UserID)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return nil, err
				}
				for _, room := range joined {
					if ok, err = roomOK(room); err != nil {
						return nil, err
					} else if ok {
						break
					}
				}
			}
			if !ok {
				continue
			}
			presence, ago, active := r.Effective(m.Time)
			c := map[string]any{"presence": presence, "last_active_ago": ago, "currently_active": active}
			if r.StatusMsg != nil {
				c["status_msg"] = *r.StatusMsg
			}
			out = append(out, mustJSON(map[string]any{"type": "m.presence", "sender": r.UserID, "content": c}))
		}
	}
	return out, nil
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v) // maps of strings and numbers always marshal
	return b
}

// matchToDevice returns the to-device messages of batch (ACCOUNTS) sent to
// the service's users, one per device, with to_user_id and to_device_id
// (MSC2409). "*" means the user's devices as the projection knows them now.
func (d *Deliverer) matchToDevice(ctx context.Context, reg *Registration, batch []eventlog.Msg) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for _, m := range batch {
		if m.Type != (eventlog.ToDeviceSent{}).RecordType() {
			continue
		}
		rec, err := m.Decode()
		if err != nil {
			d.Logger.Warn("application service delivery passes over a record it cannot decode", eventlog.LogStream, m.Stream, eventlog.LogSeq, m.Seq, eventlog.LogErr, err)
			continue
		}
		r := rec.(*eventlog.ToDeviceSent)
		users := make([]string, 0, len(r.Messages))
		for u := range r.Messages {
			if reg.InterestedInUser(u, d.Server) {
				users = append(users, u)
			}
		}
		slices.Sort(users)
		for _, u := range users {
			devices := make([]string, 0, len(r.Messages[u]))
			for dev := range r.Messages[u] {
				devices = append(devices, dev)
			}
			slices.Sort(devices)
			for _, dev := range devices {
				content := r.Messages[u][dev]
				targets := []string{dev}
				if dev == "*" {
					all, err := d.Store.Devices(ctx, u)
					if err != nil && !errors.Is(err, store.ErrNotFound) {
						return nil, err
					}
					targets = targets[:0]
					for _, dd := range all {
						targets = append(targets, dd.DeviceID)
					}
				}
				for _, t := range targets {
					out = append(out, mustJSON(map[string]any{"type": r.Type, "sender": r.Sender, "content": content,
						"to_user_id": u, "to_device_id": t}))
				}
			}
		}
	}
	return out, nil
}
