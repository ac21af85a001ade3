package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// gRPC wiring. There is no protobuf here: one client-streaming method whose
// messages are raw frames, marshalled by rawCodec without copying on the send
// side (gRPC writes the frame's own buffer and hands it back through
// Frame.Release) nor on receipt (a frame keeps the buffers gRPC read the
// payload into; forwarding it hands them back to gRPC to write).
const (
	servicePrefix = "difftrain.allreduce."
	codecName     = "difftrain-allreduce-raw"
	fromKey       = "difftrain-allreduce-from"

	// MaxMessage is the message size limit set explicitly on both ends of a
	// stream. Chunks (Config.ChunkBytes, at most 4 MiB) stay far below it.
	MaxMessage = 64 << 20
	// window is the HTTP/2 flow-control window per stream and connection:
	// large enough that a whole ring hop of chunks is in flight.
	window = 16 << 20
	ioBuf  = 512 << 10
)

func init() { encoding.RegisterCodecV2(rawCodec{}) }

// rawCodec carries *Frame values as their bytes.
type rawCodec struct{}

func (rawCodec) Name() string { return codecName }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*Frame)
	if !ok {
		return nil, fmt.Errorf("allreduce codec: cannot marshal %T", v)
	}
	via := f.via
	f.via = nil
	if len(f.parts) == 0 {
		return mem.BufferSlice{mem.NewBuffer(&f.Buf, frameRel{f, via})}, nil
	}
	// A received message forwarded as it came: the header from Buf, the
	// payload's buffers handed over to gRPC, which frees each once written
	// (through the connection that holds their bytes, if it does).
	out := make(mem.BufferSlice, 0, 1+len(f.parts))
	out = append(out, mem.NewBuffer(&f.Buf, frameRel{f, via}))
	if via == nil {
		out = append(out, f.parts...)
	} else {
		for _, b := range f.parts {
			d := b.ReadOnlyData()
			out = append(out, mem.NewBuffer(&d, partRel{b, via}))
		}
	}
	clear(f.parts)
	f.parts = f.parts[:0]
	return out, nil
}

// splitMin is the smallest message whose payload Unmarshal keeps in gRPC's
// receive buffers rather than copying out.
const splitMin = 64 << 10

// Unmarshal keeps a large message's payload in the buffers gRPC read it into
// (the frame holds references until released), and copies only its header:
// a copy of every gradient byte costs about a fifth of the ring's throughput.
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*Frame)
	if !ok {
		return fmt.Errorf("allreduce codec: cannot unmarshal into %T", v)
	}
	wireRead()
	n := data.Len()
	if n > MaxMessage {
		return fmt.Errorf("allreduce codec: message of %d bytes exceeds %d", n, MaxMessage)
	}
	f.freeParts()
	if n < splitMin || len(data) == 1 {
		if cap(f.Buf) < n {
			f.Buf = make([]byte, max(n, minFrameCap))
		}
		f.Buf = f.Buf[:n]
		data.CopyTo(f.Buf)
		return nil
	}
	if cap(f.Buf) < minFrameCap {
		f.Buf = make([]byte, minFrameCap)
	}
	f.Buf = f.Buf[:headerSize]
	at := 0
	for _, b := range data {
		d := b.ReadOnlyData()
		if at < headerSize {
			k := copy(f.Buf[at:], d)
			at += k
			if k == len(d) {
				continue
			}
			f.parts = append(f.parts, b.Slice(k, len(d)))
			continue
		}
		b.Ref()
		f.parts = append(f.parts, b)
	}
	return nil
}

// frameRel is the mem.BufferPool through which gRPC returns a sent frame:
// to its pool, or to the connection that may still hold its bytes.
type frameRel struct {
	f *Frame
	c *sendConn
}

func (frameRel) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (r frameRel) Put(b *[]byte) {
	r.f.Buf = (*b)[:0]
	if r.c != nil {
		r.c.releaseFrame(r.f)
		return
	}
	r.f.Release()
}

// partRel returns a forwarded receive buffer through the connection that
// may still hold its bytes.
type partRel struct {
	b mem.Buffer
	c *sendConn
}

func (partRel) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (r partRel) Put(*[]byte)     { r.c.releasePart(r.b) }

