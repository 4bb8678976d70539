package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// embeddedNATS runs JetStream inside this process with its store in the
// data directory. It does not listen on the network: the roles in this
// process reach it through an in-process connection.
type embeddedNATS struct {
	srv *server.Server
	dir string
}

func startEmbeddedNATS(dataDir, syncSetting string) (*embeddedNATS, error) {
	dir := filepath.Join(dataDir, "jetstream")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create JetStream store %s: %w", dir, err)
	}
	opts := &server.Options{
		ServerName: "strand-embedded",
		DontListen: true,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	}
	switch syncSetting {
	case "always", "":
		// Every acknowledged append is on disk: the default, because a
		// client told "sent" must never lose the message to a power cut.
		opts.SyncAlways = true
	default:
		d, err := time.ParseDuration(syncSetting)
		if err != nil {
			return nil, fmt.Errorf("--nats-sync must be always or a duration: %w", err)
		}
		opts.SyncInterval = d
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded JetStream: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded JetStream in %s did not start (is another strand using this data directory?)", dir)
	}
	return &embeddedNATS{srv: ns, dir: dir}, nil
}

func (e *embeddedNATS) connect() (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(e.srv), nats.Name("strand"))
}

func (e *embeddedNATS) shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// connectNATS dials an external NATS server. Once connected it reconnects
// forever: a NATS restart is survived, and writes meanwhile fail with a
// retryable error instead of a false success.
func connectNATS(url string, logger *slog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(url,
		nats.Name("strand"),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logger.Info("NATS reconnected", "url", c.ConnectedUrlRedacted())
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	return nc, nil
}
