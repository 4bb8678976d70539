package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The fill scenario writes a large, realistic log through the API, for the
// replay scenario to rebuild (BENCHMARKS.md): many rooms of different
// sizes, and in them messages (some mentioning members), reactions, edits,
// redactions, state changes, members joining and leaving, read receipts and
// account data. Which operation the k-th write is, and in which room by
// whom, depends only on k, so a run at one scale writes the same mix every
// time (the order of concurrent writes, and the random user names, vary).

// fillKinds are the operations, with their share out of 100.
var fillKinds = []struct {
	name  string
	share int
}{
	{"message", 68}, {"reaction", 8}, {"edit", 4}, {"redaction", 2}, {"state", 5},
	{"membership", 5}, {"receipt", 5}, {"account data", 3},
}

// fillRoom is one room of the fill: its owner, members and recent events.
type fillRoom struct {
	id      string
	owner   *Client
	members []*Client
	churn   sync.Mutex // one membership change in the room at a time
	mu      sync.Mutex
	recent  [16]fillEvent
	n       int
}

type fillEvent struct {
	id     string
	sender *Client
}

func (fr *fillRoom) remember(id string, sender *Client) {
	fr.mu.Lock()
	fr.recent[fr.n%len(fr.recent)] = fillEvent{id, sender}
	fr.n++
	fr.mu.Unlock()
}

// pick returns a recent event of the room (h chooses which), or ok false.
func (fr *fillRoom) pick(h uint64) (fillEvent, bool) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if fr.n == 0 {
		return fillEvent{}, false
	}
	return fr.recent[int(h%uint64(min(fr.n, len(fr.recent))))], true
}

// mix64 is splitmix64's finaliser: the k-th operation's choices.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func runFill(ctx context.Context, r *runner) {
	p := r.p
	users := r.newUsers(ctx, p.FillUsers+p.FillUsers/4)
	if users == nil {
		return
	}
	speakers, churners := users[:p.FillUsers], users[p.FillUsers:]
	rooms := make([]*fillRoom, p.FillRooms)
	var failed atomic.Bool
	parallel(ctx, p.FillRooms, p.SetupInFlight, func(ctx context.Context, i int) {
		fr := &fillRoom{owner: speakers[i%len(speakers)]}
		// Rooms of 2 to 41 members, most of them small.
		n := 2 + int(mix64(uint64(i))%40)*int(mix64(uint64(i)+1)%40)/40
		for j := 0; len(fr.members) < n && j < len(speakers); j++ {
			fr.members = append(fr.members, speakers[(i+j*7)%len(speakers)])
		}
		id, err := fr.owner.CreateRoom(ctx, true)
		if err == nil {
			fr.id = id
			for _, m := range fr.members[1:] {
				if err = m.Join(ctx, id); err != nil {
					break
				}
			}
		}
		if err != nil && failed.CompareAndSwap(false, true) {
			r.chk.fail("set-up: %v", err)
		}
		rooms[i] = fr
	})
	if failed.Load() || ctx.Err() != nil {
		return
	}
	r.logf("set-up done: %d users in %d rooms", len(users), len(rooms))
	counts := make([]atomic.Int64, len(fillKinds))
	var errs atomic.Int64
	r.beginMeasure()
	start := time.Now()
	var done atomic.Int64
	parallel(ctx, p.FillOps, p.SendInFlight, func(ctx context.Context, k int) {
		kind, n, err := r.fillOp(ctx, k, rooms, churners)
		if err != nil {
			errs.Add(1)
			r.chk.fail("%s %d: %v", fillKinds[kind].name, k, err)
		}
		counts[kind].Add(int64(n))
		if d := done.Add(1); d%50000 == 0 {
			r.logf("%d/%d operations, %.0f/s", d, p.FillOps, float64(d)/time.Since(start).Seconds())
		}
	})
	elapsed := time.Since(start)
	r.endMeasure()
	var writes int64
	for i := range counts {
		c := counts[i].Load()
		writes += c
		r.res.add(fillKinds[i].name+" writes", float64(c), "")
	}
	r.res.add("writes", float64(writes), "")
	r.res.add("writes/s", float64(writes)/elapsed.Seconds(), "/s")
	r.res.add("errors", float64(errs.Load()), "")
}