var streamDesc = grpc.StreamDesc{StreamName: "Stream", ClientStreams: true}

// ServerOptions returns the options that a gRPC server hosting the ring
// service needs: the message size limit and flow-control windows.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessage),
		grpc.InitialWindowSize(window),
		grpc.InitialConnWindowSize(window),
		grpc.ReadBufferSize(ioBuf),
		grpc.WriteBufferSize(ioBuf),
		experimental.BufferPool(recvPool),
	}
}

// recvPool is the buffer pool gRPC reads received frames into. gRPC's
// default pool clears every buffer it hands out, a full extra pass over the
// gradient bytes; these buffers are always overwritten by what is read, so
// they need no clearing.
var recvPool = newDirtyPool()

// dirtyPool is a mem.BufferPool of power-of-two size classes from 256 bytes
// to 1 MiB that hands buffers out without clearing them.
type dirtyPool struct{ classes [13]sync.Pool } // 2^8 .. 2^20

func newDirtyPool() *dirtyPool { return &dirtyPool{} }

const minClass, maxClass = 8, 20

// class returns the index of the smallest class holding n bytes, or -1.
func class(n int) int {
	for c := minClass; c <= maxClass; c++ {
		if n <= 1<<c {
			return c - minClass
		}
	}
	return -1
}

func (p *dirtyPool) Get(n int) *[]byte {
	c := class(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<(c+minClass))
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	// File a buffer under the largest class it can serve in full.
	n := cap(*b)
	if n < 1<<minClass {
		return
	}
	c := class(n)
	if c < 0 {
		c = len(p.classes) - 1
	} else if n < 1<<(c+minClass) {
		c--
	}
	*b = (*b)[:0]
	p.classes[c].Put(b)
}

// GRPCTransport is the Transport over gRPC: one long-lived stream to each
// peer this member sends to, and a service that receives the streams of the
// members that send to it.
type GRPCTransport struct {
	service  string // full gRPC service name
	addr     string
	dialOpts []grpc.DialOption
	inbox    chan *Frame
	pool     Pool
	closed   chan struct{}
	once     sync.Once

	mu    sync.Mutex
	links map[string]*grpcLink
	// secure is set once a connection turned out to carry transport
	// security: links are then dialed with gRPC's write buffer.
	secure atomic.Bool
}

// grpcInbox is the number of received messages buffered before the gRPC
// stream stops reading (and flow control stops the sender).
const grpcInbox = 32

// NewGRPC returns a transport that advertises addr (the address its gRPC
// server listens on) and dials peers with opts (insecure credentials unless
// opts set others). Register it on a server made with ServerOptions.
func NewGRPC(addr string, opts ...grpc.DialOption) *GRPCTransport {
	return NewGRPCService(addr, "Ring", opts...)
}

// NewGRPCService is NewGRPC for one of several rings hosted on one server
// (for example one for gradients and one for statistics): name, a Go-style
// identifier, tells their gRPC services apart.
func NewGRPCService(addr, name string, opts ...grpc.DialOption) *GRPCTransport {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(window),
		grpc.WithInitialConnWindowSize(window),
		grpc.WithReadBufferSize(ioBuf),
		grpc.WithWriteBufferSize(ioBuf),
		experimental.WithBufferPool(recvPool),
		// gRPC keeps the first 256 KiB a stream sends for transparent
		// retries until the server answers, which ours never does before
		// the end, pinning those frames. Commit at once instead (a broken
		// stream fails the step anyway).
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessage), grpc.MaxCallRecvMsgSize(MaxMessage),
			grpc.MaxRetryRPCBufferSize(0)),
	}
	return &GRPCTransport{
		service:  servicePrefix + name,
		addr:     addr,
		dialOpts: append(base, opts...),
		inbox:    make(chan *Frame, grpcInbox),
		closed:   make(chan struct{}),
		links:    make(map[string]*grpcLink),
	}
}

// Register adds the ring service to s.
func (t *GRPCTransport) Register(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: t.service,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Stream",
			Handler:       func(_ any, ss grpc.ServerStream) error { return t.receive(ss) },
			ClientStreams: true,
		}},
	}, nil)
}

