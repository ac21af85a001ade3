package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCheckExposure(t *testing.T) {
	key := mustSecurity(t, "the-cluster-secret-0123")
	tlsOnly := &Security{} // mutual TLS without a key: no gossip key
	gossip := func(addr string) []Listener { return []Listener{{Flag: "--bind", Addr: addr, Gossip: true}} }
	grpcL := func(addr string) []Listener { return []Listener{{Flag: "--grpc", Addr: addr}} }
	tests := []struct {
		name     string
		ls       []Listener
		sec      *Security
		insecure bool
		refused  bool
	}{
		{"loopback without key", append(gossip("127.0.0.1:7946"), grpcL("127.0.0.1:7947")...), nil, false, false},
		{"localhost and ::1", append(gossip("localhost:7946"), grpcL("[::1]:7947")...), nil, false, false},
		{"unused address", gossip(""), nil, false, false},
		{"every interface without key", gossip("0.0.0.0:7946"), nil, false, true},
		{"empty host is every interface", grpcL(":7947"), nil, false, true},
		{"a host name without key", grpcL("node1:7947"), nil, false, true},
		{"private address without key", grpcL("10.0.0.2:7947"), nil, false, true},
		{"with key", append(gossip("0.0.0.0:7946"), grpcL("0.0.0.0:7947")...), key, false, false},
		{"TLS covers gRPC", grpcL("0.0.0.0:7947"), tlsOnly, false, false},
		{"TLS does not cover gossip", gossip("0.0.0.0:7946"), tlsOnly, false, true},
		{"insecure allows it", gossip("0.0.0.0:7946"), nil, true, false},
	}
	for _, tc := range tests {
		var logs bytes.Buffer
		err := CheckExposure(tc.ls, tc.sec, tc.insecure, slog.New(slog.NewTextHandler(&logs, nil)))
		if (err != nil) != tc.refused {
			t.Errorf("%s: got %v, want refused %v", tc.name, err, tc.refused)
		}
		if err != nil && (!strings.Contains(err.Error(), EnvKey) || !strings.Contains(err.Error(), "--insecure") || !strings.Contains(err.Error(), tc.ls[0].Flag)) {
			t.Errorf("%s: error %q does not name the flag, %s and --insecure", tc.name, err, EnvKey)
		}
		if warned := strings.Count(logs.String(), "level=WARN"); warned != 0 && !tc.insecure {
			t.Errorf("%s: %d warnings without --insecure", tc.name, warned)
		}
	}
}

// TestInsecureWarnsOnce: --insecure with several exposed addresses logs one
// warning that names them all.
func TestInsecureWarnsOnce(t *testing.T) {
	var logs bytes.Buffer
	ls := []Listener{
		{Flag: "--bind", Addr: "0.0.0.0:7946", Gossip: true},
		{Flag: "--grpc", Addr: "0.0.0.0:7947"},
		{Flag: "--metrics-addr", Addr: "0.0.0.0:9090"},
	}
	if err := CheckExposure(ls, nil, true, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, out)
	}
	for _, l := range ls {
		if !strings.Contains(out, l.Flag+" "+l.Addr) {
			t.Errorf("warning does not name %s %s:\n%s", l.Flag, l.Addr, out)
		}
	}
}

// TestGossipDefaultsToLoopback: without a key the gossip listens on
// 127.0.0.1 (TCP and UDP), and an address beyond loopback is refused
// before anything is bound; with the key the default is every interface.
func TestGossipDefaultsToLoopback(t *testing.T) {
	c, err := New(Config{Name: "lo", GRPCAddr: "127.0.0.1:1", Timing: FastTiming(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.shutdown()
	host, _, err := net.SplitHostPort(c.GossipAddr())
	if err != nil || host != "127.0.0.1" {
		t.Errorf("gossip on %q without a key, want 127.0.0.1", c.GossipAddr())
	}
	if c.cfg.BindAddr != "127.0.0.1" {
		t.Errorf("gossip bound to %q without a key, want 127.0.0.1", c.cfg.BindAddr)
	}

	for _, cfg := range []Config{
		{BindAddr: "0.0.0.0"},
		{BindAddr: "127.0.0.1", AdvertiseAddr: "10.0.0.2"},
		{BindAddr: "0.0.0.0", Security: &Security{}}, // TLS only
	} {
		cfg.GRPCAddr, cfg.Name = "127.0.0.1:1", "exposed"
		// withDefaults runs first in New: nothing is bound when it refuses.
		if _, err := cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), EnvKey) {
			t.Errorf("bind %s advertise %q: got %v, want a refusal naming %s", cfg.BindAddr, cfg.AdvertiseAddr, err, EnvKey)
		}
		cfg.Insecure = true
		if _, err := cfg.withDefaults(); err != nil {
			t.Errorf("bind %s with Insecure: %v", cfg.BindAddr, err)
		}
	}
	keyed, err := Config{GRPCAddr: "127.0.0.1:1", Security: mustSecurity(t, "the-cluster-secret-0123")}.withDefaults()
	if err != nil || keyed.BindAddr != "0.0.0.0" {
		t.Errorf("with a key: bind %q, %v; want 0.0.0.0", keyed.BindAddr, err)
	}
}

// TestAuthBeforeRead: the token is checked when a call opens, before its
// message is read, so a call without one is refused as Unauthenticated even
// when its message exceeds what the server would accept.
func TestAuthBeforeRead(t *testing.T) {
	sec := mustSecurity(t, "the-cluster-secret-0123")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Name: "srv", BindAddr: "127.0.0.1", GRPCAddr: lis.Addr().String(),
		Security: sec, Timing: FastTiming(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(ServerOptions(sec), grpc.MaxRecvMsgSize(1<<10))...)
	c.Register(srv)
	go srv.Serve(lis)
	defer func() { srv.Stop(); c.shutdown() }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := &report{Gen: 1, Reporter: "x", Err: strings.Repeat("e", 1000), Peer: strings.Repeat("p", 200)}
	for name, s := range map[string]*Security{"no token": nil, "wrong key": mustSecurity(t, "not-the-cluster-secret")} {
		cc, err := grpc.NewClient(lis.Addr().String(), DialOptions(s)...)
		if err != nil {
			t.Fatal(err)
		}
		var r reply
		err = cc.Invoke(ctx, methodReport, big, &r, grpc.ForceCodec(codec{}))
		cc.Close()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: got %v, want Unauthenticated before the oversized message is read", name, err)
		}
	}
	// With the key the same call gets past authentication to the size limit.
	cc, err := grpc.NewClient(lis.Addr().String(), DialOptions(sec)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var r reply
	if err := cc.Invoke(ctx, methodReport, big, &r, grpc.ForceCodec(codec{})); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("with the key: got %v, want ResourceExhausted from the size limit", err)
	}
}
