package allreduce

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

// cluster is n reducers over one transport kind, in ring order.
type cluster struct {
	ts  []Transport
	rs  []*Reducer
	gen []Generation
}

func newInmemCluster(t testing.TB, n, length int, cfg Config) *cluster {
	t.Helper()
	net := NewInmemNetwork()
	var ts []Transport
	for i := range n {
		tr, err := net.Transport(fmt.Sprintf("node%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tr)
	}
	return newCluster(t, ts, length, cfg)
}

func newGRPCCluster(t testing.TB, n, length int, cfg Config) *cluster {
	t.Helper()
	var ts []Transport
	for range n {
		tr, stop, err := ListenGRPC("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close(); stop() })
		ts = append(ts, tr)
	}
	return newCluster(t, ts, length, cfg)
}

func newCluster(t testing.TB, ts []Transport, length int, cfg Config) *cluster {
	t.Helper()
	c := &cluster{ts: ts}
	var members []Peer
	for i, tr := range ts {
		members = append(members, Peer{Name: fmt.Sprintf("n%d", i), Addr: tr.Addr()})
	}
	for i, tr := range ts {
		r, err := New(tr, length, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.rs = append(c.rs, r)
		c.gen = append(c.gen, Generation{ID: 1, Members: members, Rank: i})
		t.Cleanup(func() { tr.Close() })
	}
	return c
}

// allreduce runs one step on every member concurrently and returns each
// member's error.
func (c *cluster) allreduce(gen uint64, step uint64, xs [][]float32) []error {
	errs := make([]error, len(c.rs))
	var wg sync.WaitGroup
	for i, r := range c.rs {
		g := c.gen[i]
		g.ID = gen
		wg.Go(func() { errs[i] = r.Allreduce(context.Background(), g, step, xs[i]) })
	}
	wg.Wait()
	return errs
}

// inputs returns n pseudo-random gradient vectors (deterministic).
func inputs(n, length int, seed uint64) [][]float32 {
	xs := make([][]float32, n)
	s := seed*0x9e3779b97f4a7c15 + 1
	for r := range xs {
		xs[r] = make([]float32, length)
		for i := range xs[r] {
			s ^= s << 13
			s ^= s >> 7
			s ^= s << 17
			// roughly normal: sum of uniforms, scaled over a few decades
			u := float64(s>>40)/float64(1<<24) + float64((s>>16)&0xffffff)/float64(1<<24) - 1
			xs[r][i] = float32(u * math.Pow(10, float64(int(s%5))-4))
		}
	}
	return xs
}

func clone(xs [][]float32) [][]float32 {
	out := make([][]float32, len(xs))
	for i, x := range xs {
		out[i] = append([]float32(nil), x...)
	}
	return out
}

// ringSum is the sum the ring must produce with codec none: per bucket, for
// segment j, x_j + x_{j+1} + ... + x_{j+n-1} (mod n) in fp32, in that order.
func ringSum(xs [][]float32, buckets [][2]int) []float32 {
	n := len(xs)
	out := make([]float32, len(xs[0]))
	for _, b := range buckets {
		N := b[1] - b[0]
		for j := range n {
			for i := b[0] + j*N/n; i < b[0]+(j+1)*N/n; i++ {
				acc := xs[j][i]
				for k := 1; k < n; k++ {
					acc += xs[(j+k)%n][i]
				}
				out[i] = acc
			}
		}
	}
	return out
}

func TestRingSumExact(t *testing.T) {
	lengths := []int{0, 1, 2, 3, 7, 13, 257, 1021, 4099}
	for n := 1; n <= 8; n++ {
		ls := append(lengths, n-1, n, n+1)
		if n == 3 || (n == 8 && !raceEnabled && !testing.Short()) {
			ls = append(ls, 1_000_003)
		}
		for _, length := range ls {
			t.Run(fmt.Sprintf("n%d/len%d", n, length), func(t *testing.T) {
				// Small buckets and chunks so that awkward lengths cross every boundary.
				cfg := Config{BucketBytes: 4 * 1000, ChunkBytes: 4 * 256}
				if length > 100_000 {
					cfg = Config{BucketBytes: 4 * 300_001, ChunkBytes: 4 * 4096}
				}
				c := newInmemCluster(t, n, length, cfg)
				xs := inputs(n, length, uint64(n*1000+length))
				want := ringSum(xs, c.rs[0].Buckets())
				got := clone(xs)
				for i, err := range c.allreduce(1, 7, got) {
					if err != nil {
						t.Fatalf("member %d: %v", i, err)
					}
				}
				for r := range got {
					for i := range want {
						if math.Float32bits(got[r][i]) != math.Float32bits(want[i]) {
							t.Fatalf("member %d element %d: got %v want %v", r, i, got[r][i], want[i])
						}
					}
				}
			})
		}
	}
}

// exactSum is the float64 sum and the sum of magnitudes.
func exactSum(xs [][]float32) (sum, abs []float64) {
	sum = make([]float64, len(xs[0]))
	abs = make([]float64, len(xs[0]))
	for _, x := range xs {
		for i, v := range x {
			sum[i] += float64(v)
			abs[i] += math.Abs(float64(v))
		}
	}
	return sum, abs
}

// bound returns the per-element error bound a codec states for n members:
// each of at most n roundings of a partial sum loses at most half a unit.
// bf16: relative 2^-8 of the partial sum's magnitude. int8: max|block|/254,
// the block's maximum being at most the largest magnitude sum within
// Int8Block-1 elements either side.
func bound(codec string, n int, abs []float64) []float64 {
	b := make([]float64, len(abs))
	// maxima over aligned blocks: any block of the codec that holds element i
	// lies within the aligned blocks from (i-Int8Block+1)/Int8Block to
	// (i+Int8Block-1)/Int8Block.
	blk := make([]float64, (len(abs)+Int8Block-1)/Int8Block)
	for i, a := range abs {
		blk[i/Int8Block] = max(blk[i/Int8Block], a)
	}
	for i, a := range abs {
		switch codec {
		case CodecNone, CodecPowerSGD: // powersgd's first step without Config.Tensors is a plain sum
			b[i] = float64(n) * a * 0x1p-23
		case CodecBF16, CodecBF16Zstd:
			b[i] = float64(n)*a*0x1p-8 + float64(n)*a*0x1p-23
		case CodecInt8:
			m := 0.0
			for k := max(0, i-Int8Block+1) / Int8Block; k <= (i+Int8Block-1)/Int8Block && k < len(blk); k++ {
				m = max(m, blk[k])
			}
			b[i] = float64(n)*m/254*(1+0x1p-20) + float64(n)*a*0x1p-23
		}
	}
	return b
}

func TestRingCodecsWithinBound(t *testing.T) {
	for _, codec := range Codecs {
		for _, n := range []int{1, 2, 3, 5, 8} {
			lengths := []int{0, 1, n - 1, 255, 257, 1031, 70001}
			if raceEnabled || testing.Short() {
				lengths[len(lengths)-1] = 10007
			}
			for _, length := range lengths {
				t.Run(fmt.Sprintf("%s/n%d/len%d", codec, n, length), func(t *testing.T) {
					c := newInmemCluster(t, n, length, Config{Codec: codec, BucketBytes: 4 * 20000, ChunkBytes: 4 * 512})
					xs := inputs(n, length, uint64(7*n+length))
					sum, abs := exactSum(xs)
					lim := bound(codec, n, abs)
					got := clone(xs)
					for i, err := range c.allreduce(3, 1, got) {
						if err != nil {
							t.Fatalf("member %d: %v", i, err)
						}
					}
					for i := range sum {
						if d := math.Abs(float64(got[0][i]) - sum[i]); d > lim[i] {
							t.Fatalf("element %d: got %v, exact %v, error %g > bound %g", i, got[0][i], sum[i], d, lim[i])
						}
						for r := 1; r < n; r++ {
							if math.Float32bits(got[r][i]) != math.Float32bits(got[0][i]) {
								t.Fatalf("element %d: member %d has %v, member 0 has %v", i, r, got[r][i], got[0][i])
							}
						}
					}
				})
			}
		}
	}
}

// TestErrorFeedback drives int8 with error feedback the way a training loop
// would, with 4 in-memory members and the same gradients each step: the
// error of the running total stays bounded by about one step's error instead
// of growing with the number of steps, and a residual saved and restored
// mid-run gives the same trajectory.
func TestErrorFeedback(t *testing.T) {
	const n, length, steps = 4, 3000, 12
	cfg := Config{Codec: CodecInt8, BucketBytes: 4 * 1000, ChunkBytes: 4 * 512}
	c := newInmemCluster(t, n, length, cfg)
	xs := inputs(n, length, 42)
	sum, abs := exactSum(xs)
	lim := bound(CodecInt8, n, abs)
	total := make([]float64, length)
	var saved [][]float32
	var after [][]float32 // outputs of the steps after the save
	for s := range steps {
		got := clone(xs)
		for i, err := range c.allreduce(1, uint64(s), got) {
			if err != nil {
				t.Fatalf("step %d member %d: %v", s, i, err)
			}
		}
		for i, v := range got[0] {
			total[i] += float64(v)
		}
		if s == steps/2 {
			for _, r := range c.rs {
				saved = append(saved, append([]float32(nil), r.Residual()...))
			}
		}
		if s > steps/2 {
			after = append(after, got[0])
		}
	}
	worst, noFeedback := 0.0, 0.0
	for i := range total {
		worst = max(worst, math.Abs(total[i]-steps*sum[i])/lim[i])
		noFeedback = max(noFeedback, lim[i])
	}
	if worst > 2 {
		t.Errorf("running total off by %.2f single-step bounds after %d steps; error feedback should keep it under 2", worst, steps)
	}
	// Restore into fresh members and replay the steps after the save.
	c2 := newInmemCluster(t, n, length, cfg)
	for i, r := range c2.rs {
		if err := r.SetResidual(saved[i]); err != nil {
			t.Fatal(err)
		}
	}
	for k, want := range after {
		got := clone(xs)
		for i, err := range c2.allreduce(1, uint64(steps/2+1+k), got) {
			if err != nil {
				t.Fatalf("replay member %d: %v", i, err)
			}
		}
		for i := range want {
			if math.Float32bits(got[0][i]) != math.Float32bits(want[i]) {
				t.Fatalf("replay step %d element %d: got %v want %v", k, i, got[0][i], want[i])
			}
		}
	}
	if err := c2.rs[0].SetResidual(make([]float32, length-1)); err == nil {
		t.Error("SetResidual accepted a residual of the wrong length")
	}
}

// TestBucketsOverlap feeds Ready in reverse layer order from a fake backward
// pass while buckets reduce, over several steps.
func TestBucketsOverlap(t *testing.T) {
	const n, length = 3, 10_000
	c := newInmemCluster(t, n, length, Config{BucketBytes: 4 * 1500, ChunkBytes: 4 * 256})
	if got := len(c.rs[0].Buckets()); got != 7 {
		t.Fatalf("%d buckets, want 7", got)
	}
	for step := range uint64(3) {
		xs := inputs(n, length, step)
		want := ringSum(xs, c.rs[0].Buckets())
		got := make([][]float32, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for r := range n {
			got[r] = make([]float32, length)
			wg.Go(func() {
				red := c.rs[r]
				if err := red.Begin(context.Background(), c.gen[r], step, got[r]); err != nil {
					errs[r] = err
					return
				}
				// "backward": produce 700-element layers from the end.
				for hi := length; hi > 0; hi -= 700 {
					lo := max(0, hi-700)
					copy(got[r][lo:hi], xs[r][lo:hi])
					red.Ready(lo, hi)
					time.Sleep(time.Millisecond)
				}
				errs[r] = red.Wait()
			})
		}
		wg.Wait()
		for r := range n {
			if errs[r] != nil {
				t.Fatalf("step %d member %d: %v", step, r, errs[r])
			}
			for i := range want {
				if got[r][i] != want[i] {
					t.Fatalf("step %d member %d element %d: got %v want %v", step, r, i, got[r][i], want[i])
				}
			}
		}
	}
}

func TestBadCalls(t *testing.T) {
	c := newInmemCluster(t, 2, 10, Config{})
	g := c.gen[0]
	cases := []struct {
		name string
		gen  Generation
		grad []float32
	}{
		{"wrong length", g, make([]float32, 9)},
		{"generation 0", Generation{Members: g.Members}, make([]float32, 10)},
		{"rank out of range", Generation{ID: 1, Members: g.Members, Rank: 2}, make([]float32, 10)},
		{"not this member", Generation{ID: 1, Members: g.Members, Rank: 1}, make([]float32, 10)},
		{"duplicate member", Generation{ID: 1, Members: []Peer{g.Members[0], g.Members[0]}}, make([]float32, 10)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.rs[0].Begin(context.Background(), tc.gen, 1, tc.grad); err == nil {
				t.Fatal("Begin accepted it")
			}
		})
	}
	if err := c.rs[0].Wait(); err == nil {
		t.Error("Wait without Begin succeeded")
	}
	for _, cfg := range []Config{{Codec: "fp8"}, {ChunkBytes: 100}, {ChunkBytes: 64 << 20}, {BucketBytes: 2}, {Deadline: -1}} {
		if _, err := New(c.ts[0], 10, cfg); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}

func TestReadyMisuse(t *testing.T) {
	cases := []struct {
		name  string
		calls [][2]int
	}{
		{"overlap", [][2]int{{50, 100}, {90, 100}}},
		{"out of range", [][2]int{{0, 101}}},
		{"reversed", [][2]int{{10, 5}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newInmemCluster(t, 1, 100, Config{BucketBytes: 4 * 30})
			if err := c.rs[0].Begin(context.Background(), c.gen[0], 1, make([]float32, 100)); err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.calls {
				c.rs[0].Ready(r[0], r[1])
			}
			if err := c.rs[0].Wait(); err == nil {
				t.Fatal("Wait succeeded")
			}
		})
	}
}

func TestChunkFor(t *testing.T) {
	cases := []struct{ N, n, limit, want int }{
		{1 << 20, 2, 128 << 10, 128 << 10}, // large bucket: the configured size
		{1 << 18, 2, 128 << 10, 32 << 10},  // small bucket: four chunks per segment
		{1 << 10, 4, 128 << 10, minChunk},  // tiny bucket: not below the minimum
		{1 << 10, 4, Int8Block, Int8Block}, // unless the limit is lower
		{1_000_003, 3, 128 << 10, 83_392},  // a multiple of the int8 block (64)
	}
	for _, c := range cases {
		if got := chunkFor(c.N, c.n, c.limit); got != c.want || got%Int8Block != 0 {
			t.Errorf("chunkFor(%d, %d, %d) = %d, want %d", c.N, c.n, c.limit, got, c.want)
		}
	}
}

// TestInmemRetain: a step in a generation without a member drops the link
// to it on the in-memory transport as on gRPC.
func TestInmemRetain(t *testing.T) {
	c := newInmemCluster(t, 3, 1000, Config{})
	xs := inputs(3, 1000, 3)
	for i, err := range c.allreduce(1, 0, xs) {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	t1 := c.ts[1].(*InmemTransport)
	if got := t1.Links(); len(got) != 1 || got[0] != "node2" {
		t.Fatalf("member 1 links %v after generation 1, want [node2]", got)
	}
	members := c.gen[0].Members[:2]
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			errs[i] = c.rs[i].Allreduce(context.Background(), Generation{ID: 2, Members: members, Rank: i}, 1, xs[i])
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("generation 2, member %d: %v", i, err)
		}
	}
	if got := t1.Links(); len(got) != 1 || got[0] != "node0" {
		t.Errorf("member 1 links %v in generation 2, want [node0]", got)
	}
}
