package allreduce

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas/gonum"
)

// PowerSGD (Vogels, Karimireddy and Jaggi, 2019) as PyTorch's powerSGD_hook
// runs it, per bucket:
//
//  1. Add the error-feedback residual of the last step to the gradient and
//     keep a copy of the result (here: the sum goes to the residual's second
//     buffer, which steps 2–4 read as M, and the gradient gets the result).
//  2. Each matrix-shaped tensor M (rows × cols, a tensor of more dimensions
//     seen as its first dimension × the rest) is compressed at rank
//     k = min(rows, cols, r) when (rows+cols)·k·2 < rows·cols (the hook's
//     min_compression_rate of 2); the other tensors, vectors among them, are
//     summed uncompressed.
//  3. Q (cols × k, warm-started from the last step) is orthogonalised and
//     P = M·Q computed; the uncompressed tensors and every P are summed over
//     the ring in one run.
//  4. Each P is orthogonalised (Gram-Schmidt, as the hook), Q = Mᵀ·P
//     computed and every Q summed over the ring in a second run.
//  5. M becomes P·Qᵀ, and the residual the copy of step 1 minus the result
//     divided by the world size.
//
// The hook averages where a Reducer sums: the result here is the world size
// times the hook's, and the residual is the hook's exactly. The first
// Config.PowerSGDStart steps are plain sums that leave the residual as it
// is (the hook's start_powerSGD_iter; PowerSGDStartFor resolves the CLI's
// default).
//
// The hook's settings, as here: matrix_approximation_rank is
// Config.PowerSGDRank; min_compression_rate 2; use_error_feedback and
// warm_start on, the residual covering the whole bucket (the uncompressed
// tensors too, as the hook's error_dict does); per-tensor compression
// (powerSGD_hook, not batched_powerSGD_hook, which views the whole bucket as
// one square matrix); orthogonalization_epsilon 0, except that a column of
// norm zero stays zero where the hook would divide by zero. For ranks above
// 2 the hook orthogonalises with a QR factorisation instead of Gram-Schmidt:
// the same columns up to their signs, which cancel in P·Qᵀ.
// batch_tensors_with_same_shape changes only the hook's speed.
//
// Q must be the same on every member. Warm start keeps it so as long as all
// members start from the same Q, which is therefore re-drawn, a pure function
// of (Config.Seed, tensor index), whenever a step begins in a new generation
// (a changed ring, a joiner, a restart) or after a failed step, on every
// member alike: nothing about Q needs to travel to joiners or into
// checkpoints. A ring change costs one step of warm start. The per-member
// residual is training state like int8's: Residual and SetResidual.

// PowerSGDStartFor resolves a run's PowerSGD start step (Config.PowerSGDStart,
// PyTorch's start_powerSGD_iter): start itself when it is 0 or more, and for
// -1 (auto) PyTorch's advice for it: 10% of the run's steps, and no earlier
// than the end of the learning-rate warmup. It is a pure function of the
// run's configuration, so every member resolves it alike.
func PowerSGDStartFor(start, steps, warmup int) uint64 {
	if start >= 0 {
		return uint64(start)
	}
	return uint64(max(0, warmup, steps/10))
}

// psgdMinRate is the hook's min_compression_rate.
const psgdMinRate = 2

// Tensor is one tensor of the flat buffer: its offset and its shape as a
// matrix, Rows × Cols elements stored row by row.
type Tensor struct {
	Off, Rows, Cols int
}

// psgdMat is one compressed tensor of a bucket.
type psgdMat struct {
	index           int // in Config.Tensors, for seeding its Q
	off, rows, cols int
	rank            int
	p, q            int // offsets of its P in the bucket's P run, of its Q in powerSGD.q
}

// psgdBucket is the plan of one bucket.
type psgdBucket struct {
	mats   []psgdMat
	plain  []span // uncompressed ranges, absolute
	nPlain int    // elements in plain
	nP     int    // elements of all Ps
	q      span   // this bucket's Qs in powerSGD.q
}

// powerSGD is a Reducer's PowerSGD state.
type powerSGD struct {
	rank    int
	start   uint64
	seed    uint64
	buckets []psgdBucket
	q       []float32 // every compressed tensor's Q, kᵀ × cols (row j of Qᵀ contiguous)
	buf     []float32 // scratch: a bucket's uncompressed values then its Ps
	qGen    uint64    // generation whose steps Q is valid for; 0 after a failure
	step    bool      // this step compresses (false in the first PowerSGDStart steps)
}

var blas = gonum.Implementation{}