// fillOp performs the k-th operation: it returns its kind and how many
// writes succeeded.
func (r *runner) fillOp(ctx context.Context, k int, rooms []*fillRoom, churners []*Client) (kind, writes int, err error) {
	h := mix64(uint64(k) + 0x5151)
	fr := rooms[h%uint64(len(rooms))]
	m := fr.members[(h>>20)%uint64(len(fr.members))]
	roll := int((h >> 40) % 100)
	for kind = 0; roll >= fillKinds[kind].share; kind++ {
		roll -= fillKinds[kind].share
	}
	room := url.PathEscape(fr.id)
	txn := r.txn(k)
	target, haveTarget := fr.pick(h >> 8)
	if !haveTarget && (kind == 1 || kind == 2 || kind == 3 || kind == 6) {
		kind = 0
	}
	var id string
	switch kind {
	case 0:
		content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d in a room of %d members, sent by %s", k, len(fr.members), m.UserID)}
		if h%10 == 0 {
			other := fr.members[(h>>28)%uint64(len(fr.members))]
			content["body"] = "hey " + other.UserID + ", look"
			content["m.mentions"] = map[string]any{"user_ids": []string{other.UserID}}
		}
		id, err = m.sendEvent(ctx, room, "m.room.message", txn, content)
	case 1:
		id, err = m.sendEvent(ctx, room, "m.reaction", txn, map[string]any{"m.relates_to": map[string]any{
			"rel_type": "m.annotation", "event_id": target.id, "key": []string{"👍", "🎉", "❤️", "😂"}[h%4]}})
	case 2:
		id, err = target.sender.sendEvent(ctx, room, "m.room.message", txn, map[string]any{"msgtype": "m.text", "body": "* edited",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "edited " + strconv.Itoa(k)},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": target.id}})
	case 3:
		// The sender may redact its own events, the owner anyone's.
		by := fr.owner
		if h%2 == 0 {
			by = target.sender
		}
		_, err = by.do(ctx, http.MethodPut, prefix+"/rooms/"+room+"/redact/"+url.PathEscape(target.id)+"/"+txn, map[string]any{"reason": "fill"}, nil)
	case 4:
		typ, key := "m.room.topic", ""
		if h%3 == 0 {
			typ, key = "org.strand.fill.state", "k"+strconv.Itoa(int(h%5))
		}
		_, err = fr.owner.do(ctx, http.MethodPut, prefix+"/rooms/"+room+"/state/"+typ+"/"+url.PathEscape(key), map[string]any{"topic": "topic " + strconv.Itoa(k)}, nil)
	case 5:
		return kind, r.fillChurn(ctx, fr, churners[(h>>12)%uint64(len(churners))], h), nil
	case 6:
		_, err = m.do(ctx, http.MethodPost, prefix+"/rooms/"+room+"/receipt/m.read/"+url.PathEscape(target.id), map[string]any{}, nil)
	case 7:
		_, err = m.do(ctx, http.MethodPut, prefix+"/user/"+url.PathEscape(m.UserID)+"/account_data/org.strand.fill."+strconv.Itoa(int(h%8)),
			map[string]any{"k": k}, nil)
	}
	if err != nil {
		return kind, 0, err
	}
	if id != "" {
		if kind == 2 {
			m = target.sender // an edit is sent by the edited event's sender
		}
		fr.remember(id, m)
	}
	return kind, 1, nil
}

// fillChurn joins a member who does not write otherwise, and half the
// time has them leave again, one change per room at a time.
func (r *runner) fillChurn(ctx context.Context, fr *fillRoom, c *Client, h uint64) int {
	fr.churn.Lock()
	defer fr.churn.Unlock()
	if err := c.Join(ctx, fr.id); err != nil {
		r.chk.fail("membership: join: %v", err)
		return 0
	}
	if h%2 == 0 {
		return 1
	}
	if _, err := c.do(ctx, http.MethodPost, prefix+"/rooms/"+url.PathEscape(fr.id)+"/leave", map[string]any{}, nil); err != nil {
		r.chk.fail("membership: leave: %v", err)
		return 1
	}
	return 2
}

// sendEvent sends a room event and returns its ID.
func (c *Client) sendEvent(ctx context.Context, room, typ, txn string, content map[string]any) (string, error) {
	var out struct {
		EventID string `json:"event_id"`
	}
	if _, err := c.do(ctx, http.MethodPut, prefix+"/rooms/"+room+"/send/"+typ+"/"+url.PathEscape(txn), content, &out); err != nil {
		return "", err
	}
	return out.EventID, nil
}
