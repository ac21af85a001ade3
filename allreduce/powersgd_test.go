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

// hook is a reference implementation of PyTorch's powerSGD_hook in float64,
// written from the hook's source independently of powersgd.go, for all
// members of a ring at once. It averages as the hook does; a Reducer's sum is
// the world size times its result.
type hook struct {
	tensors []Tensor
	rank    int
	start   uint64
	seed    uint64
	n       int
	q       map[int][]float64 // warm-start Q per tensor index, cols × k row-major
	errs    map[string][]float64
}

func newHook(n, rank int, start, seed uint64, ts []Tensor) *hook {
	return &hook{tensors: ts, rank: rank, start: start, seed: seed, n: n, errs: map[string][]float64{}}
}

// gs is the hook's _orthogonalize on an m × k row-major matrix (epsilon 0; a
// zero column stays zero).
func gs(a []float64, m, k int) {
	for i := range k {
		var s float64
		for r := range m {
			s += a[r*k+i] * a[r*k+i]
		}
		nrm := math.Sqrt(s)
		for r := range m {
			if nrm == 0 {
				a[r*k+i] = 0
			} else {
				a[r*k+i] /= nrm
			}
		}
		for j := i + 1; j < k; j++ {
			var d float64
			for r := range m {
				d += a[r*k+i] * a[r*k+j]
			}
			for r := range m {
				a[r*k+j] -= d * a[r*k+i]
			}
		}
	}
}

// step runs one step for the named members (ring order) on their gradients
// and returns the hook's averaged result. reseed draws Q afresh, as every
// member does in a new generation.
func (h *hook) step(step uint64, names []string, grads [][]float32, reseed bool) []float64 {
	W := len(names)
	out := make([]float64, h.n)
	if step < h.start {
		for _, g := range grads {
			for i, v := range g {
				out[i] += float64(v)
			}
		}
		for i := range out {
			out[i] /= float64(W)
		}
		return out
	}
	if reseed || h.q == nil {
		h.q = map[int][]float64{}
	}
	in := make([][]float64, W)
	for m, g := range grads {
		e := h.errs[names[m]]
		if e == nil {
			e = make([]float64, h.n)
		}
		in[m] = make([]float64, h.n)
		for i, v := range g {
			in[m][i] = float64(v) + e[i]
		}
		for i := range out {
			out[i] += in[m][i] / float64(W) // uncompressed: the allreduced average
		}
	}
	for ti, t := range h.tensors {
		k := min(t.Rows, t.Cols, h.rank)
		if (t.Rows+t.Cols)*k*2 >= t.Rows*t.Cols {
			continue
		}
		q := h.q[ti]
		if q == nil {
			// The documented initial Q: standard normal draws from (seed,
			// tensor index), Qᵀ stored row by row.
			rng := rand.New(rand.NewPCG(h.seed, uint64(ti)))
			q = make([]float64, t.Cols*k)
			for c := range k {
				for j := range t.Cols {
					q[j*k+c] = float64(float32(rng.NormFloat64()))
				}
			}
		}
		gs(q, t.Cols, k)
		p := make([]float64, t.Rows*k)
		for m := range W {
			M := in[m][t.Off : t.Off+t.Rows*t.Cols]
			for r := range t.Rows {
				for c := range k {
					for j := range t.Cols {
						p[r*k+c] += M[r*t.Cols+j] * q[j*k+c]
					}
				}
			}
		}
		gs(p, t.Rows, k)
		nq := make([]float64, t.Cols*k)
		for m := range W {
			M := in[m][t.Off : t.Off+t.Rows*t.Cols]
			for r := range t.Rows {
				for j := range t.Cols {
					for c := range k {
						nq[j*k+c] += M[r*t.Cols+j] * p[r*k+c]
					}
				}
			}
		}
		for i := range nq {
			nq[i] /= float64(W)
		}
		h.q[ti] = nq
		for r := range t.Rows {
			for j := range t.Cols {
				var v float64
				for c := range k {
					v += p[r*k+c] * nq[j*k+c]
				}
				out[t.Off+r*t.Cols+j] = v
			}
		}
	}
	for m := range W {
		e := make([]float64, h.n)
		for i := range e {
			e[i] = in[m][i] - out[i]
		}
		h.errs[names[m]] = e
	}
	return out
}

