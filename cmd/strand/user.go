package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"strand/api"
)

// userCommand administers users through a running server's HTTP API, so it
// works against any deployment and leaves every fact on the log.
type userCommand struct{}

func (c *userCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New("usage: strand user create --username NAME --password PW [--admin] [--hs URL] [--shared-secret S]")
	}
	fs := flag.NewFlagSet("user create", flag.ContinueOnError)
	e := envFlags{fs}
	var hs, secret, username, password, displayname string
	var admin bool
	e.str(&hs, "hs", "STRAND_URL", "http://127.0.0.1:8008", "homeserver base URL")
	e.str(&secret, "shared-secret", "STRAND_REGISTRATION_SHARED_SECRET", "", "the server's --registration-shared-secret")
	fs.StringVar(&username, "username", "", "localpart of the new user")
	fs.StringVar(&password, "password", "", "password of the new user")
	fs.StringVar(&displayname, "displayname", "", "display name")
	fs.BoolVar(&admin, "admin", false, "make the user a server admin")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if secret == "" || username == "" || password == "" {
		return errors.New("user create needs --shared-secret, --username and --password")
	}
	uid, err := createUser(ctx, strings.TrimRight(hs, "/"), secret, username, password, displayname, admin)
	if err != nil {
		return err
	}
	fmt.Println(uid)
	return nil
}

func createUser(ctx context.Context, hs, secret, username, password, displayname string, admin bool) (string, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	endpoint := hs + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := doJSON(ctx, client, http.MethodGet, endpoint, nil, &nonce); err != nil {
		return "", err
	}
	body := map[string]any{
		"nonce": nonce.Nonce, "username": username, "password": password, "admin": admin,
		"displayname": displayname,
		"mac":         api.SharedSecretMAC(secret, nonce.Nonce, username, password, admin, ""),
	}
	var resp struct {
		UserID string `json:"user_id"`
	}
	if err := doJSON(ctx, client, http.MethodPost, endpoint, body, &resp); err != nil {
		return "", err
	}
	return resp.UserID, nil
}

func doJSON(ctx context.Context, client *http.Client, method, url string, in, out any) error {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, res.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}
