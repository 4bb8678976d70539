package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// newTransport is the HTTP transport every bench client shares: keep-alive
// connections sized for the largest concurrency a scenario uses (heldpolls
// holds thousands of requests open at once), no compression so response
// sizes are what the server wrote, plain HTTP/1.1 as most deployments sit
// behind a proxy that speaks it to the homeserver.
func newTransport(maxConns int) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          maxConns,
		MaxIdleConnsPerHost:   maxConns,
		MaxConnsPerHost:       0, // unlimited: heldpolls needs one connection per poll
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 0, // long-polls answer late on purpose
	}
}

// HTTPError is a response other than the one a scenario expected: the
// request and the response, verbatim enough to file as a bug.
type HTTPError struct {
	Method string
	Path   string
	Status int
	Body   string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s %s -> HTTP %d %s", e.Method, e.Path, e.Status, e.Body)
}

// Client is one logged-in (or not yet) Matrix user speaking the public
// client-server API.
type Client struct {
	HS       string
	HTTP     *http.Client
	UserID   string
	Token    string
	DeviceID string
	Password string
	Local    string // localpart the client registered with
	// Online makes the client's syncs mark it online, as a real client's
	// do (no set_presence). Off, syncs say set_presence=offline, so that
	// a scenario's own syncs do not wake the others with presence.
	Online bool
}

const prefix = "/_matrix/client/v3"

// call sends one request and reads the whole response body.
func (c *Client) call(ctx context.Context, method, path string, in any) (int, []byte, error) {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	} else if method == http.MethodPost || method == http.MethodPut {
		rd = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, c.HS+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, redactPath(path), err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, nil, fmt.Errorf("%s %s: reading the response: %w", method, redactPath(path), err)
	}
	return res.StatusCode, b, nil
}

// do is call expecting 200 and a JSON body decoded into out (if not nil).
// It returns the response size in bytes.
func (c *Client) do(ctx context.Context, method, path string, in, out any) (int, error) {
	status, b, err := c.call(ctx, method, path, in)
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return len(b), httpError(method, path, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return len(b), fmt.Errorf("%s %s: HTTP 200 with an undecodable body (%v): %s", method, redactPath(path), err, truncate(b))
		}
	}
	return len(b), nil
}

func httpError(method, path string, status int, body []byte) *HTTPError {
	return &HTTPError{Method: method, Path: redactPath(path), Status: status, Body: truncate(body)}
}

// redactPath drops long query values (filters, tokens) from error text.
func redactPath(p string) string {
	if len(p) > 240 {
		return p[:240] + "…"
	}
	return p
}

func truncate(b []byte) string {
	s := string(bytes.TrimSpace(b))
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

type authResponse struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

// Register creates the account localpart with m.login.dummy
// user-interactive auth. It first offers the dummy stage without a
// session (which servers whose only flow is dummy accept at once); a 401
// with a session and a dummy flow is answered with that session. rounds
// is the number of requests it took.
func (c *Client) Register(ctx context.Context, localpart, password string) (rounds int, err error) {
	body := map[string]any{
		"username": localpart, "password": password,
		"initial_device_display_name": "strand bench",
		"auth":                        map[string]any{"type": "m.login.dummy"},
	}
	for rounds = 1; rounds <= 2; rounds++ {
		status, b, err := c.call(ctx, http.MethodPost, prefix+"/register", body)
		if err != nil {
			return rounds, err
		}
		switch status {
		case http.StatusOK:
			var r authResponse
			if err := json.Unmarshal(b, &r); err != nil {
				return rounds, fmt.Errorf("POST /register: HTTP 200 with an undecodable body: %s", truncate(b))
			}
			if r.AccessToken == "" || r.DeviceID == "" || !strings.HasPrefix(r.UserID, "@"+localpart+":") {
				return rounds, fmt.Errorf("POST /register for %q: HTTP 200 without the expected user_id/access_token/device_id: %s", localpart, truncate(b))
			}
			c.UserID, c.Token, c.DeviceID, c.Password, c.Local = r.UserID, r.AccessToken, r.DeviceID, password, localpart
			return rounds, nil
		case http.StatusUnauthorized:
			var uia struct {
				Session string `json:"session"`
				Flows   []struct {
					Stages []string `json:"stages"`
				} `json:"flows"`
			}
			_ = json.Unmarshal(b, &uia)
			dummy := false
			for _, f := range uia.Flows {
				if len(f.Stages) == 1 && f.Stages[0] == "m.login.dummy" {
					dummy = true
				}
			}
			if rounds == 2 || uia.Session == "" || !dummy {
				return rounds, httpError(http.MethodPost, prefix+"/register", status, b)
			}
			body["auth"] = map[string]any{"type": "m.login.dummy", "session": uia.Session}
		default:
			return rounds, httpError(http.MethodPost, prefix+"/register", status, b)
		}
	}
	return rounds, nil
}

// Login logs localpart in with a password, as a new device, and returns
// the new session (the receiver is not changed).
func (c *Client) Login(ctx context.Context, localpart, password string) (*Client, error) {
	var r authResponse
	_, err := c.do(ctx, http.MethodPost, prefix+"/login", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password":   password,
	}, &r)
	if err != nil {
		return nil, err
	}
	if r.AccessToken == "" || r.DeviceID == "" || !strings.HasPrefix(r.UserID, "@"+localpart+":") {
		return nil, fmt.Errorf("POST /login for %q: HTTP 200 without the expected user_id/access_token/device_id", localpart)
	}
	return &Client{HS: c.HS, HTTP: c.HTTP, UserID: r.UserID, Token: r.AccessToken, DeviceID: r.DeviceID, Password: password, Local: localpart}, nil
}

