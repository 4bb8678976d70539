// Package storetest gives each test its own fresh Postgres database on the
// real server (TEST_DATABASE_URL, default the local one). A server that
// cannot be reached fails the test: it never skips.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"strand/projector/store"
)

// DefaultURL is the local server the development machines and CI run.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func baseURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// withDatabase returns the base URL with its database name replaced.
func withDatabase(tb testing.TB, name string) string {
	u, err := url.Parse(baseURL())
	if err != nil {
		tb.Fatalf("storetest: TEST_DATABASE_URL must be a postgres:// URL: %v", err)
	}
	u.Path = "/" + name
	// Tests run many "processes" against one PostgreSQL at once; small
	// pools keep them under its connection limit.
	q := u.Query()
	if q.Get("pool_max_conns") == "" {
		q.Set("pool_max_conns", "6")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func baseConfig(tb testing.TB) *pgx.ConnConfig {
	u := baseURL()
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		tb.Fatalf("storetest: TEST_DATABASE_URL: %v", err)
	}
	return cfg
}

// NewURL creates an empty database, drops it when the test ends, and
// returns its URL.
func NewURL(tb testing.TB) string {
	tb.Helper()
	cfg := baseConfig(tb)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "strand_test_" + hex.EncodeToString(rnd[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		tb.Fatalf("storetest: PostgreSQL is required for this test: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("storetest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.ConnectConfig(ctx, admin)
		if err != nil {
			tb.Logf("storetest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Logf("storetest: drop %s: %v", name, err)
		}
	})
	return withDatabase(tb, name)
}

// Open creates a fresh database and opens a migrated Store on it.
func Open(tb testing.TB) (*store.Store, string) {
	tb.Helper()
	u := NewURL(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, u)
	if err != nil {
		tb.Fatalf("storetest: open: %v", err)
	}
	tb.Cleanup(s.Close)
	return s, u
}