// ListenGRPC starts a gRPC server for a new transport on addr (e.g.
// "127.0.0.1:0"). Stopping is Close on the transport followed by the
// returned stop function.
func ListenGRPC(addr string, opts ...grpc.DialOption) (*GRPCTransport, func(), error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("allreduce listen %s: %w", addr, err)
	}
	t := NewGRPC(lis.Addr().String(), opts...)
	s := grpc.NewServer(ServerOptions()...)
	t.Register(s)
	go s.Serve(lis)
	return t, s.Stop, nil
}

// Addr implements Transport.
func (t *GRPCTransport) Addr() string { return t.addr }

// Inbox implements Transport.
func (t *GRPCTransport) Inbox() <-chan *Frame { return t.inbox }

// receive runs one inbound stream until it ends.
func (t *GRPCTransport) receive(ss grpc.ServerStream) error {
	from := "unknown peer"
	if md, ok := metadata.FromIncomingContext(ss.Context()); ok {
		if v := md.Get(fromKey); len(v) == 1 && len(v[0]) < 256 {
			from = v[0]
		}
	}
	var last uint64
	for {
		f := t.pool.Get(0)
		if err := ss.RecvMsg(f); err != nil {
			if err == io.EOF {
				err = errors.New("peer closed the stream")
			}
			f.Err, f.Peer, f.LastGen = fmt.Errorf("stream from %s ended: %w", from, err), from, last
			// Deliver the news without holding the RPC open: the sender may
			// be waiting for it to end (Close drains).
			go func() {
				select {
				case t.inbox <- f:
				case <-t.closed:
					f.Release()
				}
			}()
			return nil
		}
		f.Peer = from
		if g := frameGen(f.header()); g != 0 {
			last = g
		}
		select {
		case t.inbox <- f:
		case <-t.closed:
			f.Release()
			return nil
		}
	}
}

// Dial implements Transport.
func (t *GRPCTransport) Dial(ctx context.Context, addr string) (Link, error) {
	select {
	case <-t.closed:
		return nil, errClosed
	default:
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.links == nil {
		return nil, errClosed
	}
	if l := t.links[addr]; l != nil {
		if !l.broken.Load() {
			return l, nil
		}
		go l.close() // in the background, as in Retain
		delete(t.links, addr)
	}
	l, err := t.open(ctx, addr, !t.secure.Load())
	if err != nil && errors.Is(err, errNotPlain) {
		// Transport security sits between gRPC and the connection: dial
		// again with gRPC's own write buffer (see sendConn).
		l, err = t.open(ctx, addr, false)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	t.links[addr] = l
	return l, nil
}

// errNotPlain is what a sendConn answers when what gRPC writes to it is not
// HTTP/2 in the clear.
var errNotPlain = errors.New("connection carries transport security")

// open dials addr and opens the ring's stream on the new connection; with
// gather, under a sendConn instead of gRPC's write buffer.
func (t *GRPCTransport) open(ctx context.Context, addr string, gather bool) (*grpcLink, error) {
	opts := t.dialOpts
	var mu sync.Mutex
	var conns []*sendConn
	if gather {
		opts = append(slices.Clip(opts), grpc.WithWriteBufferSize(0),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", a)
				if err != nil {
					return nil, err
				}
				tc, ok := c.(*net.TCPConn)
				if !ok {
					c.Close()
					return nil, fmt.Errorf("dial %s: not a TCP connection", a)
				}
				sc := newSendConn(tc, func() { t.secure.Store(true) })
				mu.Lock()
				conns = append(conns, sc)
				mu.Unlock()
				return sc, nil
			}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), fromKey, t.addr))
	// Open the stream under ctx's deadline without tying the stream to ctx.
	stop := context.AfterFunc(ctx, cancel)
	st, err := conn.NewStream(sctx, &streamDesc, "/"+t.service+"/Stream", grpc.ForceCodecV2(rawCodec{}))
	interrupted := !stop()
	if err == nil && !interrupted && gather && t.secure.Load() {
		err = errNotPlain
	}
	var via *sendConn
	if err == nil && !interrupted && gather {
		// The stream runs on the connection with its local address.
		// st.Context() also commits the stream's attempt: gRPC cannot
		// retry it transparently on another connection, so the views
		// lent to via are read by via alone. Keep this call here.
		if p, ok := peer.FromContext(st.Context()); ok && p.LocalAddr != nil {
			mu.Lock()
			for _, c := range conns {
				if c.LocalAddr().String() == p.LocalAddr.String() {
					via = c
				}
			}
			mu.Unlock()
		}
		if via == nil {
			err = errors.New("cannot tell which connection the stream runs on")
		}
	}
	if err != nil || interrupted {
		cancel()
		conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		if t.secure.Load() && gather {
			err = fmt.Errorf("%w: %w", errNotPlain, err)
		}
		return nil, err
	}
	return &grpcLink{addr: addr, conn: conn, stream: st, cancel: cancel, via: via}, nil
}