// psgdShapes is a buffer of matrices that compress at rank 3, matrices too
// small or thin to, and uncovered gaps.
var psgdShapes = []Tensor{
	{Off: 0, Rows: 16, Cols: 12},   // compressed at rank ≤ 3
	{Off: 199, Rows: 3, Cols: 4},   // after a gap; too small
	{Off: 211, Rows: 20, Cols: 9},  // compressed at rank ≤ 3
	{Off: 396, Rows: 1, Cols: 30},  // a row vector
	{Off: 426, Rows: 33, Cols: 17}, // compressed
}

const psgdLen = 426 + 33*17 + 3

// psgdGrads returns gradient-like inputs for the members: a shared low-rank
// part (so warm start has something to find) plus per-member noise.
func psgdGrads(n, step uint64, names []string) [][]float32 {
	base := rand.New(rand.NewPCG(step, 99))
	shared := make([]float32, psgdLen)
	for i := range shared {
		shared[i] = float32(base.NormFloat64())
	}
	var out [][]float32
	for _, name := range names {
		rng := rand.New(rand.NewPCG(step, uint64(len(name))*1000+uint64(name[len(name)-1])))
		g := make([]float32, psgdLen)
		for i := range g {
			g[i] = shared[i] + 0.5*float32(rng.NormFloat64())
		}
		out = append(out, g)
	}
	return out
}

// psgdCheck compares a Reducer's sums with W times the hook's averages, and
// the residuals, to 1e-5 of the largest magnitude.
func psgdCheck(t *testing.T, what string, got [][]float32, want []float64, rs []*Reducer, h *hook, names []string) {
	t.Helper()
	W := float64(len(got))
	scale := 0.0
	for _, v := range want {
		scale = max(scale, math.Abs(v*W))
	}
	for m := range got {
		for i, v := range got[m] {
			if d := math.Abs(float64(v) - W*want[i]); d > 1e-5*scale {
				t.Fatalf("%s: member %d element %d: %v, reference %v (off by %.3g of %.3g)", what, m, i, v, W*want[i], d, scale)
			}
			if math.Float32bits(v) != math.Float32bits(got[0][i]) {
				t.Fatalf("%s: element %d differs between members 0 (%v) and %d (%v)", what, i, got[0][i], m, v)
			}
		}
		if e := h.errs[names[m]]; e != nil {
			for i, v := range rs[m].Residual() {
				if d := math.Abs(float64(v) - e[i]); d > 1e-5*scale {
					t.Fatalf("%s: member %d residual %d: %v, reference %v", what, m, i, v, e[i])
				}
			}
		}
	}
}

// TestPowerSGDMatchesHook runs PowerSGD on rings of 1 to 4 members (in
// memory, and 3 over gRPC), with one bucket and with many, through
// warm-started steps after a plain one, and compares every step with the
// reference hook.
func TestPowerSGDMatchesHook(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, -3} {
		kind := "inmem"
		if n < 0 {
			kind, n = "grpc", -n
		}
		for _, rank := range []int{1, 3} {
			for _, bucket := range []int{4 * psgdLen, 4 * 250} {
				t.Run(fmt.Sprintf("%s/n%d/rank%d/bucket%d", kind, n, rank, bucket/4), func(t *testing.T) {
					cfg := Config{Codec: CodecPowerSGD, Tensors: psgdShapes, PowerSGDRank: rank, PowerSGDStart: 1,
						Seed: 7, BucketBytes: bucket, ChunkBytes: 4 * Int8Block}
					var c *cluster
					if kind == "grpc" {
						c = newGRPCCluster(t, n, psgdLen, cfg)
					} else {
						c = newInmemCluster(t, n, psgdLen, cfg)
					}
					var names []string
					for _, m := range c.gen[0].Members {
						names = append(names, m.Name)
					}
					h := newHook(psgdLen, rank, 1, 7, psgdShapes)
					for step := range uint64(6) {
						xs := psgdGrads(uint64(n), step, names)
						want := h.step(step, names, xs, false)
						for i, err := range c.allreduce(1, step, xs) {
							if err != nil {
								t.Fatalf("step %d member %d: %v", step, i, err)
							}
						}
						psgdCheck(t, fmt.Sprintf("step %d", step), xs, want, c.rs, h, names)
					}
				})
			}
		}
	}
}

