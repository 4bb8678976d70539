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
	"net/url"
	"strings"
	"time"

	"strand/api"
)

// userCommand administers users through a running server's HTTP API, so it
// works against any deployment and leaves every fact on the log.
type userCommand struct{}

const userUsage = `usage:
  strand user create --username NAME --password PW [--admin] [--hs URL] [--shared-secret S]
  strand user reset-password --user @name:server --password PW [--keep-devices] [--hs URL] [--admin-token T]
  strand user deactivate --user @name:server [--hs URL] [--admin-token T]`

func (c *userCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(userUsage)
	}
	switch args[0] {
	case "create":
		return c.create(ctx, args[1:])
	case "reset-password", "deactivate":
		return c.admin(ctx, args[0], args[1:])
	}
	return errors.New(userUsage)
}

// admin runs an admin action through the server's admin API, with the
// access token of a server admin.
func (c *userCommand) admin(ctx context.Context, action string, args []string) error {
	fs := flag.NewFlagSet("user "+action, flag.ContinueOnError)
	e := envFlags{fs}
	var hs, token, user, password string
	var keep bool
	e.str(&hs, "hs", "STRAND_URL", "http://127.0.0.1:8008", "homeserver base URL")
	e.str(&token, "admin-token", "STRAND_ADMIN_TOKEN", "", "access token of a server admin")
	fs.StringVar(&user, "user", "", "the user ID")
	if action == "reset-password" {
		fs.StringVar(&password, "password", "", "the new password")
		fs.BoolVar(&keep, "keep-devices", false, "do not log out the user's devices")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if token == "" || user == "" || (action == "reset-password" && password == "") {
		return errors.New(userUsage)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	base := strings.TrimRight(hs, "/") + "/_synapse/admin/v1/"
	var body map[string]any
	var endpoint string
	if action == "reset-password" {
		endpoint = base + "reset_password/" + url.PathEscape(user)
		body = map[string]any{"new_password": password, "logout_devices": !keep}
	} else {
		endpoint = base + "deactivate/" + url.PathEscape(user)
		body = map[string]any{}
	}
	var out map[string]any
	if err := doJSONAuth(ctx, client, http.MethodPost, endpoint, token, body, &out); err != nil {
		return err
	}
	fmt.Println(action, "done:", user)
	return nil
}

func (c *userCommand) create(ctx context.Context, args []string) error {
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
	if err := parseFlags(fs, args); err != nil {
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
	return doJSONAuth(ctx, client, method, url, "", in, out)
}

func doJSONAuth(ctx context.Context, client *http.Client, method, url, token string, in, out any) error {
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
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
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
