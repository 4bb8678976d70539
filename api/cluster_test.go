package api_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"strand/api/apitest"
	"strand/eventlog"
	"strand/eventlog/logtest"
	"strand/projector/store/storetest"
)

// sendRetrying sends one message, retrying the same transaction while the
// log answers 503 (a cluster electing a new stream leader).
func sendRetrying(t *testing.T, c *apitest.Client, roomID string, i int) string {
	t.Helper()
	path := v3(fmt.Sprintf("/rooms/%s/send/m.room.message/c%d", url.PathEscape(roomID), i))
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.Do("PUT", path, map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i)})
		if r.Status == 200 {
			return r.Str("event_id")
		}
		if r.Status != 503 || time.Now().After(deadline) {
			t.Fatalf("send %d: %d %s", i, r.Status, r.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The log on three nats-servers with R3 streams: with one server stopped,
// writes and syncs go on; when it returns it catches up.
func TestNATSClusterOneNodeDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	cl := logtest.StartCluster(t, 3)
	env := &apitest.Env{T: t, URL: cl.URLs(), Replicas: 3, DBURL: storetest.NewURL(t)}
	env.Projector()
	c := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	c.Register("clustered", "pw")
	roomID := c.MustDo("POST", v3("/createRoom"), map[string]any{}).Str("room_id")
	sent := map[string]bool{}
	for i := range 20 {
		sent[sendRetrying(t, c, roomID, i)] = true
	}
	since := c.MustDo("GET", v3("/sync?set_presence=offline"), nil).Str("next_batch")

	cl.Nodes[0].Stop()
	for i := 20; i < 40; i++ {
		sent[sendRetrying(t, c, roomID, i)] = true
	}
	r := c.MustDo("GET", v3("/sync?set_presence=offline&timeout=5000&since="+url.QueryEscape(since)), nil)
	if r.Status != 200 || len(r.Body["rooms"].(map[string]any)["join"].(map[string]any)) != 1 {
		t.Fatalf("sync with a node down: %s", r.Raw)
	}
	cl.Restart(0)
	for i := 40; i < 50; i++ {
		sent[sendRetrying(t, c, roomID, i)] = true
	}
	got := map[string]int{}
	from := ""
	for {
		q := "?dir=b&limit=100"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		page := c.MustDo("GET", v3("/rooms/"+url.PathEscape(roomID)+"/messages"+q), nil)
		for _, e := range page.Body["chunk"].([]any) {
			if ev := e.(map[string]any); ev["type"] == "m.room.message" {
				got[ev["event_id"].(string)]++
			}
		}
		if from = page.Str("end"); from == "" {
			break
		}
	}
	for id := range sent {
		if got[id] != 1 {
			t.Errorf("acknowledged %s present %d times", id, got[id])
		}
	}
	// The returned node catches up: every replica of ROOMS is current.
	l := env.Conn()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := l.JetStream().Stream(context.Background(), eventlog.StreamRooms)
		if err == nil {
			info, err := s.Info(context.Background())
			if err == nil && info.Cluster != nil && len(info.Cluster.Replicas) == 2 {
				current := true
				for _, rep := range info.Cluster.Replicas {
					current = current && rep.Current && !rep.Offline
				}
				if current {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the restarted node did not catch up")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
