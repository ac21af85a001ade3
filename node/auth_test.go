package node

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/shard"
)

// authServer builds a gRPC server as Node.start does: the allreduce
// options, cluster.ServerOptions(sec), and every service a node hosts
// (control, allreduce Grad and Stats, state transfer, Flight).
func authServer(t *testing.T, sec *cluster.Security) (*grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	srv := grpc.NewServer(append(allreduce.ServerOptions(), cluster.ServerOptions(sec)...)...)
	dial := cluster.DialOptions(sec)
	allreduce.NewGRPCService(addr, "Grad", dial...).Register(srv)
	allreduce.NewGRPCService(addr, "Stats", dial...).Register(srv)
	var states stateServer
	states.register(srv)
	cl, err := cluster.New(cluster.Config{Name: "auth", BindAddr: "127.0.0.1", GRPCAddr: addr, Security: sec,
		Timing: cluster.FastTiming()})
	if err != nil {
		t.Fatal(err)
	}
	cl.Register(srv)
	fl := shard.RegisterFlight(srv, testData(t))
	go srv.Serve(lis)
	t.Cleanup(func() {
		srv.Stop()
		fl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cl.Close(ctx)
	})
	return srv, addr
}

// rawCall opens a stream on method, sends one message and returns the
// status the server ends it with.
func rawCall(ctx context.Context, addr, method string, opts []grpc.DialOption) error {
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return err
	}
	msg := []byte(`{"step":1}`)
	// A refused stream may end before the message goes out: SendMsg then
	// returns io.EOF and RecvMsg the status.
	if err := st.SendMsg(&msg); err == nil {
		st.CloseSend()
	}
	for {
		var b []byte
		if err := st.RecvMsg(&b); err != nil {
			return err
		}
	}
}

// TestEveryServiceAuthenticates: on a node with a cluster key, every
// method of every service refuses a call without the key
// (Unauthenticated), and a call with it gets past authentication.
func TestEveryServiceAuthenticates(t *testing.T) {
	sec, err := cluster.NewSecurity([]byte("the-cluster-secret-0123"), cluster.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := cluster.NewSecurity([]byte("not-the-cluster-secret"), cluster.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	srv, addr := authServer(t, sec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var services []string
	for svc, info := range srv.GetServiceInfo() {
		services = append(services, svc)
		for _, m := range info.Methods {
			method := "/" + svc + "/" + m.Name
			for name, s := range map[string]*cluster.Security{"no key": nil, "wrong key": wrong} {
				if err := rawCall(ctx, addr, method, cluster.DialOptions(s)); status.Code(err) != codes.Unauthenticated {
					t.Errorf("%s %s: got %v, want Unauthenticated", method, name, err)
				}
			}
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			err := rawCall(cctx, addr, method, cluster.DialOptions(sec))
			ccancel()
			if status.Code(err) == codes.Unauthenticated {
				t.Errorf("%s with the key: %v", method, err)
			}
		}
	}
	for _, want := range []string{"difftrain.cluster", "Grad", "Stats", stateService, "arrow.flight"} {
		if !slices.ContainsFunc(services, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("no service %q on the node's server (have %v): the test no longer covers it", want, services)
		}
	}
}

// TestClientsPresentTheKey: the clients a node and `trainer status` use
// (control status, Flight, state transfer) fail without the key with
// Unauthenticated and work with it.
func TestClientsPresentTheKey(t *testing.T) {
	sec, err := cluster.NewSecurity([]byte("the-cluster-secret-0123"), cluster.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := authServer(t, sec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := cluster.QueryStatus(ctx, addr, nil); status.Code(err) != codes.Unauthenticated {
		t.Errorf("status without the key: %v, want Unauthenticated", err)
	}
	if _, err := cluster.QueryStatus(ctx, addr, sec); err != nil {
		t.Errorf("status with the key: %v", err)
	}

	for _, s := range []*cluster.Security{nil, sec} {
		fc, err := shard.DialFlight(addr, cluster.DialOptions(s)...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fc.Manifest(ctx)
		fc.Close()
		if s == nil && status.Code(err) != codes.Unauthenticated {
			t.Errorf("Flight manifest without the key: %v, want Unauthenticated", err)
		}
		if s != nil && err != nil {
			t.Errorf("Flight manifest with the key: %v", err)
		}
	}

	// No snapshot is served, so with the key the state transfer fails
	// past authentication, naming the step.
	err = rawCall(ctx, addr, stateMethod, cluster.DialOptions(nil))
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("state transfer without the key: %v, want Unauthenticated", err)
	}
	err = rawCall(ctx, addr, stateMethod, cluster.DialOptions(sec))
	if err == nil || status.Code(err) == codes.Unauthenticated || !strings.Contains(err.Error(), "snapshot") {
		t.Errorf("state transfer with the key: %v, want a refusal for want of a snapshot", err)
	}
}
