package allreduce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// gate is a TCP proxy in front of a member's gRPC server. It records what
// the first client connection sends and, once freezeAt bytes have passed,
// stops reading it (a neighbour that does not read, a link cut off) until
// thawed; then it reads the rest until the client closes.
type gate struct {
	ln       net.Listener
	target   string
	freezeAt int
	thaw     chan struct{}
	done     chan struct{} // the first connection's client side ended

	mu   sync.Mutex
	got  []byte
	seen int // connections accepted
}

func newGate(t *testing.T, target string, freezeAt int) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target, freezeAt: freezeAt, thaw: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go g.serve()
	return g
}

func (g *gate) Addr() string { return g.ln.Addr().String() }

func (g *gate) open() { close(g.thaw) }

func (g *gate) bytes() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.got
}

func (g *gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.Dial("tcp", g.target)
		if err != nil {
			c.Close()
			continue
		}
		g.mu.Lock()
		first := g.seen == 0
		g.seen++
		g.mu.Unlock()
		go func() { io.Copy(c, d); c.Close() }()
		go func() {
			defer d.Close()
			defer c.Close()
			if !first {
				io.Copy(d, c)
				return
			}
			defer close(g.done)
			// A small receive buffer: what the client has sent waits in its
			// own socket and in the link, not here.
			c.(*net.TCPConn).SetReadBuffer(16 << 10)
			buf := make([]byte, 64<<10)
			n := 0
			for {
				k := len(buf)
				if g.freezeAt > 0 && n < g.freezeAt {
					k = min(k, g.freezeAt-n)
				} else if g.freezeAt > 0 {
					<-g.thaw
				}
				m, err := c.Read(buf[:k])
				n += m
				g.mu.Lock()
				g.got = append(g.got, buf[:m]...)
				g.mu.Unlock()
				d.Write(buf[:m]) // the server may be gone: keep recording
				if err != nil {
					return
				}
			}
		}()
	}
}

// gatedPair returns two members over gRPC, member 0 sending to member 1
// through g (member 1 advertises g's address), and member 1 sending to
// member 0 directly.
func gatedPair(t *testing.T, freezeAt int) (*gate, []Transport) {
	t.Helper()
	a, stopA, err := ListenGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); stopA() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGate(t, lis.Addr().String(), freezeAt)
	b := NewGRPC(g.Addr())
	s := grpc.NewServer(ServerOptions()...)
	b.Register(s)
	go s.Serve(lis)
	t.Cleanup(func() { b.Close(); s.Stop() })
	return g, []Transport{a, b}
}

// marker is what the caller writes into its gradient once the allreduce
// has returned: a NaN payload that no input holds.
const marker = 0x7fc0dead

func overwrite(x []float32) {
	m := math.Float32frombits(marker)
	for i := range x {
		x[i] = m
	}
}

// markerIn reports whether two consecutive markers appear in b.
func markerIn(b []byte) bool {
	var pat [8]byte
	binary.LittleEndian.PutUint32(pat[:], marker)
	binary.LittleEndian.PutUint32(pat[4:], marker)
	return bytes.Contains(b, pat[:])
}

// TestZeroCopyFailureTakesViewsBack: member 0 sends views of its gradient
// to a neighbour that stops reading in the middle of the bucket, so that
// the views sit in the link (a writev(2) blocked on the socket, frames
// queued behind it) when the step fails. Once the allreduce has returned,
// the caller overwrites its gradient; then the neighbour reads again. No
// byte it receives may come from the overwritten gradient: the link must
// have been abandoned before the allreduce returned.
func TestZeroCopyFailureTakesViewsBack(t *testing.T) {
	const length = 2 << 20 // 8 MiB of fp32: 8 MiB sent by member 0
	g, ts := gatedPair(t, 512<<10)
	deadline := time.Second
	c := newCluster(t, ts, length, Config{Deadline: deadline})
	xs := inputs(2, length, 5)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range c.rs {
		wg.Go(func() {
			errs[i] = r.Allreduce(context.Background(), c.gen[i], 1, xs[i])
			if i == 0 {
				overwrite(xs[0])
			}
		})
	}
	wg.Wait()
	if errs[0] == nil || errs[1] == nil {
		t.Fatalf("a step whose link froze succeeded: %v, %v", errs[0], errs[1])
	}
	if c.rs[0].loans.lends == 0 {
		t.Fatal("member 0 lent no views: the test tests nothing")
	}
	g.open()
	closed := true
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		closed = false
	}
	got := g.bytes()
	t.Logf("member 0: %v; %d bytes sent through the gate", errs[0], len(got))
	if markerIn(got) {
		t.Error("bytes of the gradient written after the allreduce returned were sent")
	}
	if !closed {
		t.Error("member 0's connection to the frozen neighbour was never closed")
	}
}