// TestPowerSGDBuckets: buckets never cut a tensor, cover the buffer from the
// end, and are about the size asked for.
func TestPowerSGDBuckets(t *testing.T) {
	for _, per := range []int{1, 50, 250, 1000, psgdLen} {
		spans := psgdSpans(psgdLen, per, psgdShapes)
		hi := psgdLen
		for _, s := range spans {
			if s.hi != hi || s.lo >= s.hi {
				t.Fatalf("per %d: spans %v do not tile the buffer from the end", per, spans)
			}
			hi = s.lo
			for _, ts := range psgdShapes {
				if s.lo > ts.Off && s.lo < ts.Off+ts.Rows*ts.Cols {
					t.Fatalf("per %d: bucket %v starts inside tensor %+v", per, s, ts)
				}
			}
		}
		if hi != 0 {
			t.Fatalf("per %d: spans %v stop at %d", per, spans, hi)
		}
	}
}

// TestPowerSGDConfig: shapes that do not fit the buffer are refused.
func TestPowerSGDConfig(t *testing.T) {
	net := NewInmemNetwork()
	tr, _ := net.Transport("a")
	for _, ts := range [][]Tensor{
		{{Off: 0, Rows: 10, Cols: 10}, {Off: 50, Rows: 2, Cols: 2}}, // overlap
		{{Off: 10, Rows: 10, Cols: 10}},                             // past the end
		{{Off: 0, Rows: 0, Cols: 10}},                               // empty
		{{Off: 50, Rows: 2, Cols: 2}, {Off: 0, Rows: 2, Cols: 2}},   // unsorted
	} {
		if _, err := New(tr, 100, Config{Codec: CodecPowerSGD, Tensors: ts}); err == nil {
			t.Errorf("tensors %v accepted for a buffer of 100", ts)
		}
	}
	if _, err := New(tr, 100, Config{Codec: CodecPowerSGD, PowerSGDRank: -1}); err == nil {
		t.Error("rank -1 accepted")
	}
}