// WhoAmI returns the user ID the access token belongs to.
func (c *Client) WhoAmI(ctx context.Context) (string, error) {
	var r struct {
		UserID string `json:"user_id"`
	}
	_, err := c.do(ctx, http.MethodGet, prefix+"/account/whoami", nil, &r)
	return r.UserID, err
}

// CreateRoom creates a room (public_chat when public, so others can join
// by ID) and returns its ID.
func (c *Client) CreateRoom(ctx context.Context, public bool) (string, error) {
	preset := "private_chat"
	if public {
		preset = "public_chat"
	}
	var r struct {
		RoomID string `json:"room_id"`
	}
	if _, err := c.do(ctx, http.MethodPost, prefix+"/createRoom", map[string]any{"preset": preset}, &r); err != nil {
		return "", err
	}
	if r.RoomID == "" {
		return "", fmt.Errorf("POST /createRoom: HTTP 200 without room_id")
	}
	return r.RoomID, nil
}

// Join joins a room by ID.
func (c *Client) Join(ctx context.Context, roomID string) error {
	var r struct {
		RoomID string `json:"room_id"`
	}
	if _, err := c.do(ctx, http.MethodPost, prefix+"/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{}, &r); err != nil {
		return err
	}
	if r.RoomID != roomID {
		return fmt.Errorf("POST /rooms/%s/join: HTTP 200 with room_id %q", roomID, r.RoomID)
	}
	return nil
}

// Tag marks a message a scenario sent: its run and sequence number.
type Tag struct {
	Run string `json:"run"`
	Seq int    `json:"seq"`
}

// tagKey is the content key the tag travels under.
const tagKey = "org.strand.bench"

// Send sends an m.room.message carrying tag, with the transaction ID
// txnID, and returns the event ID.
func (c *Client) Send(ctx context.Context, roomID, txnID string, tag Tag) (string, error) {
	content := map[string]any{
		"msgtype": "m.text",
		"body":    "bench " + tag.Run + " " + strconv.Itoa(tag.Seq),
		tagKey:    tag,
	}
	var r struct {
		EventID string `json:"event_id"`
	}
	path := prefix + "/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(txnID)
	if _, err := c.do(ctx, http.MethodPut, path, content, &r); err != nil {
		return "", err
	}
	if r.EventID == "" {
		return "", fmt.Errorf("PUT %s: HTTP 200 without event_id", path)
	}
	return r.EventID, nil
}

// Event is the part of a client event the scenarios look at.
type Event struct {
	Type     string  `json:"type"`
	EventID  string  `json:"event_id"`
	Sender   string  `json:"sender"`
	StateKey *string `json:"state_key"`
	Content  struct {
		Tag *Tag `json:"org.strand.bench"`
	} `json:"content"`
}

// tagOf returns the event's bench tag if it belongs to run.
func (e *Event) tagOf(run string) (Tag, bool) {
	if e.Type != "m.room.message" || e.Content.Tag == nil || e.Content.Tag.Run != run {
		return Tag{}, false
	}
	return *e.Content.Tag, true
}

// Timeline is a room's timeline section of a sync response.
type Timeline struct {
	Events    []Event `json:"events"`
	Limited   bool    `json:"limited"`
	PrevBatch string  `json:"prev_batch"`
}

// JoinedRoom is a joined room of a sync response.
type JoinedRoom struct {
	State struct {
		Events []Event `json:"events"`
	} `json:"state"`
	Timeline Timeline `json:"timeline"`
	Summary  struct {
		Joined *int `json:"m.joined_member_count"`
	} `json:"summary"`
}

// SyncResponse is the part of a /sync response the scenarios look at.
type SyncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]JoinedRoom `json:"join"`
	} `json:"rooms"`
}

// Sync calls /sync. since empty is an initial sync; filter is inline JSON
// or empty. Unless c.Online, presence is left alone
// (set_presence=offline), so a bench client's own syncs do not wake the
// others' long-polls with presence.
// It returns the response size in bytes.
func (c *Client) Sync(ctx context.Context, since string, timeout time.Duration, filter string) (*SyncResponse, int, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	if filter != "" {
		q.Set("filter", filter)
	}
	if !c.Online {
		q.Set("set_presence", "offline")
	}
	var r SyncResponse
	n, err := c.do(ctx, http.MethodGet, prefix+"/sync?"+q.Encode(), nil, &r)
	if err != nil {
		return nil, n, err
	}
	if r.NextBatch == "" {
		return nil, n, fmt.Errorf("GET /sync: HTTP 200 without next_batch")
	}
	return &r, n, nil
}

// MessagesPage is a /messages response.
type MessagesPage struct {
	Start string  `json:"start"`
	End   string  `json:"end"`
	Chunk []Event `json:"chunk"`
}

// Messages pages a room's history from a token (empty: the newest end,
// backwards) in direction dir.
func (c *Client) Messages(ctx context.Context, roomID, from, dir string, limit int) (*MessagesPage, error) {
	q := url.Values{}
	if from != "" {
		q.Set("from", from)
	}
	q.Set("dir", dir)
	q.Set("limit", strconv.Itoa(limit))
	var r MessagesPage
	if _, err := c.do(ctx, http.MethodGet, prefix+"/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
