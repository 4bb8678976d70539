package eventlog

import (
	"strconv"
	"strings"
)

// ROOMS is applied in lanes, one per room partition and one for aliases,
// so that several projector processes apply it together. Each room lies in
// one partition, so applying each lane in order keeps every room in order.
// The lanes follow from the log's subjects (RoomPartitions is fixed), not
// from how many processes run.
//
// A lane's position is "complete through": every record of the lane at or
// below it is applied. The position of ROOMS as a whole (the G of sync
// tokens) is the largest G such that every record at or below G is applied
// by its lane; it is at least the lowest lane position, and a reader that
// knows the lane of each record (a sync worker reads the whole stream) can
// go past an idle lane (RoomsTracker).

// AliasLane is the lane of alias records (subjects alias.<key>).
const AliasLane = RoomPartitions

// RoomLaneCount is how many lanes ROOMS has: the partitions and aliases.
const RoomLaneCount = RoomPartitions + 1

// LaneName names lane i of ROOMS as a position: "ROOMS.<i>" for partition
// i, "ROOMS.alias" for aliases. Projector positions, leases and applied
// notifications use these names.
func LaneName(i int) string {
	if i == AliasLane {
		return StreamRooms + ".alias"
	}
	return StreamRooms + "." + strconv.Itoa(i)
}

// RoomLanes are the names of every ROOMS lane, in lane order.
var RoomLanes = func() []string {
	out := make([]string, RoomLaneCount)
	for i := range out {
		out[i] = LaneName(i)
	}
	return out
}()

// LaneIndex returns the index of a lane name, or -1 for a name that is not
// a ROOMS lane.
func LaneIndex(name string) int {
	rest, ok := strings.CutPrefix(name, StreamRooms+".")
	if !ok {
		return -1
	}
	if rest == "alias" {
		return AliasLane
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= RoomPartitions {
		return -1
	}
	return i
}

// LaneStream returns the stream a position name belongs to: ROOMS for its
// lanes, the name itself otherwise.
func LaneStream(name string) string {
	if LaneIndex(name) >= 0 {
		return StreamRooms
	}
	return name
}

// LaneFilter is the subject filter of lane i.
func LaneFilter(i int) string {
	if i == AliasLane {
		return "alias.>"
	}
	return "room." + strconv.Itoa(i) + ".>"
}

// SubjectLane returns the lane of a ROOMS subject. A subject of neither
// form (none is ever appended) counts as the alias lane, whose reader
// would not see it either; what matters is that every reader agrees.
func SubjectLane(subject string) int {
	rest, ok := strings.CutPrefix(subject, "room.")
	if !ok {
		return AliasLane
	}
	p, _, ok := strings.Cut(rest, ".")
	if !ok {
		return AliasLane
	}
	i, err := strconv.Atoi(p)
	if err != nil || i < 0 || i >= RoomPartitions {
		return AliasLane
	}
	return i
}

// RoomLaneOf returns the lane name of a room's records.
func RoomLaneOf(roomID string) string { return LaneName(SubjectLane(RoomSubject(roomID))) }

// AliasLaneName is the lane name of alias records.
var AliasLaneName = LaneName(AliasLane)
