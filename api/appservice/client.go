package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client makes the homeserver's requests to application services.
//
// It is a plain HTTP client, not the SSRF-guarded one URL previews use: a
// service's URL is written by the server's operator in a registration
// file, and services normally listen on loopback or the private network
// beside the homeserver, which the guard exists to refuse. Redirects are
// not followed (a service has no reason to send the homeserver, with its
// hs_token, elsewhere) and proxy settings from the environment are not
// used.
type Client struct {
	HTTP *http.Client
}

// NewClient returns a client whose requests time out after timeout.
func NewClient(timeout time.Duration) *Client {
	return &Client{HTTP: &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// maxResponse bounds what is read of a service's answer.
const maxResponse = 1 << 20

// StatusError is a service's answer with a status other than 2xx.
type StatusError struct {
	Status int
	Body   []byte
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("application service answered %d: %.200s", e.Status, e.Body)
}

// ErrNoURL is returned for a service whose url is null.
var ErrNoURL = errors.New("application service has no url")

// Do sends one request to the service with its hs_token and returns the
// body of a 2xx answer; any other status is a *StatusError.
func (c *Client) Do(ctx context.Context, reg *Registration, method, path string, query url.Values, body any) ([]byte, error) {
	if !reg.HasURL() {
		return nil, ErrNoURL
	}
	u := strings.TrimRight(*reg.URL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("application service %s: %w", reg.ID, err)
	}
	req.Header.Set("Authorization", "Bearer "+reg.HSToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("application service %s: %w", reg.ID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("application service %s: read answer: %w", reg.ID, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return b, &StatusError{Status: resp.StatusCode, Body: b}
	}
	return b, nil
}

// Transaction is the body of PUT /_matrix/app/v1/transactions/{txnId}.
type Transaction struct {
	Events    []json.RawMessage `json:"events"`
	Ephemeral []json.RawMessage `json:"ephemeral,omitempty"`
	// The unstable name MSC2409 bridges read.
	EphemeralUnstable []json.RawMessage `json:"de.sorunome.msc2409.ephemeral,omitempty"`
	// To-device messages for the service's users (MSC2409), under both
	// names bridges read.
	ToDevice         []json.RawMessage `json:"to_device,omitempty"`
	ToDeviceUnstable []json.RawMessage `json:"de.sorunome.msc2409.to_device,omitempty"`
}

// SendTransaction pushes one transaction. Any answer but 2xx (a 403 for
// a wrong hs_token included) is an error, and the transaction is retried.
func (c *Client) SendTransaction(ctx context.Context, reg *Registration, txnID string, txn Transaction) error {
	if txn.Events == nil {
		txn.Events = []json.RawMessage{} // required, even when empty
	}
	if len(txn.Ephemeral) > 0 {
		txn.EphemeralUnstable = txn.Ephemeral
	}
	if len(txn.ToDevice) > 0 {
		txn.ToDeviceUnstable = txn.ToDevice
	}
	_, err := c.Do(ctx, reg, http.MethodPut, "/_matrix/app/v1/transactions/"+url.PathEscape(txnID), nil, txn)
	return err
}

// QueryUser asks the service whether userID exists (it creates it if it
// wants to before answering 200).
func (c *Client) QueryUser(ctx context.Context, reg *Registration, userID string) (bool, error) {
	return c.query(ctx, reg, "/_matrix/app/v1/users/"+url.PathEscape(userID))
}

// QueryAlias asks the service whether alias exists (it creates the room
// and alias if it wants to before answering 200).
func (c *Client) QueryAlias(ctx context.Context, reg *Registration, alias string) (bool, error) {
	return c.query(ctx, reg, "/_matrix/app/v1/rooms/"+url.PathEscape(alias))
}

func (c *Client) query(ctx context.Context, reg *Registration, path string) (bool, error) {
	_, err := c.Do(ctx, reg, http.MethodGet, path, nil, nil)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// Ping calls the service's /_matrix/app/v1/ping.
func (c *Client) Ping(ctx context.Context, reg *Registration, txnID string) error {
	body := map[string]any{}
	if txnID != "" {
		body["transaction_id"] = txnID
	}
	_, err := c.Do(ctx, reg, http.MethodPost, "/_matrix/app/v1/ping", nil, body)
	return err
}

// ThirdParty forwards a third-party lookup (path below
// /_matrix/app/v1/thirdparty) and returns the service's JSON answer.
func (c *Client) ThirdParty(ctx context.Context, reg *Registration, path string, query url.Values) (json.RawMessage, error) {
	b, err := c.Do(ctx, reg, http.MethodGet, "/_matrix/app/v1/thirdparty"+path, query, nil)
	if err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("application service %s: answer is not JSON", reg.ID)
	}
	return b, nil
}
