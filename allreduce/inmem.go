package allreduce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// InmemNetwork connects InmemTransports in one process, for deterministic
// tests of many members without sockets.
type InmemNetwork struct {
	mu    sync.Mutex
	nodes map[string]*InmemTransport
}

// NewInmemNetwork returns an empty network.
func NewInmemNetwork() *InmemNetwork {
	return &InmemNetwork{nodes: make(map[string]*InmemTransport)}
}

// inmemInbox is the number of messages a member buffers before senders block.
const inmemInbox = 16

// Transport creates the member at addr. It fails if addr is taken.
func (n *InmemNetwork) Transport(addr string) (*InmemTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.nodes[addr]; ok {
		return nil, fmt.Errorf("inmem address %q already in use", addr)
	}
	t := &InmemTransport{
		net:    n,
		addr:   addr,
		inbox:  make(chan *Frame, inmemInbox),
		closed: make(chan struct{}),
		links:  make(map[string]*inmemLink),
	}
	n.nodes[addr] = t
	return t, nil
}

func (n *InmemNetwork) lookup(addr string) *InmemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nodes[addr]
}

// InmemTransport is one member of an InmemNetwork.
type InmemTransport struct {
	net    *InmemNetwork
	addr   string
	inbox  chan *Frame
	pool   Pool
	closed chan struct{}
	once   sync.Once

	mu    sync.Mutex
	links map[string]*inmemLink
}

var errClosed = errors.New("transport closed")

// Addr implements Transport.
func (t *InmemTransport) Addr() string { return t.addr }

// Inbox implements Transport.
func (t *InmemTransport) Inbox() <-chan *Frame { return t.inbox }

// Dial implements Transport.
func (t *InmemTransport) Dial(ctx context.Context, addr string) (Link, error) {
	select {
	case <-t.closed:
		return nil, errClosed
	default:
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.links[addr]; l != nil && !l.isBroken() {
		return l, nil
	}
	dst := t.net.lookup(addr)
	if dst == nil {
		return nil, fmt.Errorf("dial %s: no such member", addr)
	}
	select {
	case <-dst.closed:
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	default:
	}
	l := &inmemLink{src: t, dst: dst}
	t.links[addr] = l
	return l, nil
}

// Retain breaks the links to every address not in addrs, as
// GRPCTransport.Retain does.
func (t *InmemTransport) Retain(addrs []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for a, l := range t.links {
		if !slices.Contains(addrs, a) {
			l.breakLink(errors.New("link closed: member left the ring"))
			delete(t.links, a)
		}
	}
}

// Links returns the addresses this transport holds links to, sorted.
func (t *InmemTransport) Links() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var a []string
	for k, l := range t.links {
		if !l.isBroken() {
			a = append(a, k)
		}
	}
	slices.Sort(a)
	return a
}

// Close implements Transport. Every member this one has a link to sees the
// stream from it break, as a TCP peer would.
func (t *InmemTransport) Close() error {
	t.once.Do(func() {
		close(t.closed)
		t.net.mu.Lock()
		delete(t.net.nodes, t.addr)
		t.net.mu.Unlock()
		t.mu.Lock()
		for _, l := range t.links {
			l.breakLink(errors.New("connection closed by peer"))
		}
		t.mu.Unlock()
	})
	return nil
}

type inmemLink struct {
	src, dst *InmemTransport
	mu       sync.Mutex // serialises Send; guards the fields below
	lastGen  uint64
	broken   bool
}

func (l *inmemLink) isBroken() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.broken
}

// breakLink marks the link failed and tells the receiver, asynchronously so
// that a full inbox cannot block the caller.
func (l *inmemLink) breakLink(err error) {
	l.mu.Lock()
	if l.broken {
		l.mu.Unlock()
		return
	}
	l.broken = true
	gen := l.lastGen
	l.mu.Unlock()
	dst := l.dst
	go func() {
		f := dst.pool.Get(0)
		f.Peer, f.Err, f.LastGen = l.src.addr, err, gen
		select {
		case dst.inbox <- f:
		case <-dst.closed:
		}
	}()
}

// Send implements Link: it copies f into a frame of the receiver's.
func (l *inmemLink) Send(ctx context.Context, f *Frame) error {
	defer f.Release()
	l.mu.Lock()
	broken := l.broken
	l.mu.Unlock()
	if broken {
		return fmt.Errorf("send to %s: link broken", l.dst.addr)
	}
	g := l.dst.pool.Get(f.Len())
	n := copy(g.Buf, f.Buf)
	for _, b := range f.parts {
		n += copy(g.Buf[n:], b.ReadOnlyData())
	}
	g.Peer = l.src.addr
	select {
	case l.dst.inbox <- g:
		if gen := frameGen(f.header()); gen != 0 {
			l.mu.Lock()
			l.lastGen = gen
			l.mu.Unlock()
		}
		return nil
	case <-l.dst.closed:
		g.Release()
		l.breakLink(errClosed)
		return fmt.Errorf("send to %s: connection reset", l.dst.addr)
	case <-l.src.closed:
		g.Release()
		return fmt.Errorf("send to %s: %w", l.dst.addr, errClosed)
	case <-ctx.Done():
		g.Release()
		l.breakLink(fmt.Errorf("stream reset by sender: %w", ctx.Err()))
		return fmt.Errorf("send to %s: %w", l.dst.addr, ctx.Err())
	}
}
