package matrix

import (
	"hash/maphash"
	"iter"
	"math/bits"
)

// StateKey identifies a piece of room state: an event type and state key.
type StateKey struct {
	Type, StateKey string
}

// State is a room's state: the current event for each StateKey. It is a
// persistent (immutable) hash trie, so a State value is cheap to copy and
// to keep: Apply returns a new State that shares all but a path of a few
// small nodes with the old one, and the old one stays valid. That lets the
// api hold the state "at stream sequence S" while the projector moves on,
// and lets a fold over a room's log keep every intermediate state for the
// price of the changes alone.
//
// The zero State is the empty state of a room that has no create event yet.
// A State is safe for concurrent readers.
type State struct {
	root *stateNode
	size int
	seed maphash.Seed // set with the first entry; shared by derived States
}

// stateNode is a node of the trie. Each level consumes 5 bits of the key's
// hash: dataMap marks slots that hold an entry, nodeMap slots that hold a
// subtree (never both). Below the last level, entries whose 64-bit hashes
// collide completely are kept in coll. Nodes are never modified once
// reachable from a State.
type stateNode struct {
	dataMap, nodeMap uint32
	data             []*stateEntry
	nodes            []*stateNode
	coll             []*stateEntry
}

type stateEntry struct {
	hash uint64
	key  StateKey
	ev   *Event
}

const (
	trieBits = 5
	trieMask = 1<<trieBits - 1
)

func (s *State) hash(k StateKey) uint64 { return maphash.Comparable(s.seed, k) }

// Len returns the number of state entries.
func (s State) Len() int { return s.size }

// Get returns the event at k, or nil.
func (s State) Get(k StateKey) *Event {
	if s.root == nil {
		return nil
	}
	return s.root.get(s.hash(k), k)
}

func (n *stateNode) get(h uint64, k StateKey) *Event {
	for shift := uint(0); ; shift += trieBits {
		if shift >= 64 {
			for _, e := range n.coll {
				if e.key == k {
					return e.ev
				}
			}
			return nil
		}
		bit := uint32(1) << ((h >> shift) & trieMask)
		switch {
		case n.dataMap&bit != 0:
			e := n.data[bits.OnesCount32(n.dataMap&(bit-1))]
			if e.key == k {
				return e.ev
			}
			return nil
		case n.nodeMap&bit != 0:
			n = n.nodes[bits.OnesCount32(n.nodeMap&(bit-1))]
		default:
			return nil
		}
	}
}

// All iterates over the state in no particular order.
func (s State) All() iter.Seq2[StateKey, *Event] {
	return func(yield func(StateKey, *Event) bool) {
		if s.root != nil {
			s.root.each(yield)
		}
	}
}

func (n *stateNode) each(yield func(StateKey, *Event) bool) bool {
	for _, e := range n.data {
		if !yield(e.key, e.ev) {
			return false
		}
	}
	for _, e := range n.coll {
		if !yield(e.key, e.ev) {
			return false
		}
	}
	for _, c := range n.nodes {
		if !c.each(yield) {
			return false
		}
	}
	return true
}

// With returns s with ev at key k, whatever ev's own type and state key.
// Apply is the usual way in; With exists for setting a redacted copy.
func (s State) With(k StateKey, ev *Event) State {
	if s.root == nil {
		s.seed = maphash.MakeSeed()
		s.root = &stateNode{}
	}
	e := &stateEntry{hash: s.hash(k), key: k, ev: ev}
	root, added := s.root.insert(e, 0)
	s.root = root
	if added {
		s.size++
	}
	return s
}

// insert returns a copy of n with e in it, and whether e's key is new.
func (n *stateNode) insert(e *stateEntry, shift uint) (*stateNode, bool) {
	if shift >= 64 {
		c := &stateNode{coll: make([]*stateEntry, len(n.coll), len(n.coll)+1)}
		copy(c.coll, n.coll)
		for i, old := range c.coll {
			if old.key == e.key {
				c.coll[i] = e
				return c, false
			}
		}
		c.coll = append(c.coll, e)
		return c, true
	}
	bit := uint32(1) << ((e.hash >> shift) & trieMask)
	switch {
	case n.dataMap&bit != 0:
		i := bits.OnesCount32(n.dataMap & (bit - 1))
		old := n.data[i]
		if old.key == e.key {
			c := n.clone()
			c.data[i] = e
			return c, false
		}
		// Two keys share this slot: push both one level down.
		sub := pairNode(old, e, shift+trieBits)
		c := &stateNode{dataMap: n.dataMap &^ bit, nodeMap: n.nodeMap | bit}
		c.data = make([]*stateEntry, 0, len(n.data)-1)
		c.data = append(append(c.data, n.data[:i]...), n.data[i+1:]...)
		j := bits.OnesCount32(c.nodeMap & (bit - 1))
		c.nodes = make([]*stateNode, 0, len(n.nodes)+1)
		c.nodes = append(append(append(c.nodes, n.nodes[:j]...), sub), n.nodes[j:]...)
		return c, true
	case n.nodeMap&bit != 0:
		i := bits.OnesCount32(n.nodeMap & (bit - 1))
		sub, added := n.nodes[i].insert(e, shift+trieBits)
		c := n.clone()
		c.nodes[i] = sub
		return c, added
	default:
		i := bits.OnesCount32(n.dataMap & (bit - 1))
		c := &stateNode{dataMap: n.dataMap | bit, nodeMap: n.nodeMap, nodes: n.nodes}
		c.data = make([]*stateEntry, 0, len(n.data)+1)
		c.data = append(append(append(c.data, n.data[:i]...), e), n.data[i:]...)
		return c, true
	}
}

