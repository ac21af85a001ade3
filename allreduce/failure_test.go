package allreduce

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faulty wraps a Transport and breaks its member after a number of sends:
// "kill" closes the transport (the process dies), "corrupt" flips a payload
// byte in every later message (caught by the checksum), "garbage" mangles
// every later message's header (caught by the decoder, checksum or not).
type faulty struct {
	Transport
	after int64
	mode  string
	sends atomic.Int64
}

func (f *faulty) Dial(ctx context.Context, addr string) (Link, error) {
	l, err := f.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &faultyLink{l, f}, nil
}

type faultyLink struct {
	Link
	f *faulty
}

func (l *faultyLink) Send(ctx context.Context, fr *Frame) error {
	if l.f.sends.Add(1) > l.f.after {
		switch l.f.mode {
		case "kill":
			l.f.Transport.Close()
			fr.Release()
			return errors.New("killed")
		case "corrupt":
			// On the wire, not in the sender's memory: a zero-copy
			// payload is the sender's gradient.
			if b := fr.bytes(); len(b) > headerSize {
				b[len(b)-1] ^= 0x5a
			}
		case "garbage":
			fr.Buf[0] ^= 0x5a
		}
	}
	return l.Link.Send(ctx, fr)
}

// runFailure runs one allreduce on n members of which victim misbehaves and
// checks that every other member fails within the deadline with an error
// naming the victim.
func runFailure(t *testing.T, c *cluster, victim int, deadline time.Duration, skipVictim bool) {
	t.Helper()
	n := len(c.rs)
	length := c.rs[0].Len()
	xs := inputs(n, length, 1)
	errs := make([]error, n)
	took := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, r := range c.rs {
		if skipVictim && i == victim {
			continue
		}
		wg.Go(func() {
			errs[i] = r.Allreduce(context.Background(), c.gen[i], 1, xs[i])
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	name := c.gen[0].Members[victim].Name
	for i := range n {
		if i == victim {
			continue
		}
		if errs[i] == nil {
			t.Errorf("member %d: allreduce succeeded despite the failure of %s", i, name)
			continue
		}
		var pe *PeerError
		if !errors.As(errs[i], &pe) || pe.Peer.Name != name {
			t.Errorf("member %d: error does not blame %s: %v", i, name, errs[i])
		}
		if took[i] > deadline+time.Second {
			t.Errorf("member %d: took %v, deadline %v", i, took[i], deadline)
		}
		t.Logf("member %d after %v: %v", i, took[i].Round(time.Millisecond), errs[i])
	}
}

func TestFailures(t *testing.T) {
	const n = 4
	length := 200_000
	if raceEnabled || testing.Short() {
		length = 60_000
	}
	// grpc-large sends messages of 256 KiB, which the receivers keep in
	// gRPC's buffers and forward from there, so failures strike while such
	// frames are queued and in flight.
	kinds := []string{"inmem", "grpc", "grpc-large"}
	for _, kind := range kinds {
		for _, mode := range []string{"kill", "corrupt", "garbage", "stall"} {
			t.Run(kind+"/"+mode, func(t *testing.T) {
				deadline := 3 * time.Second
				if mode == "stall" {
					deadline = 400 * time.Millisecond
				}
				cfg := Config{ChunkBytes: 4 * 1024, Deadline: deadline, Checksum: mode == "corrupt"}
				length, after := length, int64(20)
				if kind == "grpc-large" {
					// 6 hops of 3 chunks: fail halfway through.
					cfg.ChunkBytes, length, after = 256<<10, 600_000, 9
				}
				var ts []Transport
				for i := range n {
					var tr Transport
					if kind == "inmem" {
						tr = mustInmem(t, fmt.Sprintf("node%d", i))
					} else {
						g, stop, err := ListenGRPC("127.0.0.1:0")
						if err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { g.Close(); stop() })
						tr = g
					}
					if i == 2 && mode != "stall" {
						tr = &faulty{Transport: tr, after: after, mode: mode}
					}
					ts = append(ts, tr)
				}
				before := runtime.NumGoroutine()
				c := newCluster(t, ts, length, cfg)
				runFailure(t, c, 2, deadline, mode == "stall")
				for _, r := range c.rs {
					r.aborts.Wait()
				}
				if kind == "inmem" {
					// Nothing is left running once the transports close.
					for _, tr := range ts {
						tr.Close()
					}
					for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
						time.Sleep(10 * time.Millisecond)
					}
					if n := runtime.NumGoroutine(); n > before {
						t.Errorf("%d goroutines left running, %d before", n, before)
					}
				}
			})
		}
	}
}

var inmemNet = NewInmemNetwork()
var inmemSeq atomic.Int64

func mustInmem(t testing.TB, name string) *InmemTransport {
	tr, err := inmemNet.Transport(fmt.Sprintf("%s-%d", name, inmemSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestStaleGeneration injects messages of an old generation (refused and
// counted, without disturbing the sum) and then a new generation continues
// after an old one failed.
func TestStaleGeneration(t *testing.T) {
	for _, kind := range []string{"inmem", "grpc"} {
		t.Run(kind, func(t *testing.T) {
			const n, length = 3, 5000
			var c *cluster
			if kind == "inmem" {
				c = newInmemCluster(t, n, length, Config{ChunkBytes: 4 * 512})
			} else {
				c = newGRPCCluster(t, n, length, Config{ChunkBytes: 4 * 512})
			}
			// Member 0 (the left neighbour of 1) sends two messages of
			// generation 4 to member 1, as it would have before a failure.
			link, err := c.ts[0].Dial(context.Background(), c.ts[1].Addr())
			if err != nil {
				t.Fatal(err)
			}
			var enc noneCodec
			for chunk := range 2 {
				f := (&Pool{}).Get(headerSize)
				f.Buf = enc.encode(f.Buf, make([]float32, 512), nil, nil, false)
				h := header{kind: kindData, codec: 1, gen: 4, step: 1, hop: 0, from: 0, chunk: uint32(chunk), count: 512}
				h.put(f.Buf[:headerSize], f.Buf[headerSize:])
				if err := link.Send(context.Background(), f); err != nil {
					t.Fatal(err)
				}
			}
			xs := inputs(n, length, 9)
			want := ringSum(xs, c.rs[0].Buckets())
			for i, err := range c.allreduce(5, 1, xs) {
				if err != nil {
					t.Fatalf("member %d: %v", i, err)
				}
			}
			for i := range want {
				if xs[1][i] != want[i] {
					t.Fatalf("element %d: got %v want %v", i, xs[1][i], want[i])
				}
			}
			if s := c.rs[1].Stats().Stale; s != 2 {
				t.Errorf("member 1 refused %d stale messages, want 2", s)
			}
		})
	}
}

// TestNewerGeneration: a member still at generation 1 that receives a message
// of generation 2 fails, and keeps the message for its own generation 2.
func TestNewerGeneration(t *testing.T) {
	const n, length = 2, 3000
	c := newInmemCluster(t, n, length, Config{ChunkBytes: 4 * 512, Deadline: 2 * time.Second})
	xs := inputs(n, length, 3)
	want := ringSum(xs, c.rs[0].Buckets())
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = c.rs[0].Allreduce(context.Background(), withID(c.gen[0], 2), 1, xs[0]) })
	// Member 1 is late: it first tries generation 1.
	stale := clone(xs[1:])[0]
	err := c.rs[1].Allreduce(context.Background(), c.gen[1], 1, stale)
	if err == nil || !strings.Contains(err.Error(), "generation 2") {
		t.Fatalf("generation 1 on member 1: got %v, want an error about generation 2", err)
	}
	errs[1] = c.rs[1].Allreduce(context.Background(), withID(c.gen[1], 2), 1, xs[1])
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	for i := range want {
		if xs[0][i] != want[i] || xs[1][i] != want[i] {
			t.Fatalf("element %d: got %v, %v want %v", i, xs[0][i], xs[1][i], want[i])
		}
	}
}

func withID(g Generation, id uint64) Generation { g.ID = id; return g }
