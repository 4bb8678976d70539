package bench

import "context"

// holdFilter is what the holds scenario's clients sync with: members
// lazy-loaded, as clients in large rooms do, so that the set-up's initial
// syncs do not each carry the whole member list.
const holdFilter = `{"room":{"timeline":{"limit":100},"state":{"lazy_load_members":true}}}`

// holds: HoldUsers users in one room, each holding one long-poll, then
// one message to the room: the server's memory for the polls and the time
// until all have the message. Unlike heldpolls (a few users, many polls
// each, several sharing a token), every poll here is a user of its own,
// as a real population is: no two share an answer.
func runHolds(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, p.HoldUsers+1)
	if users == nil {
		return
	}
	sender, holders := users[0], users[1:]
	r.logf("%d users registered; joining them to one room", len(users))
	room := r.room(ctx, sender, users)
	if room == "" {
		return
	}
	r.logf("room %s has %d members; initial syncs", room, len(users))
	sinces := r.initialSinces(ctx, holders, holdFilter)
	if sinces == nil {
		return
	}
	r.logf("set-up done: %d users in the room; opening %d long-polls", len(users), len(holders))
	measureHeld(ctx, r, sender, room, holdFilter, holders, sinces)
}
