// Package logtest runs a real, in-process JetStream server for tests. It is
// never a mock: tests talk to it over a real NATS connection, and other
// processes (a strand binary under test) can reach it on its loopback port.
package logtest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server is a running test JetStream server.
type Server struct {
	*server.Server
	StoreDir string
}

// Start starts a JetStream server on a random loopback port with its store
// in a temporary directory, and shuts it down when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartAt(tb, tb.TempDir())
}

// StartAt starts a server on an existing store directory, so a test can
// restart the log and check that nothing acknowledged was lost.
func StartAt(tb testing.TB, storeDir string) *Server {
	tb.Helper()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   storeDir,
		SyncAlways: true,
		NoLog:      true,
		NoSigs:     true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("logtest: new server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("logtest: JetStream server did not start")
	}
	s := &Server{Server: ns, StoreDir: storeDir}
	tb.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Connect opens a client connection that the test closes at the end.
func (s *Server) Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatalf("logtest: connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