// TestPowerSGDMembership: a ring of three loses a member in the middle of a
// step, the two survivors redo it in a new generation, and a fresh member
// (no residual, as a joiner) joins later. Every member draws Q again at each
// new generation; the results stay equal on every member and to the
// reference, and the survivors' residuals carry over.
func TestPowerSGDMembership(t *testing.T) {
	const rank = 2
	// c's death is seen when its transport closes; the deadline only bounds
	// a stall, and is long enough for a loaded machine under -race (300 ms
	// made step 0 time out there).
	cfg := Config{Codec: CodecPowerSGD, Tensors: psgdShapes, PowerSGDRank: rank, Seed: 3,
		BucketBytes: 4 * 300, ChunkBytes: 4 * Int8Block, Deadline: 3 * time.Second}
	net := NewInmemNetwork()
	member := func(name string) (*InmemTransport, *Reducer) {
		tr, err := net.Transport(name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(tr, psgdLen, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr, r
	}
	ts := map[string]*InmemTransport{}
	rs := map[string]*Reducer{}
	for _, name := range []string{"a", "b", "c"} {
		ts[name], rs[name] = member(name)
	}
	h := newHook(psgdLen, rank, 0, 3, psgdShapes)
	run := func(gen uint64, step uint64, names []string, reseed bool) {
		t.Helper()
		var members []Peer
		for _, n := range names {
			members = append(members, Peer{Name: n, Addr: n})
		}
		xs := psgdGrads(0, step, names)
		want := h.step(step, names, xs, reseed)
		errs := make([]error, len(names))
		var wg sync.WaitGroup
		for i, n := range names {
			wg.Go(func() {
				errs[i] = rs[n].Allreduce(context.Background(), Generation{ID: gen, Members: members, Rank: i}, step, xs[i])
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("generation %d step %d member %s: %v", gen, step, names[i], err)
			}
		}
		var list []*Reducer
		for _, n := range names {
			list = append(list, rs[n])
		}
		psgdCheck(t, fmt.Sprintf("generation %d step %d", gen, step), xs, want, list, h, names)
	}
	run(1, 0, []string{"a", "b", "c"}, false)
	run(1, 1, []string{"a", "b", "c"}, false)

	// Step 2: c dies mid-step (it never takes part and then leaves).
	members := []Peer{{Name: "a", Addr: "a"}, {Name: "b", Addr: "b"}, {Name: "c", Addr: "c"}}
	xs := psgdGrads(0, 2, []string{"a", "b", "c"})
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, n := range []string{"a", "b"} {
		wg.Go(func() {
			errs[i] = rs[n].Allreduce(context.Background(), Generation{ID: 1, Members: members, Rank: i}, 2, xs[i])
		})
	}
	time.Sleep(50 * time.Millisecond)
	ts["c"].Close()
	wg.Wait()
	if errs[0] == nil || errs[1] == nil {
		t.Fatalf("step 2 with c gone: errors %v, want both members to fail", errs)
	}
	// The survivors redo step 2, then go on; the hook's state is untouched
	// by the failed step.
	run(2, 2, []string{"a", "b"}, true)
	run(2, 3, []string{"a", "b"}, false)

	// d joins with no residual; checkpoints carry residuals: a restarted b
	// restores its own.
	ts["d"], rs["d"] = member("d")
	saved := append([]float32(nil), rs["b"].Residual()...)
	ts["b"].Close()
	delete(ts, "b")
	net2 := net
	tr, err := net2.Transport("b2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	if rs["b2"], err = New(tr, psgdLen, cfg); err != nil {
		t.Fatal(err)
	}
	if err := rs["b2"].SetResidual(saved); err != nil {
		t.Fatal(err)
	}
	h.errs["b2"] = h.errs["b"]
	run(3, 4, []string{"a", "b2", "d"}, true)
	run(3, 5, []string{"a", "b2", "d"}, false)
}

// TestPowerSGDFewerBytes: on matrices of a realistic shape, rank 4 sends a
// small fraction of what none sends.
func TestPowerSGDFewerBytes(t *testing.T) {
	shapes := []Tensor{{Off: 0, Rows: 256, Cols: 512}, {Off: 256 * 512, Rows: 512, Cols: 256}}
	length := 2*256*512 + 100
	sent := map[string]uint64{}
	for _, codec := range []string{CodecNone, CodecPowerSGD} {
		c := newInmemCluster(t, 2, length, Config{Codec: codec, Tensors: shapes, PowerSGDRank: 4})
		xs := inputs(2, length, 1)
		for i, err := range c.allreduce(1, 0, xs) {
			if err != nil {
				t.Fatalf("%s member %d: %v", codec, i, err)
			}
		}
		sent[codec] = c.rs[0].Stats().SentBytes
	}
	// Per member: (256+512)·4·2 floats of P and Q plus 100 plain, half of
	// them sent in each direction of a ring of two, against 262244/2.
	if r := float64(sent[CodecNone]) / float64(sent[CodecPowerSGD]); r < 20 {
		t.Errorf("none sent %d bytes, powersgd %d: only %.1f× fewer", sent[CodecNone], sent[CodecPowerSGD], r)
	}
}

// TestPowerSGDTrainsLikeSum: plain SGD on a least-squares problem, each of
// three members holding its own data, reaches about the loss of exact sums
// when its gradients go through rank-2 PowerSGD: error feedback makes up for
// what each step's approximation leaves out.
func TestPowerSGDTrainsLikeSum(t *testing.T) {
	const rows, cols, per, world, steps = 24, 16, 64, 3, 300
	shapes := []Tensor{{Off: 0, Rows: rows, Cols: cols}}
	rng := rand.New(rand.NewPCG(1, 2))
	truth := make([]float64, rows*cols)
	for i := range truth {
		truth[i] = rng.NormFloat64()
	}
	// Member m's samples: x (rows) → y = xᵀ·truth + noise (cols).
	xs := make([][]float64, world*per)
	ys := make([][]float64, world*per)
	for s := range xs {
		xs[s], ys[s] = make([]float64, rows), make([]float64, cols)
		for i := range xs[s] {
			xs[s][i] = rng.NormFloat64()
		}
		for j := range cols {
			for i := range rows {
				ys[s][j] += xs[s][i] * truth[i*cols+j]
			}
			ys[s][j] += 0.1 * rng.NormFloat64()
		}
	}
	loss := func(w []float32, grads [][]float32) float64 {
		var l float64
		for s := range xs {
			m := s / per
			for j := range cols {
				var p float64
				for i := range rows {
					p += xs[s][i] * float64(w[i*cols+j])
				}
				d := p - ys[s][j]
				l += d * d / float64(len(xs))
				if grads != nil {
					for i := range rows {
						grads[m][i*cols+j] += float32(2 * d * xs[s][i] / float64(len(xs)))
					}
				}
			}
		}
		return l
	}
	final := map[string]float64{}
	for _, codec := range []string{CodecNone, CodecPowerSGD} {
		c := newInmemCluster(t, world, rows*cols, Config{Codec: codec, Tensors: shapes, PowerSGDRank: 2})
		w := make([]float32, rows*cols)
		for step := range uint64(steps) {
			grads := make([][]float32, world)
			for m := range grads {
				grads[m] = make([]float32, rows*cols)
			}
			loss(w, grads)
			for i, err := range c.allreduce(1, step, grads) {
				if err != nil {
					t.Fatalf("%s step %d member %d: %v", codec, step, i, err)
				}
			}
			for i := range w {
				w[i] -= 0.05 * grads[0][i]
			}
		}
		final[codec] = loss(w, nil)
	}
	t.Logf("loss after %d steps: none %.5f, powersgd rank 2 %.5f", steps, final[CodecNone], final[CodecPowerSGD])
	if final[CodecPowerSGD] > 1.1*final[CodecNone] {
		t.Errorf("powersgd loss %.5f, exact sums %.5f", final[CodecPowerSGD], final[CodecNone])
	}
}

// TestPowerSGDStartFor: a given start is kept; -1 is 10% of the steps, but
// never before the warmup ends.
func TestPowerSGDStartFor(t *testing.T) {
	for _, tc := range []struct {
		start, steps, warmup int
		want                 uint64
	}{
		{0, 600, 30, 0}, {7, 600, 30, 7}, {-1, 600, 30, 60}, {-1, 600, 100, 100},
		{-1, 10000, 2000, 2000}, {-1, 1000, 0, 100}, {-1, 5, 0, 0},
	} {
		if got := PowerSGDStartFor(tc.start, tc.steps, tc.warmup); got != tc.want {
			t.Errorf("PowerSGDStartFor(%d, %d, %d) = %d, want %d", tc.start, tc.steps, tc.warmup, got, tc.want)
		}
	}
}
