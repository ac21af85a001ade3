package cpu

import (
	"math"

	"github.com/difftrain/difftrain/compute"
)

// Attention keeps in Saved, per (batch, head) bh = b*H + h, the probabilities
// P[bh] (N x (N+1), column 0 the sink) in the first half and the soft-cap
// derivatives D[bh] = d capped / d raw score (0 where masked) in the second.

type attnScratch struct {
	dp   []float32 // per-worker N x (N+1) gradient rows
	sink []float32 // per-(b,h) sink-gradient partials, 2 x [B*H*Dh]
}

// attnArgs holds the checked slices of one Attn call.
type attnArgs struct {
	a                compute.Attn
	q, k, v, out     []float32
	sk, sv           []float32 // nil without a sink
	noise            []int32   // nil: no mask
	p, d             []float32 // the two halves of Saved
	dout, dq, dk, dv []float32
	dsk, dsv         []float32
	scale            float32
}

func (b *Backend) attnArgs(op string, a compute.Attn, back bool) (x attnArgs, ok bool) {
	if b.err != nil {
		return x, false
	}
	if a.B < 0 || a.N <= 0 || a.H <= 0 || a.Dh <= 0 || a.SoftCap < 0 || a.SoftCap != a.SoftCap {
		b.fail(op, "bad shape B=%d N=%d H=%d Dh=%d SoftCap=%g", a.B, a.N, a.H, a.Dh, a.SoftCap)
		return x, false
	}
	n := a.B * a.N * a.H * a.Dh
	x.a = a
	x.q = b.f32(op, "Q", a.Q, n)
	x.k = b.f32(op, "K", a.K, n)
	x.v = b.f32(op, "V", a.V, n)
	if (a.SinkK == nil) != (a.SinkV == nil) {
		b.fail(op, "SinkK and SinkV must both be set or both be nil")
	}
	if a.SinkK != nil {
		x.sk = b.f32(op, "SinkK", a.SinkK, a.H*a.Dh)
		x.sv = b.f32(op, "SinkV", a.SinkV, a.H*a.Dh)
	}
	if a.Noise != nil {
		x.noise = b.i32(op, "Noise", a.Noise, a.B*a.N)
	}
	half := compute.AttnSavedLen(a.B, a.N, a.H) / 2
	saved := b.f32(op, "Saved", a.Saved, -1)
	if b.err == nil && len(saved) < 2*half {
		b.fail(op, "Saved has %d elements, want AttnSavedLen = %d", len(saved), 2*half)
	}
	if b.err != nil {
		return x, false
	}
	x.p, x.d = saved[:half], saved[half:2*half]
	if !back {
		x.out = b.f32(op, "Out", a.Out, n)
	} else {
		x.dout = b.f32(op, "DOut", a.DOut, n)
		x.dq = b.f32(op, "DQ", a.DQ, n)
		x.dk = b.f32(op, "DK", a.DK, n)
		x.dv = b.f32(op, "DV", a.DV, n)
		if x.sk != nil {
			x.dsk = b.f32(op, "DSinkK", a.DSinkK, a.H*a.Dh)
			x.dsv = b.f32(op, "DSinkV", a.DSinkV, a.H*a.Dh)
		}
	}
	x.scale = float32(1 / math.Sqrt(float64(a.Dh)))
	return x, b.err == nil
}

type attnJob struct {
	x    attnArgs
	blas blasImpl
}

func (j *attnJob) run(_, lo, hi int) {
	for bh := lo; bh < hi; bh++ {
		j.head(bh)
	}
}

// head runs the forward pass of one (batch, head).
func (j *attnJob) head(bh int) {
	x := &j.x
	a := x.a
	N, H, Dh := a.N, a.H, a.Dh
	ld, row := H*Dh, N+1
	bi, h := bh/H, bh%H
	base := bi*N*ld + h*Dh
	p := x.p[bh*N*row : (bh+1)*N*row]
	d := x.d[bh*N*row : (bh+1)*N*row]
	// Scores of the N tokens into columns 1..N.
	j.blas.sgemm(false, true, N, N, Dh, x.scale, x.q[base:], ld, x.k[base:], ld, 0, p[1:], row)
	var sk, sv []float32
	if x.sk != nil { // the sink's scores into column 0
		sk, sv = x.sk[h*Dh:(h+1)*Dh], x.sv[h*Dh:(h+1)*Dh]
		for i := range N {
			p[i*row] = dot32(x.q[base+i*ld:base+i*ld+Dh], sk) * x.scale
		}
	}
	if a.SoftCap > 0 {
		capRows(p, d, a.SoftCap)
	} else {
		for c := range d {
			d[c] = 1
		}
	}
	for i := range N {
		maskRow(p[i*row:(i+1)*row], d[i*row:(i+1)*row], x, bi, i, sk != nil)
	}
	softmaxRows(p, N, row)
	out := x.out[base:]
	j.blas.sgemm(false, false, N, Dh, N, 1, p[1:], row, x.v[base:], ld, 0, out, ld)
	if sv != nil {
		for i := range N {
			o := out[i*ld : i*ld+Dh]
			w := p[i*row]
			for c, v := range sv {
				o[c] += w * v
			}
		}
	}
}