// TestZeroCopyWaitsForSlowNeighbour: member 0 has everything it needs while
// its last views (the sum it owns, which member 1 needs) still wait for
// member 1 to read them. Its allreduce must not return before they are
// taken: the caller overwrites the gradient at once, and member 1 must
// still end with the exact sum.
func TestZeroCopyWaitsForSlowNeighbour(t *testing.T) {
	const length = 4 << 20 // 16 MiB of fp32; 8 MiB per hop
	// Let member 0's first hop (its own segment: 8 MiB and framing) through,
	// then stop reading, so that its second hop waits in the link.
	g, ts := gatedPair(t, 4*length/2+256<<10)
	c := newCluster(t, ts, length, Config{Deadline: 30 * time.Second})
	xs := inputs(2, length, 6)
	want := ringSum(xs, c.rs[0].Buckets())
	errs := make([]error, 2)
	returned := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range c.rs {
		wg.Go(func() {
			errs[i] = r.Allreduce(context.Background(), c.gen[i], 1, xs[i])
			if i == 0 {
				close(returned)
				overwrite(xs[0])
			}
		})
	}
	// Member 0 has received everything (two hops) once its counter reaches
	// the payload of both: headers make it larger only with the last one.
	early := false
	for c.rs[0].Stats().RecvBytes < 4*length {
		select {
		case <-returned:
			early = true
		case <-time.After(5 * time.Millisecond):
			continue
		}
		break
	}
	if !early {
		select {
		case <-returned:
			early = true
		case <-time.After(300 * time.Millisecond):
		}
	}
	g.open()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	if early {
		t.Log("member 0 returned before the gate opened: its views all fit in the socket buffers")
	}
	if c.rs[0].loans.lends == 0 {
		t.Fatal("member 0 lent no views: the test tests nothing")
	}
	for i := range want {
		if math.Float32bits(xs[1][i]) != math.Float32bits(want[i]) {
			t.Fatalf("member 1 element %d: got %v (%#x) want %v", i, xs[1][i], math.Float32bits(xs[1][i]), want[i])
		}
	}
}

// TestZeroCopySendConnAbandon: an abandoned sendConn, or one that gRPC
// closes (its transport failed), drops and gives back what it held, counts
// as dead, and reads nothing written afterwards.
func TestZeroCopySendConnAbandon(t *testing.T) {
	for _, how := range []string{"abandon", "close"} {
		t.Run(how, func(t *testing.T) {
			cli, srv := tcpPair(t)
			c := newSendConn(cli, func() { t.Error("plain HTTP/2 taken for transport security") })
			sent := append([]byte(h2Preface), h2Frame(0, 4, 0, 0)...) // and SETTINGS: written at once
			if _, err := c.Write(sent); err != nil {
				t.Fatal(err)
			}
			var v views
			v.reset(1, c.dead)
			payload := make([]byte, 64<<10)
			b := v.lend(0, payload)
			// A DATA frame whose message does not end: its payload stays
			// pending, by reference, and is given back (Free) as gRPC would.
			frame := append(h2Frame(16384, frameData, 0, 1), 0, 0, 1, 0, 0)
			if _, err := c.Write(frame); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(payload[:16379]); err != nil {
				t.Fatal(err)
			}
			c.releasePart(b)
			if v.idle() {
				t.Fatal("a view was given back while its bytes were pending")
			}
			want := errAbandoned
			if how == "abandon" {
				c.abandon()
			} else {
				c.Close()
				want = net.ErrClosed
			}
			if !v.idle() || v.out != 0 || !v.back[0] {
				t.Fatalf("the connection did not give back what it held: %d out, given back %v", v.out, v.back)
			}
			select {
			case <-c.dead:
			default:
				t.Fatal("the connection is not marked dead")
			}
			if _, err := c.Write(payload[:100]); !errors.Is(err, want) {
				t.Fatalf("write afterwards: %v, want %v", err, want)
			}
			if got, _ := io.ReadAll(srv); !bytes.Equal(got, sent) {
				t.Fatalf("the peer got %d bytes, want only the %d written before the pending frame", len(got), len(sent))
			}
		})
	}
}

// TestSendConnReleaseDoesNotWaitForABlockedWrite: while a write is blocked
// on a peer that does not read, a frame released (as gRPC frees a message
// from the sender's goroutine when its stream fails) must not wait for it.
// It did, holding the ring's sender until the connection was closed by
// someone else, so that a member whose right neighbour stopped reading never
// returned from its step. Abandoning the connection ends the write.
func TestSendConnReleaseDoesNotWaitForABlockedWrite(t *testing.T) {
	cli, _ := tcpPair(t) // the server end never reads
	c := newSendConn(cli, func() { t.Error("plain HTTP/2 taken for transport security") })
	if _, err := c.Write([]byte(h2Preface)); err != nil {
		t.Fatal(err)
	}
	// One 64 MiB message in 16 KiB DATA frames: far more than the socket
	// buffers hold, so a flush blocks.
	const size = 64 << 20
	payload := make([]byte, 16384)
	wrote := make(chan error, 1)
	go func() {
		for at := 0; at < size; at += 16384 {
			var err error
			if at == 0 {
				prefix := []byte{0, 0, 0, 0, 0}
				binary.BigEndian.PutUint32(prefix[1:], size)
				_, err = c.Write(append(h2Frame(16384, frameData, 0, 1), prefix...))
				if err == nil {
					_, err = c.Write(payload[:16384-grpcPrefixSize])
				}
			} else {
				if _, err = c.Write(h2Frame(16384, frameData, 0, 1)); err == nil {
					_, err = c.Write(payload)
				}
			}
			if err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	// Wait until a flush is under way and blocked: c.mu stays taken.
	for {
		select {
		case err := <-wrote:
			t.Fatalf("the writer ended (%v) before its flush blocked", err)
		default:
		}
		if !c.mu.TryLock() {
			time.Sleep(50 * time.Millisecond)
			if !c.mu.TryLock() {
				break
			}
		}
		c.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	var pool Pool
	released := make(chan struct{})
	go func() {
		c.releaseFrame(pool.Get(64))
		close(released)
	}()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("releasing a frame waited for a write blocked on the peer")
	}
	c.abandon()
	if err := <-wrote; err == nil {
		t.Fatal("the blocked write succeeded after the connection was abandoned")
	}
	if len(pool.free) != 1 {
		t.Fatalf("%d frames back in the pool after abandon, want 1", len(pool.free))
	}
}