// Retain closes the links to every address not in addrs: members that left
// the ring. Their peers see the stream end, and the transport no longer
// holds a connection, a stream and its buffers for them. A Reducer calls it
// (through the Retainer interface) when it starts a step in a new
// generation; callers that drive the transport themselves may call it too.
func (t *GRPCTransport) Retain(addrs []string) {
	t.mu.Lock()
	var gone []*grpcLink
	for a, l := range t.links {
		if !slices.Contains(addrs, a) {
			gone = append(gone, l)
			delete(t.links, a)
		}
	}
	t.mu.Unlock()
	// In the background: gRPC's ClientConn.Close waits up to 5 s for its
	// writer to send a GOAWAY, and a writer blocked on a peer cut off by
	// a partition never does; the new ring's first step waited for it.
	for _, l := range gone {
		go l.close()
	}
}

// closeDrain bounds how long Close waits for queued messages to reach peers.
const closeDrain = 2 * time.Second

// Close implements Transport. Messages already handed to Send are delivered
// first (gRPC writes them asynchronously), for at most a couple of seconds:
// a member that finishes its last step before its neighbour must not cut
// the neighbour's last chunks off.
func (t *GRPCTransport) Close() error {
	t.once.Do(func() {
		close(t.closed)
		t.mu.Lock()
		links := t.links
		t.links = nil
		t.mu.Unlock()
		var wg sync.WaitGroup
		for _, l := range links {
			wg.Go(func() {
				l.drain(closeDrain)
				l.close()
			})
		}
		wg.Wait()
	})
	return nil
}

type grpcLink struct {
	addr   string
	via    *sendConn // the connection under the stream, if gathered
	conn   *grpc.ClientConn
	stream grpc.ClientStream
	cancel context.CancelFunc
	broken atomic.Bool
	mu     sync.Mutex // one Send at a time
}

// drain half-closes the stream and waits until the peer has read it all.
func (l *grpcLink) drain(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken.Load() {
		return
	}
	timer := time.AfterFunc(d, l.cancel)
	defer timer.Stop()
	if l.stream.CloseSend() == nil {
		l.stream.RecvMsg(&Frame{}) // returns when the server's handler ends
	}
}

// lends implements viewLink: a link gathered by a sendConn can be lent
// views; one under gRPC's write buffer (transport security) cannot.
func (l *grpcLink) lends() (<-chan struct{}, bool) {
	if l.via == nil {
		return nil, false
	}
	return l.via.dead, true
}

// abandon implements viewLink: the stream is cancelled and the connection
// closed under the sendConn's lock, so nothing handed to Send is read
// afterwards. The ClientConn is closed by whoever replaces or drops the
// broken link (Dial, Retain, Close).
func (l *grpcLink) abandon() {
	l.broken.Store(true)
	l.cancel()
	if l.via != nil {
		l.via.abandon()
	}
}

func (l *grpcLink) isBroken() bool { return l.broken.Load() }

func (l *grpcLink) close() {
	l.broken.Store(true)
	l.cancel()
	l.conn.Close()
}

// Send implements Link.
func (l *grpcLink) Send(ctx context.Context, f *Frame) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken.Load() {
		f.Release()
		return fmt.Errorf("send to %s: link broken", l.addr)
	}
	stop := context.AfterFunc(ctx, func() { l.broken.Store(true); l.cancel() })
	f.via = l.via
	err := l.stream.SendMsg(f)
	if !stop() || err != nil {
		l.broken.Store(true)
		l.cancel()
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return fmt.Errorf("send to %s: %w", l.addr, err)
	}
	return nil
}
