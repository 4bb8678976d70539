package store_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/eventlog"
	"strand/projector/store"
)

// LazyStateAtPoints gives exactly StateAtPoints' state less the member
// events of everyone not named, and reads only the events it gives: in a
// room of many members, a lazy-loading sync must not read them all.
func TestLazyStateAtPointsReadsOnlyNamedMembers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := apitest.New(t)
	env.Projector()
	srv := env.API(apitest.DefaultConfig())
	v3 := func(p string) string { return "/_matrix/client/v3" + p }
	owner := apitest.NewClient(t, srv.URL)
	owner.Register("owner", "pw-owner-1")
	roomID := owner.MustDo("POST", v3("/createRoom"), map[string]any{"preset": "public_chat", "name": "big"}).Str("room_id")
	const members = 40
	var users []string
	for i := range members {
		c := apitest.NewClient(t, srv.URL)
		c.Register(fmt.Sprintf("m%d", i), "pw-member-1")
		c.MustDo("POST", v3("/rooms/"+url.PathEscape(roomID)+"/join"), nil)
		users = append(users, c.UserID)
		if i == members/2 {
			// A state change between the joins: the point below must
			// see its later value only.
			owner.MustDo("PUT", v3("/rooms/"+url.PathEscape(roomID)+"/state/m.room.name/"), map[string]any{"name": "bigger"})
		}
	}
	st := env.Store()
	err := st.SyncSnapshot(ctx, func(tx *store.SyncTx) error {
		hi := eventlog.EventPos(tx.Pos.Rooms+1, 0)
		for _, tc := range []struct {
			name  string
			r     store.RoomRange
			named []string
		}{
			{"whole state, three named", store.RoomRange{RoomID: roomID, From: 0, To: hi}, []string{users[3], users[members-1], owner.UserID}},
			{"nobody named", store.RoomRange{RoomID: roomID, From: 0, To: hi}, nil},
			{"a named user twice, one not a member", store.RoomRange{RoomID: roomID, From: 0, To: hi}, []string{users[0], users[0], "@nobody:localhost"}},
		} {
			full, err := tx.StateAtPoints(ctx, []store.RoomRange{tc.r})
			if err != nil {
				return err
			}
			var want []string
			for _, e := range full[roomID] {
				if e.Type != "m.room.member" || slices.Contains(tc.named, *e.StateKey) {
					want = append(want, e.EventID)
				}
			}
			before, err := tx.XactFetched(ctx, "events")
			if err != nil {
				return err
			}
			lazy, err := tx.LazyStateAtPoints(ctx, []store.RoomRange{tc.r}, [][]string{tc.named})
			if err != nil {
				return err
			}
			after, err := tx.XactFetched(ctx, "events")
			if err != nil {
				return err
			}
			var got []string
			for _, e := range lazy[roomID] {
				got = append(got, e.EventID)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: lazy state %v, want %v (StateAtPoints less the others' member events, in order)", tc.name, got, want)
			}
			// The event rows fetched: those given and, per state event,
			// at most the event it replaced (prev_content).
			if fetched := after - before; fetched > int64(2*len(got)) {
				t.Errorf("%s: read %d event rows to give %d events (the room has %d members)", tc.name, fetched, len(got), members+1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
