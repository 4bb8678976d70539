package syncstream

import (
	"context"
	"encoding/json"
	"fmt"

	"golang.org/x/sync/errgroup"

	"strand/eventlog"
)

// Consume reads the streams from their current heads and feeds every
// record's touched rooms and users to the notifier, until ctx ends. The
// responses themselves come from the projection; the log tells a worker
// who to wake, as soon as a record is stored.
func Consume(ctx context.Context, log *eventlog.Log, n *Notifier) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, stream := range []string{eventlog.StreamRooms, eventlog.StreamAccounts} {
		head, err := log.Head(ctx, stream)
		if err != nil {
			return err
		}
		n.SetFloor(stream, head)
		g.Go(func() error {
			return log.Read(ctx, stream, eventlog.ReadOptions{From: head + 1}, func(_ context.Context, batch []eventlog.Msg) error {
				for _, m := range batch {
					c, err := touched(m)
					if err != nil {
						return fmt.Errorf("sync consumer: %s seq %d: %w", stream, m.Seq, err)
					}
					n.Notify(c)
				}
				return nil
			})
		})
	}
	return g.Wait()
}

// touched extracts the rooms and users a record concerns: the room of a
// room record, the targets of its membership events (an invitee must wake
// before the room is one of theirs), and the user of an account record.
func touched(m eventlog.Msg) (change, error) {
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
