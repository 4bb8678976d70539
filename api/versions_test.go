package api_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"strand/api/apitest"
)

// Event IDs of each room version, as clients see them: v1/v2 the server's
// "$opaque:server", v3 a hash in standard base64, v4+ URL-safe base64.
var (
	opaqueEventID = regexp.MustCompile(`^\$[A-Za-z0-9]+:localhost$`)
	stdHashID     = regexp.MustCompile(`^\$[A-Za-z0-9+/]{43}$`)
	urlHashID     = regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)
)

// within returns c reporting to t, so that a subtest's failures are its own.
func within(t *testing.T, c *apitest.Client) *apitest.Client {
	cp := *c
	cp.T = t
	return &cp
}

func checkEventIDForm(t *testing.T, ver int, id string) {
	t.Helper()
	re := urlHashID
	switch {
	case ver <= 2:
		re = opaqueEventID
	case ver == 3:
		re = stdHashID
	}
	if !re.MatchString(id) {
		t.Fatalf("v%d event ID %q does not have the version's form", ver, id)
	}
}

// Every room version 1–12 can be created, written to (messages, state,
// redactions), joined and left; its events have the version's ID form and
// are found again by ID (a v3 ID may hold '/', escaped in the path).
func TestRoomVersionsEndToEnd(t *testing.T) {
	_, c := newServer(t)
	c.Register("vadmin", "pw")
	bob := c.As("")
	bob.Register("vbob", "pw")

	caps := c.MustDo("GET", v3("/capabilities"), nil).Body["capabilities"].(map[string]any)["m.room_versions"].(map[string]any)
	if caps["default"] != "10" {
		t.Fatalf("default room version %v", caps["default"])
	}
	avail := caps["available"].(map[string]any)
	for ver := 1; ver <= 12; ver++ {
		if avail[strconv.Itoa(ver)] != "stable" {
			t.Fatalf("available %v lacks %d", avail, ver)
		}
	}
	if len(avail) != 12 {
		t.Fatalf("available %v", avail)
	}

	for ver := 1; ver <= 12; ver++ {
		vs := strconv.Itoa(ver)
		t.Run("v"+vs, func(t *testing.T) {
			c, bob := within(t, c), within(t, bob)
			room := createRoom(t, c, map[string]any{"room_version": vs, "preset": "public_chat", "name": "v" + vs})
			path := func(p string) string { return v3("/rooms/" + esc(room) + p) }
			create := c.MustDo("GET", path("/state/m.room.create/"), nil)
			if create.Str("room_version") != vs {
				t.Fatalf("create content %s", create.Raw)
			}
			if hasCreator := create.Str("creator") == "@vadmin:localhost"; hasCreator != (ver <= 10) {
				t.Fatalf("v%d create content %s", ver, create.Raw)
			}
			pl := c.MustDo("GET", path("/state/m.room.power_levels/"), nil)
			users := pl.Body["users"].(map[string]any)
			if listed := users["@vadmin:localhost"] == float64(100); listed != (ver < 12) {
				t.Fatalf("v%d power levels users %v", ver, users)
			}

			// Messages until a v3 ID holds a '/', which must survive the
			// path escaped (half of all IDs do; 20 tries miss once in 10^6).
			var msgID string
			for i := range 20 {
				msgID = c.MustDo("PUT", path("/send/m.room.message/t"+strconv.Itoa(i)), map[string]any{"msgtype": "m.text", "body": "hi"}).Str("event_id")
				checkEventIDForm(t, ver, msgID)
				if ver != 3 || strings.Contains(msgID, "/") {
					break
				}
			}
			if ev := c.MustDo("GET", path("/event/"+esc(msgID)), nil); ev.Str("event_id") != msgID {
				t.Fatalf("event by ID: %s", ev.Raw)
			}
			stateID := c.MustDo("PUT", path("/state/m.room.topic/"), map[string]any{"topic": "t" + vs}).Str("event_id")
			checkEventIDForm(t, ver, stateID)
			if topic := c.MustDo("GET", path("/state/m.room.topic/"), nil); topic.Str("topic") != "t"+vs {
				t.Fatalf("topic %s", topic.Raw)
			}

			bob.MustDo("POST", v3("/join/"+esc(room)), map[string]any{})
			bobMsg := bob.MustDo("PUT", path("/send/m.room.message/b1"), map[string]any{"msgtype": "m.text", "body": "bob"}).Str("event_id")
			checkEventIDForm(t, ver, bobMsg)
			// The admin (redact level) redacts bob's message, bob his own...
			redID := c.MustDo("PUT", path("/redact/"+esc(bobMsg)+"/r1"), map[string]any{"reason": "x"}).Str("event_id")
			checkEventIDForm(t, ver, redID)
			if ev := c.MustDo("GET", path("/event/"+esc(bobMsg)), nil); len(ev.Body["content"].(map[string]any)) != 0 {
				t.Fatalf("redacted event %s", ev.Raw)
			}
			// ...but not the admin's.
			if r := bob.Do("PUT", path("/redact/"+esc(msgID)+"/r2"), map[string]any{}); r.Status != 403 {
				t.Fatalf("bob redacting the admin's event: %d %s", r.Status, r.Raw)
			}
			bob.MustDo("POST", path("/leave"), map[string]any{})
			if m := c.MustDo("GET", path("/state/m.room.member/"+esc("@vbob:localhost")), nil); m.Str("membership") != "leave" {
				t.Fatalf("bob's membership %s", m.Raw)
			}
		})
	}
}

// A room created without room_version has the default version, 10 unless
// configured otherwise, with the creator in the power levels.
func TestDefaultRoomVersion(t *testing.T) {
	env, c := newServer(t)
	c.Register("dadmin", "pw")
	room := createRoom(t, c, map[string]any{})
	if v := c.MustDo("GET", v3("/rooms/"+esc(room)+"/state/m.room.create/"), nil).Str("room_version"); v != "10" {
		t.Fatalf("default room version %q", v)
	}
	users := c.MustDo("GET", v3("/rooms/"+esc(room)+"/state/m.room.power_levels/"), nil).Body["users"].(map[string]any)
	if users["@dadmin:localhost"] != float64(100) {
		t.Fatalf("creator not in power levels: %v", users)
	}

	cfg := apitest.DefaultConfig()
	cfg.DefaultRoomVersion = "12"
	c12 := apitest.NewClient(t, env.API(cfg).URL)
	c12.Register("dadmin12", "pw")
	room = createRoom(t, c12, map[string]any{})
	if v := c12.MustDo("GET", v3("/rooms/"+esc(room)+"/state/m.room.create/"), nil).Str("room_version"); v != "12" {
		t.Fatalf("configured default room version gave %q", v)
	}
	caps := c12.MustDo("GET", v3("/capabilities"), nil).Body["capabilities"].(map[string]any)["m.room_versions"].(map[string]any)
	if caps["default"] != "12" {
		t.Fatalf("capability default %v", caps["default"])
	}
}