// checkTensors validates shapes: sorted, disjoint, inside n elements.
func checkTensors(ts []Tensor, n int) error {
	end := 0
	for i, t := range ts {
		switch {
		case t.Rows <= 0 || t.Cols <= 0:
			return fmt.Errorf("tensor %d: shape %d × %d", i, t.Rows, t.Cols)
		case t.Off < end:
			return fmt.Errorf("tensor %d at %d overlaps or precedes the one before (ending at %d)", i, t.Off, end)
		case t.Rows > n || t.Cols > n || t.Off+t.Rows*t.Cols > n:
			return fmt.Errorf("tensor %d (%d × %d at %d) runs past the buffer of %d", i, t.Rows, t.Cols, t.Off, n)
		}
		end = t.Off + t.Rows*t.Cols
	}
	return nil
}

// psgdSpans cuts [0, n) into buckets of about per elements from the end, as
// New does for other codecs, but never inside a tensor: a bucket ends at a
// tensor's start, and one larger than per has a bucket of its own.
func psgdSpans(n, per int, ts []Tensor) []span {
	var out []span
	k := len(ts) - 1
	for hi := n; hi > 0; {
		lo := max(0, hi-per)
		for k >= 0 && ts[k].Off >= hi {
			k--
		}
		for j := k; j >= 0 && ts[j].Off+ts[j].Rows*ts[j].Cols > lo; j-- {
			if ts[j].Off < lo {
				lo = ts[j].Off // lo fell inside tensor j
				break
			}
		}
		out = append(out, span{lo, hi})
		hi = lo
	}
	return out
}

// newPowerSGD plans the buckets of a PowerSGD reducer.
func newPowerSGD(cfg Config, n int) (*powerSGD, []span, error) {
	if cfg.PowerSGDRank < 0 {
		return nil, nil, fmt.Errorf("PowerSGD rank %d", cfg.PowerSGDRank)
	}
	if err := checkTensors(cfg.Tensors, n); err != nil {
		return nil, nil, err
	}
	ps := &powerSGD{rank: cfg.PowerSGDRank, start: cfg.PowerSGDStart, seed: cfg.Seed}
	if ps.rank == 0 {
		ps.rank = 1
	}
	spans := psgdSpans(n, max(1, cfg.BucketBytes/4), cfg.Tensors)
	ti := len(cfg.Tensors) - 1
	nq, most := 0, 0
	for _, s := range spans {
		var b psgdBucket
		at := s.lo // start of the part not yet assigned
		var mats []psgdMat
		for ti >= 0 && cfg.Tensors[ti].Off >= s.lo {
			ti--
		}
		for k := ti + 1; k < len(cfg.Tensors) && cfg.Tensors[k].Off < s.hi; k++ {
			t := cfg.Tensors[k]
			rank := min(t.Rows, t.Cols, ps.rank)
			if (t.Rows+t.Cols)*rank*psgdMinRate >= t.Rows*t.Cols {
				continue // summed as it is, with the gaps
			}
			if t.Off > at {
				b.plain = append(b.plain, span{at, t.Off})
			}
			mats = append(mats, psgdMat{index: k, off: t.Off, rows: t.Rows, cols: t.Cols, rank: rank})
			at = t.Off + t.Rows*t.Cols
		}
		if at < s.hi {
			b.plain = append(b.plain, span{at, s.hi})
		}
		for _, p := range b.plain {
			b.nPlain += p.hi - p.lo
		}
		b.q.lo = nq
		for k := range mats {
			mats[k].p = b.nP
			mats[k].q = nq
			b.nP += mats[k].rows * mats[k].rank
			nq += mats[k].cols * mats[k].rank
		}
		b.q.hi = nq
		b.mats = mats
		most = max(most, b.nPlain+b.nP)
		ps.buckets = append(ps.buckets, b)
	}
	ps.q = make([]float32, nq)
	ps.buf = make([]float32, most)
	return ps, spans, nil
}

// seedQ fills every Q with standard normal values drawn from (seed, tensor
// index) alone.
func (ps *powerSGD) seedQ() {
	for _, b := range ps.buckets {
		for _, m := range b.mats {
			rng := rand.New(rand.NewPCG(ps.seed, uint64(m.index)))
			for i := range m.cols * m.rank {
				ps.q[m.q+i] = float32(rng.NormFloat64())
			}
		}
	}
}

// begin prepares a step: Q is re-drawn in a new generation or after a
// failed step.
func (ps *powerSGD) begin(gen uint64, step uint64) {
	ps.step = step >= ps.start
	if ps.step && ps.qGen != gen {
		ps.seedQ()
		ps.qGen = gen
	}
}

