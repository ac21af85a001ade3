package allreduce

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// lazy wraps a Transport whose links, like gRPC's, return from Send at once
// and read the frame later: a worker per link sleeps up to delay before it
// hands each frame, in order, to the real link (which copies it then). A
// ring that overwrote a zero-copy view before the transport let go of it,
// or handed x back to its caller too early, would send wrong bytes.
type lazy struct {
	Transport
	delay time.Duration
	mu    sync.Mutex
	links map[string]*lazyLink
}

func (l *lazy) Dial(ctx context.Context, addr string) (Link, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k := l.links[addr]; k != nil {
		return k, nil
	}
	inner, err := l.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	k := &lazyLink{inner: inner, q: make(chan *Frame, 1024), delay: l.delay}
	go k.run()
	if l.links == nil {
		l.links = map[string]*lazyLink{}
	}
	l.links[addr] = k
	return k, nil
}

type lazyLink struct {
	inner Link
	q     chan *Frame
	delay time.Duration
}

func (k *lazyLink) Send(ctx context.Context, f *Frame) error {
	k.q <- f
	return nil
}

func (k *lazyLink) run() {
	rng := rand.New(rand.NewPCG(1, 2))
	for f := range k.q {
		time.Sleep(time.Duration(rng.Int64N(int64(k.delay))))
		k.inner.Send(context.Background(), f)
	}
}

// TestZeroCopyViewsOutliveSend runs codec none, whose messages are views of
// the caller's buffer, over links that read them late (member 0's much
// later than the others', so that it finishes while its last messages are
// still queued), for several steps in which each caller overwrites its
// buffer as soon as the call returns. Every sum must still be exact.
func TestZeroCopyViewsOutliveSend(t *testing.T) {
	for _, n := range []int{2, 3, 4} {
		t.Run(fmt.Sprintf("n%d", n), func(t *testing.T) {
			net := NewInmemNetwork()
			var ts []Transport
			for i := range n {
				tr, err := net.Transport(fmt.Sprintf("z%d", i))
				if err != nil {
					t.Fatal(err)
				}
				delay := 100 * time.Microsecond
				if i == 0 {
					delay = 3 * time.Millisecond
				}
				ts = append(ts, &lazy{Transport: tr, delay: delay})
			}
			const length = 50_000
			c := newCluster(t, ts, length, Config{ChunkBytes: 16 << 10, BucketBytes: 4 * 20_000})
			for step := range uint64(4) {
				xs := inputs(n, length, 100+step)
				want := ringSum(xs, c.rs[0].Buckets())
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i, r := range c.rs {
					wg.Go(func() {
						errs[i] = r.Allreduce(context.Background(), c.gen[i], step, xs[i])
						got := append([]float32(nil), xs[i]...)
						// The caller reuses its buffer at once.
						for k := range xs[i] {
							xs[i][k] = float32(math.NaN())
						}
						xs[i] = got
					})
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("step %d member %d: %v", step, i, err)
					}
				}
				for i := range xs {
					sameBits(t, step, i, xs[i], want)
				}
			}
		})
	}
}

// TestZeroCopySmallMessagesOverGRPC sends messages of a few KiB (views, but
// far below gRPC's 256 KiB replay buffer) over real gRPC streams: gRPC must
// let go of each once written, or the ring would wait for its deadline.
func TestZeroCopySmallMessagesOverGRPC(t *testing.T) {
	const n, length = 3, 30_000
	c := newGRPCCluster(t, n, length, Config{ChunkBytes: 8 << 10, Deadline: 5 * time.Second})
	for step := range uint64(3) {
		xs := inputs(n, length, 7+step)
		want := ringSum(xs, c.rs[0].Buckets())
		for i, err := range c.allreduce(1, step, xs) {
			if err != nil {
				t.Fatalf("step %d member %d: %v", step, i, err)
			}
		}
		for i := range xs {
			sameBits(t, step, i, xs[i], want)
		}
	}
}

// sameBits fails t unless member's result got is bitwise want.
func sameBits(t *testing.T, step uint64, member int, got, want []float32) {
	t.Helper()
	for k := range want {
		if math.Float32bits(got[k]) != math.Float32bits(want[k]) {
			t.Fatalf("step %d member %d element %d: got %v, want %v", step, member, k, got[k], want[k])
		}
	}
}