// clone copies n's slices so that one slot can be replaced.
func (n *stateNode) clone() *stateNode {
	c := &stateNode{dataMap: n.dataMap, nodeMap: n.nodeMap}
	if n.data != nil {
		c.data = append([]*stateEntry(nil), n.data...)
	}
	if n.nodes != nil {
		c.nodes = append([]*stateNode(nil), n.nodes...)
	}
	return c
}

// pairNode builds the subtree holding two entries with different keys.
func pairNode(a, b *stateEntry, shift uint) *stateNode {
	if shift >= 64 {
		return &stateNode{coll: []*stateEntry{a, b}}
	}
	ia, ib := (a.hash>>shift)&trieMask, (b.hash>>shift)&trieMask
	if ia == ib {
		return &stateNode{nodeMap: 1 << ia, nodes: []*stateNode{pairNode(a, b, shift+trieBits)}}
	}
	if ia > ib {
		a, b = b, a
	}
	return &stateNode{dataMap: 1<<ia | 1<<ib, data: []*stateEntry{a, b}}
}

// Apply returns the state after ev: for a state event, s with ev at its
// (type, state_key); for any other event, s itself. It is the pure fold of
// an accepted event into room state and checks nothing: call it only with
// events Authorize accepted (a rejected event must not change state).
//
// A redaction does not change state here, because only the caller knows
// the target event: if the target is current state, apply the redacted copy
// with ApplyRedacted.
func Apply(s State, ev *Event) State {
	k, ok := ev.Key()
	if !ok {
		return s
	}
	return s.With(k, ev)
}

// ApplyRedacted replaces target with its redacted form if target is the
// current event at its key, as a redacted state event keeps counting in the
// state with only its protected content. Otherwise s is returned unchanged.
func ApplyRedacted(s State, target *Event) (State, error) {
	k, ok := target.Key()
	if !ok {
		return s, nil
	}
	cur := s.Get(k)
	if cur == nil || cur.ID() != target.ID() {
		return s, nil
	}
	red, err := target.Redact()
	if err != nil {
		return s, err
	}
	return s.With(k, red), nil
}

// Create returns the m.room.create event, or nil.
func (s State) Create() *Event { return s.Get(StateKey{Type: TypeCreate}) }

// RoomVersion returns the version the create event gives, or "" if the
// state has no create event.
func (s State) RoomVersion() RoomVersion {
	if c := s.Create(); c != nil {
		return c.Version()
	}
	return ""
}

// Member returns the m.room.member event of u, or nil.
func (s State) Member(u UserID) *Event {
	return s.Get(StateKey{Type: TypeMember, StateKey: string(u)})
}

// Membership constants (m.room.member content.membership).
const (
	MembershipJoin   = "join"
	MembershipInvite = "invite"
	MembershipLeave  = "leave"
	MembershipBan    = "ban"
	MembershipKnock  = "knock"
)

// Membership returns u's current membership, "leave" if u has no member
// event: the authorisation rules treat never-joined and left alike.
func (s State) Membership(u UserID) string {
	if m := s.Member(u); m != nil && m.membership != "" {
		return m.membership
	}
	return MembershipLeave
}

// Join rule constants (m.room.join_rules content.join_rule).
const (
	JoinRulePublic          = "public"
	JoinRuleInvite          = "invite"
	JoinRuleKnock           = "knock"
	JoinRuleRestricted      = "restricted"
	JoinRuleKnockRestricted = "knock_restricted"
	JoinRulePrivate         = "private"
)

// JoinRule returns the current join rule, "invite" if there is no
// m.room.join_rules event (as servers have always defaulted).
func (s State) JoinRule() string {
	if j := s.Get(StateKey{Type: TypeJoinRules}); j != nil && j.joinRule != "" {
		return j.joinRule
	}
	return JoinRuleInvite
}

// PowerLevels returns the current power levels, DefaultPowerLevels() if
// the room has no m.room.power_levels event. The result is shared: do not
// modify it.
func (s State) PowerLevels() *PowerLevels {
	if p := s.Get(StateKey{Type: TypePowerLevels}); p != nil && p.power != nil {
		return p.power
	}
	return DefaultPowerLevels()
}

// Creators returns the room's creators: in version 12 the create event's
// sender and content.additional_creators; before, the one creator
// (content.creator in v1–v10, the create's sender in v11).
func (s State) Creators() []UserID {
	c := s.Create()
	if c == nil || c.create == nil {
		return nil
	}
	if !c.rules.hashRoomIDs {
		if c.create.creator == "" {
			return nil
		}
		return []UserID{c.create.creator}
	}
	out := []UserID{c.sender}
	for _, u := range c.create.additionalCreators {
		if u != c.sender {
			out = append(out, u)
		}
	}
	return out
}

// isCreator reports whether u is a creator with infinite power (v12).
func (s State) isCreator(u UserID) bool {
	c := s.Create()
	if c == nil || c.create == nil || !c.rules.hashRoomIDs {
		return false
	}
	if u == c.sender {
		return true
	}
	for _, a := range c.create.additionalCreators {
		if a == u {
			return true
		}
	}
	return false
}

// UserPowerLevel returns u's power level with the version's rules: in
// version 12 creators have CreatorPowerLevel; otherwise the power_levels
// entry or users_default; and without a power_levels event, 100 for the
// creator of a room of version 1 to 11 and 0 for everyone else.
func (s State) UserPowerLevel(u UserID) int64 {
	if s.isCreator(u) {
		return CreatorPowerLevel
	}
	if p := s.Get(StateKey{Type: TypePowerLevels}); p != nil && p.power != nil {
		return p.power.UserLevel(u)
	}
	if c := s.Create(); c != nil && c.create != nil && !c.rules.hashRoomIDs && u == c.create.creator {
		return defaultCreatorLevel
	}
	return defaultUsersDefault
}