// orthogonalize makes the k columns of a (stored as k contiguous columns of
// length m) orthonormal, by Gram-Schmidt as the hook does. A column of norm
// zero becomes zero (the hook's fallback for vanishing gradients).
func orthogonalize(a []float32, m, k int) {
	for i := range k {
		col := a[i*m : (i+1)*m]
		var s float64
		for _, v := range col {
			s += float64(v) * float64(v)
		}
		if s == 0 || math.IsInf(s, 0) || math.IsNaN(s) {
			if s == 0 {
				clear(col)
			} else {
				for j := range col {
					col[j] = float32(math.NaN())
				}
			}
			continue
		}
		blas.Sscal(m, float32(1/math.Sqrt(s)), col, 1)
		for j := i + 1; j < k; j++ {
			rest := a[j*m : (j+1)*m]
			blas.Saxpy(m, -blas.Sdot(m, col, 1, rest, 1), col, 1, rest, 1)
		}
	}
}

// reducePowerSGD runs bucket i of a step with PowerSGD.
func (r *Reducer) reducePowerSGD(ctx context.Context, gen Generation, step uint64, i int, x []float32, off int) error {
	ps := r.psgd
	id := 2 * uint32(i)
	if !ps.step {
		return r.reduceRing(ctx, gen, step, id, x, nil, nil)
	}
	b := &ps.buckets[i]
	W := float32(len(gen.Members))
	// 1. the gradient with the residual in, kept in next: M below. x gets
	// the result.
	keep := r.next[off : off+len(x)]
	add2(keep, x, r.resid[off:off+len(x)])
	// 2–3. the uncompressed values, then P = M·Q for every tensor.
	buf := ps.buf[:b.nPlain+b.nP]
	at := 0
	for _, s := range b.plain {
		at += copy(buf[at:], keep[s.lo-off:s.hi-off])
	}
	for _, m := range b.mats {
		q := ps.q[m.q : m.q+m.cols*m.rank]
		orthogonalize(q, m.cols, m.rank)
		p := buf[b.nPlain+m.p : b.nPlain+m.p+m.rows*m.rank] // Pᵀ: column c of P at c·rows
		mat := keep[m.off-off : m.off-off+m.rows*m.cols]
		for row := range m.rows {
			mr := mat[row*m.cols : (row+1)*m.cols]
			for c := range m.rank {
				p[c*m.rows+row] = blas.Sdot(m.cols, mr, 1, q[c*m.cols:], 1)
			}
		}
	}
	if err := r.reduceRing(ctx, gen, step, id, buf, nil, nil); err != nil {
		return err
	}
	at = 0
	for _, s := range b.plain {
		at += copy(x[s.lo-off:s.hi-off], buf[at:])
	}
	// 4. P̂ = orth(P), Q = Mᵀ·P̂, summed.
	for _, m := range b.mats {
		p := buf[b.nPlain+m.p : b.nPlain+m.p+m.rows*m.rank]
		orthogonalize(p, m.rows, m.rank)
		q := ps.q[m.q : m.q+m.cols*m.rank]
		clear(q)
		mat := keep[m.off-off : m.off-off+m.rows*m.cols]
		for row := range m.rows {
			mr := mat[row*m.cols : (row+1)*m.cols]
			for c := range m.rank {
				blas.Saxpy(m.cols, p[c*m.rows+row], mr, 1, q[c*m.cols:(c+1)*m.cols], 1)
			}
		}
	}
	if err := r.reduceRing(ctx, gen, step, id+1, ps.q[b.q.lo:b.q.hi], nil, nil); err != nil {
		return err
	}
	// 5. M = P̂·Qᵀ; residual = keep − result/W, a row at a time while it
	// is in the cache. (·(1/W) rounds as /W for the powers of two, and
	// within an ulp of it otherwise.)
	inv := 1 / W
	for _, m := range b.mats {
		p := buf[b.nPlain+m.p : b.nPlain+m.p+m.rows*m.rank]
		q := ps.q[m.q : m.q+m.cols*m.rank]
		mat := x[m.off-off : m.off-off+m.rows*m.cols]
		kept := keep[m.off-off : m.off-off+m.rows*m.cols]
		for row := range m.rows {
			mr := mat[row*m.cols : (row+1)*m.cols]
			clear(mr)
			for c := range m.rank {
				blas.Saxpy(m.cols, p[c*m.rows+row], q[c*m.cols:(c+1)*m.cols], 1, mr, 1)
			}
			subScaled(kept[row*m.cols:(row+1)*m.cols], mr, inv)
		}
	}
	for _, s := range b.plain {
		subScaled(keep[s.lo-off:s.hi-off], x[s.lo-off:s.hi-off], inv)
	}
	return nil
}

// subScaled sets dst[i] -= v[i]·s.
func subScaled(dst, v []float32, s float32) {
	dst = dst[:len(v)]
	for i, x := range v {
		dst[i] -= x * s
	}
}
