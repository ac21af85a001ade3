package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

func init() { encoding.RegisterCodec(codec{}) }

const (
	serviceName   = "difftrain.cluster.Control"
	methodPropose = "/" + serviceName + "/Propose"
	methodCommit  = "/" + serviceName + "/Commit"
	methodAbort   = "/" + serviceName + "/Abort"
	methodReport  = "/" + serviceName + "/Report"
	methodStatus  = "/" + serviceName + "/Status"
)

// Register adds the control service (Propose, Commit, Abort, Report,
// Status) to s.
// Create s with ServerOptions so that its calls are authenticated.
func (c *Cluster) Register(s *grpc.Server) { s.RegisterService(&serviceDesc, c) }

// control is the interface the service descriptor dispatches to.
type control interface {
	handlePropose(context.Context, *proposal) (*ack, error)
	handleCommit(*commit) *reply
	handleAbort(*abort) *reply
	handleReport(*report) *reply
	Status() Status
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*control)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Propose", Handler: unary(methodPropose, func(ctx context.Context, c control, p *proposal) (*ack, error) {
			a, err := c.handlePropose(ctx, p)
			if errors.Is(err, ErrClosed) {
				// Tell the coordinator this member is leaving, not broken.
				return nil, status.Error(codes.Unavailable, err.Error())
			}
			return a, err
		})},
		{MethodName: "Commit", Handler: unary(methodCommit, func(_ context.Context, c control, m *commit) (*reply, error) {
			return c.handleCommit(m), nil
		})},
		{MethodName: "Abort", Handler: unary(methodAbort, func(_ context.Context, c control, a *abort) (*reply, error) {
			return c.handleAbort(a), nil
		})},
		{MethodName: "Report", Handler: unary(methodReport, func(_ context.Context, c control, r *report) (*reply, error) {
			return c.handleReport(r), nil
		})},
		{MethodName: "Status", Handler: unary(methodStatus, func(_ context.Context, c control, _ *statusRequest) (*Status, error) {
			s := c.Status()
			return &s, nil
		})},
	},
	Metadata: "difftrain/cluster/control",
}

// unary builds a method handler that decodes a Req (a malformed one is
// refused with InvalidArgument), runs the interceptor chain and calls fn.
func unary[Req any, Resp message, PReq interface {
	*Req
	message
}](method string, fn func(context.Context, control, PReq) (Resp, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		req := PReq(new(Req))
		if err := dec(req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %v", method, err)
		}
		c := srv.(control)
		if icpt == nil {
			return fn(ctx, c, req)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: method}
		return icpt(ctx, req, info, func(ctx context.Context, r any) (any, error) {
			return fn(ctx, c, r.(PReq))
		})
	}
}

// conn returns a cached client connection to addr.
func (c *Cluster) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, c.dial...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

func (c *Cluster) call(ctx context.Context, addr, method string, req, resp message) error {
	cc, err := c.conn(addr)
	if err != nil {
		return err
	}
	if err := cc.Invoke(ctx, method, req, resp, grpc.ForceCodec(codec{})); err != nil {
		st, ok := status.FromError(err)
		if ok && st.Code() == codes.Unavailable && strings.HasSuffix(st.Message(), ErrClosed.Error()) {
			return fmt.Errorf("%s to %s: %w: %s", method, addr, ErrClosed, st.Message())
		}
		if ok && st.Code() == codes.Unavailable {
			// The connection is down: a process that restarts on this
			// address must be dialled afresh, not after gRPC's reconnect
			// backoff (up to two minutes).
			c.dropConn(addr, cc)
		}
		return fmt.Errorf("%s to %s: %w", method, addr, err)
	}
	return nil
}

// dropConn forgets the cached connection cc to addr.
func (c *Cluster) dropConn(addr string, cc *grpc.ClientConn) {
	c.mu.Lock()
	if c.conns[addr] == cc {
		delete(c.conns, addr)
	}
	c.mu.Unlock()
	cc.Close()
}

// ReconnectOptions bound gRPC's reconnect backoff, so that a member that
// restarts on its old address is reached within a second.
func ReconnectOptions() []grpc.DialOption {
	bc := backoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = 100*time.Millisecond, time.Second
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 2 * time.Second})}
}

func (c *Cluster) rpcContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.cfg.Timing.RPCTimeout)
}

// QueryStatus asks the node at the gRPC address addr for its Status.
func QueryStatus(ctx context.Context, addr string, sec *Security, opts ...grpc.DialOption) (Status, error) {
	cc, err := grpc.NewClient(addr, append(DialOptions(sec), opts...)...)
	if err != nil {
		return Status{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer cc.Close()
	var s Status
	if err := cc.Invoke(ctx, methodStatus, &statusRequest{}, &s, grpc.ForceCodec(codec{})); err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", addr, err)
	}
	return s, nil
}
