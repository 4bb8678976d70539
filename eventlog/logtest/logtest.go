// Package logtest runs a real, in-process JetStream server for tests. It is
// never a mock: tests talk to it over a real NATS connection, and other
// processes (a strand binary under test) can reach it on its loopback port.
package logtest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
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

// Cluster is a three-or-more-node JetStream cluster on loopback.
type Cluster struct {
	Nodes []*Server
	opts  []*server.Options
	tb    testing.TB
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartCluster starts n clustered JetStream servers and waits until the
// cluster has a JetStream meta leader.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb}
	clientPorts := make([]int, n)
	routePorts := make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(tb), freePort(tb)
	}
	var routes []*url.URL
	for i := range n {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", routePorts[i])})
	}
	for i := range n {
		c.opts = append(c.opts, &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   tb.TempDir(),
			SyncAlways: true,
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "strand-test", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:     routes,
		})
	}
	for i := range n {
		c.Nodes = append(c.Nodes, c.start(i))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range c.Nodes {
			if s.Running() && s.JetStreamIsLeader() {
				return c
			}
		}
		if time.Now().After(deadline) {
			tb.Fatal("logtest: cluster elected no JetStream leader")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) start(i int) *Server {
	ns, err := server.NewServer(c.opts[i])
	if err != nil {
		c.tb.Fatalf("logtest: node %d: %v", i, err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		c.tb.Fatalf("logtest: node %d did not start", i)
	}
	s := &Server{Server: ns, StoreDir: c.opts[i].StoreDir}
	c.tb.Cleanup(s.Stop)
	return s
}

// Restart starts node i again on its store after Stop.
func (c *Cluster) Restart(i int) { c.Nodes[i] = c.start(i) }

// URLs is a client URL list of every node, for nats.Connect.
func (c *Cluster) URLs() string {
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(urls, ",")
}