// maskRow sets the scores of the keys query i may not see to −Inf and their
// derivatives to 0, so that the softmax gives them probability 0.
func maskRow(pr, dr []float32, x *attnArgs, bi, i int, sink bool) {
	N := x.a.N
	negInf := float32(math.Inf(-1))
	if !sink {
		pr[0], dr[0] = negInf, 0
	}
	if x.noise == nil || x.noise[bi*N+i] != 0 { // a noisy query sees every key
		return
	}
	if x.a.CausalPrompt {
		for c := i + 2; c <= N; c++ { // keys c−1 > i
			pr[c], dr[c] = negInf, 0
		}
		return
	}
	for k, f := range x.noise[bi*N : (bi+1)*N] {
		if f != 0 {
			pr[k+1], dr[k+1] = negInf, 0
		}
	}
}

func dot32(x, y []float32) float32 {
	var s float32
	for i, v := range x {
		s += v * y[i]
	}
	return s
}

// Attention runs the forward pass (see compute.Attn).
func (b *Backend) Attention(a compute.Attn) {
	x, ok := b.attnArgs("Attention", a, false)
	if !ok || a.B == 0 {
		return
	}
	j := &b.jobs.attn
	*j = attnJob{x: x, blas: b.blas}
	b.blas.useThreads(1) // each worker runs its heads' GEMMs
	b.pool.run(j, a.B*a.H, 1)
	*j = attnJob{}
}

type attnBackJob struct {
	x    attnArgs
	blas blasImpl
	dp   []float32 // per worker
	sink []float32 // dsk partials then dsv partials, [B*H*Dh] each
}

func (j *attnBackJob) run(w, lo, hi int) {
	x := &j.x
	sz := x.a.N * (x.a.N + 1)
	dp := j.dp[w*sz : (w+1)*sz]
	for bh := lo; bh < hi; bh++ {
		j.head(bh, dp)
	}
}

// head runs the backward pass of one (batch, head) with dp as scratch.
func (j *attnBackJob) head(bh int, dp []float32) {
	x := &j.x
	a := x.a
	N, H, Dh := a.N, a.H, a.Dh
	ld, row := H*Dh, N+1
	bi, h := bh/H, bh%H
	base := bi*N*ld + h*Dh
	p := x.p[bh*N*row : (bh+1)*N*row]
	d := x.d[bh*N*row : (bh+1)*N*row]
	dout := x.dout[base:]
	// dP = dO·V^T (columns 1..N), dO·sinkV (column 0).
	j.blas.sgemm(false, true, N, N, Dh, 1, dout, ld, x.v[base:], ld, 0, dp[1:], row)
	// dV = P^T·dO over the token columns.
	j.blas.sgemm(true, false, N, Dh, N, 1, p[1:], row, dout, ld, 0, x.dv[base:], ld)
	var sk, sv, dsk, dsv []float32
	if x.sk != nil {
		sk, sv = x.sk[h*Dh:(h+1)*Dh], x.sv[h*Dh:(h+1)*Dh]
		nb := len(j.sink) / 2
		dsk = j.sink[bh*Dh : (bh+1)*Dh]
		dsv = j.sink[nb+bh*Dh : nb+(bh+1)*Dh]
		clear(dsk)
		clear(dsv)
	}
	for i := range N {
		pr, dr, gr := p[i*row:(i+1)*row], d[i*row:(i+1)*row], dp[i*row:(i+1)*row]
		doi := dout[i*ld : i*ld+Dh]
		if sv != nil {
			gr[0] = dot32(doi, sv)
			w := pr[0]
			for c, v := range doi {
				dsv[c] += w * v
			}
		} else {
			gr[0] = 0
		}
		var s float32
		for c, pv := range pr {
			s += pv * gr[c]
		}
		for c, pv := range pr {
			gr[c] = pv * (gr[c] - s) * dr[c] * x.scale
		}
		if sk != nil {
			qi := x.q[base+i*ld : base+i*ld+Dh]
			g0 := gr[0]
			for c, v := range qi {
				dsk[c] += g0 * v
			}
		}
	}
	// dQ = dS·K (+ dS_sink·sinkK), dK = dS^T·Q.
	dq := x.dq[base:]
	j.blas.sgemm(false, false, N, Dh, N, 1, dp[1:], row, x.k[base:], ld, 0, dq, ld)
	if sk != nil {
		for i := range N {
			g0 := dp[i*row]
			o := dq[i*ld : i*ld+Dh]
			for c, v := range sk {
				o[c] += g0 * v
			}
		}
	}
	j.blas.sgemm(true, false, N, Dh, N, 1, dp[1:], row, x.q[base:], ld, 0, x.dk[base:], ld)
}

// AttentionBackward runs the backward pass (see compute.Attn).
func (b *Backend) AttentionBackward(a compute.Attn) {
	x, ok := b.attnArgs("AttentionBackward", a, true)
	if !ok || a.B == 0 {
		return
	}
	s := &b.attn
	sz := b.threads * a.N * (a.N + 1)
	if cap(s.dp) < sz {
		s.dp = make([]float32, sz)
	}
	nb := a.B * a.H * a.Dh
	if cap(s.sink) < 2*nb {
		s.sink = make([]float32, 2*nb)
	}
	j := &b.jobs.attnB
	*j = attnBackJob{x: x, blas: b.blas, dp: s.dp[:sz], sink: s.sink[:2*nb]}
	b.blas.useThreads(1) // each worker runs its heads' GEMMs
	b.pool.run(j, a.B*a.H, 1)
	if x.sk != nil {
		hd := a.H * a.Dh
		for bi := range a.B {
			dk, dv := j.sink[bi*hd:(bi+1)*hd], j.sink[nb+bi*hd:nb+(bi+1)*hd]
			for c := range hd {
				x.dsk[c] += dk[c]
				x.dsv[c] += dv[c]
			}
		}
	}
	*j = attnBackJob{}
}
