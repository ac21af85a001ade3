package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testNet decides which in-process members can reach each other, so tests
// can partition a cluster: both the gossip transport and the control RPCs
// of each member consult it before sending.
type testNet struct {
	mu    sync.Mutex
	owner map[string]string // gossip or gRPC address -> member name
	side  map[string]int    // member name -> partition side
}

func newTestNet() *testNet {
	return &testNet{owner: map[string]string{}, side: map[string]int{}}
}

func (n *testNet) add(name string, addrs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range addrs {
		n.owner[a] = name
	}
}

// partition puts the named members on side 1, everyone else on side 0.
func (n *testNet) partition(names ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.side = map[string]int{}
	for _, name := range names {
		n.side[name] = 1
	}
}

func (n *testNet) heal() { n.partition() }

func (n *testNet) blocked(from *string, to string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if *from == "" {
		return false
	}
	dst, ok := n.owner[to]
	return ok && n.side[*from] != n.side[dst]
}

var errPartitioned = errors.New("test partition")

type filterTransport struct {
	memberlist.NodeAwareTransport
	net  *testNet
	self *string
}

func (t *filterTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.net.blocked(t.self, addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *filterTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.net.blocked(t.self, a.Addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *filterTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	if t.net.blocked(t.self, addr) {
		return nil, errPartitioned
	}
	return t.NodeAwareTransport.DialTimeout(addr, d)
}

func (t *filterTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	if t.net.blocked(t.self, a.Addr) {
		return nil, errPartitioned
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, d)
}

// testNode is a member with its own gRPC server on 127.0.0.1.
type testNode struct {
	c    *Cluster
	srv  *grpc.Server
	self string // member name, once known (read by the filters)
	done bool
}

type harness struct {
	t     *testing.T
	net   *testNet
	sec   *Security
	mu    sync.Mutex
	nodes []*testNode
}

func newHarness(t *testing.T, sec *Security) *harness {
	h := &harness{t: t, net: newTestNet(), sec: sec}
	t.Cleanup(h.stopAll)
	return h
}

func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn + 4 // quiet unless asked
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// start launches a member named prefix-<random>, joined to the first
// member started (if any) and marked ready.
func (h *harness) start(prefix string, edit func(*Config)) *testNode {
	h.t.Helper()
	return h.startAt(prefix, "127.0.0.1:0", edit)
}

// startAt is start with the gRPC server on grpcAddr (a restarted member
// that takes its old address back).
func (h *harness) startAt(prefix, grpcAddr string, edit func(*Config)) *testNode {
	h.t.Helper()
	var lis net.Listener
	var err error
	for try := 0; try < 50; try++ { // the old process's socket may linger a moment
		if lis, err = net.Listen("tcp", grpcAddr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	n := &testNode{}
	cfg := Config{
		Name:          prefix,
		BindAddr:      "127.0.0.1",
		AdvertiseAddr: "127.0.0.1",
		GRPCAddr:      lis.Addr().String(),
		MinNodes:      1,
		Timing:        FastTiming(),
		Security:      h.sec,
		JoinTimeout:   5 * time.Second,
		Logger:        testLogger(h.t),
		WrapTransport: func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
			return &filterTransport{NodeAwareTransport: t, net: h.net, self: &n.self}
		},
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(
			func(ctx context.Context, method string, req, resp any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, o ...grpc.CallOption) error {
				if h.net.blocked(&n.self, cc.Target()) {
					return status.Error(codes.Unavailable, errPartitioned.Error())
				}
				return inv(ctx, method, req, resp, cc, o...)
			})},
	}
	h.mu.Lock()
	if len(h.nodes) > 0 {
		cfg.Seeds = []string{h.nodes[0].c.GossipAddr()}
	}
	h.mu.Unlock()
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		lis.Close()
		h.t.Fatalf("start %s: %v", prefix, err)
	}
	h.net.add(c.Name(), c.GossipAddr(), cfg.GRPCAddr)
	h.net.mu.Lock()
	n.self = c.Name()
	h.net.mu.Unlock()
	n.c = c
	n.srv = grpc.NewServer(ServerOptions(h.sec)...)
	c.Register(n.srv)
	go n.srv.Serve(lis)
	h.mu.Lock()
	h.nodes = append(h.nodes, n)
	h.mu.Unlock()
	if err := c.Join(context.Background()); err != nil {
		h.t.Fatalf("join %s: %v", c.Name(), err)
	}
	c.SetReady()
	return n
}

// kill stops a member abruptly, as a crash would.
func (h *harness) kill(n *testNode) {
	h.mu.Lock()
	n.done = true
	h.mu.Unlock()
	n.srv.Stop()
	n.c.shutdown()
}

// leave closes a member gracefully.
func (h *harness) leave(n *testNode) {
	h.mu.Lock()
	n.done = true
	h.mu.Unlock()
	if err := n.c.Close(context.Background()); err != nil {
		h.t.Errorf("close %s: %v", n.c.Name(), err)
	}
	n.srv.Stop()
}

func (h *harness) stopAll() {
	h.mu.Lock()
	nodes := slices.Clone(h.nodes)
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		if !n.done {
			wg.Go(func() { n.srv.Stop(); n.c.shutdown() })
		}
	}
	wg.Wait()
}

// agree waits until every given member has committed the same generation,
// whose ring is exactly those members, and returns it.
func agree(t *testing.T, timeout time.Duration, nodes ...*testNode) Generation {
	t.Helper()
	want := make([]string, len(nodes))
	for i, n := range nodes {
		want[i] = n.c.Name()
	}
	slices.Sort(want)
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var g Generation
		ok := true
		for i, n := range nodes {
			n.c.mu.Lock()
			cur, mine := n.c.cur.clone(), n.c.mine
			n.c.mu.Unlock()
			if mine != cur.ID || !slices.Equal(cur.Names(), want) || (i > 0 && cur.ID != g.ID) {
				ok = false
				last = fmt.Sprintf("%s has %v (committed %d)", n.c.Name(), cur, mine)
				break
			}
			g = cur
		}
		if ok {
			return g
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("members %v did not agree on a generation of themselves within %s; last: %s", want, timeout, last)
	return Generation{}
}

// coordinatorOf returns the node that is coordinator by the election rule.
func coordinatorOf(t *testing.T, nodes ...*testNode) *testNode {
	t.Helper()
	best := nodes[0]
	for _, n := range nodes[1:] {
		if n.c.Name() < best.c.Name() {
			best = n
		}
	}
	return best
}
