package api_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"strand/api/apitest"
)

// Reporting an event, a room or a user: the three endpoints are routed,
// check the reason and the pre-1.18 score, answer 404 for what the
// reporter cannot see, and keep each accepted report in the projection
// (through the log, so a replay rebuilds them) and no refused one.
func TestContentReports(t *testing.T) {
	env, c := newServer(t)
	c.Register("reporter", "pw")
	stranger := apitest.NewClient(t, c.Base)
	stranger.Register("stranger", "pw")
	room := createRoom(t, c, map[string]any{"preset": "private_chat"})
	public := createRoom(t, c, map[string]any{"preset": "public_chat"})
	other := createRoom(t, c, map[string]any{})
	rp := func(roomID, p string) string { return v3("/rooms/" + url.PathEscape(roomID) + p) }
	ev := c.MustDo("PUT", rp(room, "/send/m.room.message/r1"), map[string]any{"msgtype": "m.text", "body": "rude"}).Str("event_id")
	foreign := c.MustDo("PUT", rp(other, "/send/m.room.message/r2"), map[string]any{"msgtype": "m.text", "body": "elsewhere"}).Str("event_id")
	reportEvent := rp(room, "/report/"+url.PathEscape(ev))

	refused := []struct {
		c          *apitest.Client
		path, body string
		status     int
		code       string
	}{
		{c, reportEvent, `{"reason":5}`, 400, "M_BAD_JSON"},
		{c, reportEvent, `{"reason":"x","score":"bad"}`, 400, "M_BAD_JSON"},
		{c, reportEvent, `{"reason":"x","score":1}`, 400, "M_INVALID_PARAM"},
		{c, reportEvent, `{"reason":"x","score":-101}`, 400, "M_INVALID_PARAM"},
		{c, reportEvent, `{"reason":"` + strings.Repeat("a", 4097) + `"}`, 400, "M_INVALID_PARAM"},
		{c, rp(room, "/report/"+url.PathEscape("$nosuch:localhost")), `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{c, rp(room, "/report/"+url.PathEscape(foreign)), `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{stranger, reportEvent, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{c, rp(room, "/report"), `{}`, 400, "M_MISSING_PARAM"},
		{c, rp("!nosuch:localhost", "/report"), `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{stranger, rp(room, "/report"), `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{c, v3("/users/" + url.PathEscape("@nobody:localhost") + "/report"), `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{c, v3("/users/" + url.PathEscape(stranger.UserID) + "/report"), `{}`, 400, "M_MISSING_PARAM"},
	}
	for _, tc := range refused {
		if r := tc.c.Do("POST", tc.path, tc.body); r.Status != tc.status || r.Errcode() != tc.code {
			t.Errorf("POST %s %.40s: %d %s, want %d %s", tc.path, tc.body, r.Status, r.Raw, tc.status, tc.code)
		}
	}

	c.MustDo("POST", reportEvent, map[string]any{"reason": "rude", "score": -50})
	c.MustDo("POST", reportEvent, map[string]any{})
	c.MustDo("POST", rp(room, "/report"), map[string]any{"reason": ""})
	stranger.MustDo("POST", rp(public, "/report"), map[string]any{"reason": "spam room"})
	c.MustDo("POST", v3("/users/"+url.PathEscape(stranger.UserID)+"/report"), map[string]any{"reason": "spammer"})

	reports, err := env.Store().ContentReports(context.Background(), c.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 4 {
		t.Fatalf("reports kept: %+v, want the 4 accepted", reports)
	}
	first := reports[0]
	if first.RoomID != room || first.EventID != ev || first.Reason != "rude" || first.Score == nil || *first.Score != -50 || first.TS == 0 {
		t.Errorf("event report kept as %+v", first)
	}
	if r := reports[2]; r.RoomID != room || r.EventID != "" || r.Reason != "" {
		t.Errorf("room report kept as %+v", r)
	}
	if r := reports[3]; r.TargetUserID != stranger.UserID || r.Reason != "spammer" {
		t.Errorf("user report kept as %+v", r)
	}
	if theirs, err := env.Store().ContentReports(context.Background(), stranger.UserID); err != nil || len(theirs) != 1 || theirs[0].RoomID != public {
		t.Errorf("stranger's reports: %+v %v", theirs, err)
	}
	// Reports are rebuilt from the log like every other projected fact.
	projectionReplays(t, env, 64)
}
