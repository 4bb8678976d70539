package store

import (
	"math/rand/v2"
	"testing"
)

// Ranges must describe exactly the positions CanSee accepts (other than the
// user's own member events), for any history: the SQL counts of /search and
// thread summaries rely on it.
func TestVisibilityRangesMatchCanSee(t *testing.T) {
	memberships := []string{"join", "invite", "leave", "ban", "knock"}
	visibilities := []string{"world_readable", "shared", "invited", "joined"}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 2000 {
		v := &Visibility{UserID: "@u:x", RoomID: "!r:x"}
		// Consecutive periods on a few positions, the last one maybe open.
		pos := int64(rng.IntN(3))
		for range rng.IntN(5) {
			to := pos + 1 + int64(rng.IntN(4))
			v.Hist.Memberships = append(v.Hist.Memberships, MembershipSpan{memberships[rng.IntN(len(memberships))], pos, to})
			pos = to + int64(rng.IntN(2))
		}
		if k := len(v.Hist.Memberships); k > 0 && rng.IntN(2) == 0 {
			v.Hist.Memberships[k-1].ToPos = 0
		}
		pos = int64(rng.IntN(3))
		for range rng.IntN(4) {
			to := pos + 1 + int64(rng.IntN(5))
			v.Hist.Visibility = append(v.Hist.Visibility, VisibilitySpan{visibilities[rng.IntN(len(visibilities))], pos, to})
			pos = to
		}
		if k := len(v.Hist.Visibility); k > 0 && rng.IntN(2) == 0 {
			v.Hist.Visibility[k-1].ToPos = 0
		}
		r := v.Ranges()
		inRanges := func(p int64) bool {
			for i := range r.From {
				if p >= r.From[i] && (r.To[i] == 0 || p < r.To[i]) {
					return true
				}
			}
			return false
		}
		for p := int64(0); p < 40; p++ {
			e := &StoredEvent{RoomID: "!r:x", Pos: p, Type: "m.room.message"}
			if got, want := inRanges(p), v.CanSee(e); got != want {
				t.Fatalf("case %d, position %d: in ranges %v, CanSee %v\nhistory %+v\nranges %+v", n, p, got, want, v.Hist, r)
			}
		}
	}
}

// A Visibility sees nothing of another room, even at a position it could
// see in its own.
func TestVisibilityIsOneRoom(t *testing.T) {
	v := &Visibility{UserID: "@u:x", RoomID: "!r:x",
		Hist: RoomHistory{Visibility: []VisibilitySpan{{"world_readable", 0, 0}}, Memberships: []MembershipSpan{{"join", 0, 0}}}}
	if !v.CanSee(&StoredEvent{RoomID: "!r:x", Pos: 5}) {
		t.Fatal("own room's event not visible")
	}
	if v.CanSee(&StoredEvent{RoomID: "!other:x", Pos: 5}) {
		t.Fatal("another room's event is visible")
	}
	own := "@u:x"
	if v.CanSee(&StoredEvent{RoomID: "!other:x", Pos: 5, Type: "m.room.member", StateKey: &own}) {
		t.Fatal("the user's member event of another room is visible")
	}
}
