package cpu

import (
	"math"

	"github.com/difftrain/difftrain/compute"
)

type rmsJob struct {
	x, w, y, rstd []float32
	cols          int
	eps           float32
}

func (j *rmsJob) run(_, lo, hi int) {
	n := j.cols
	for r := lo; r < hi; r++ {
		x, y := j.x[r*n:(r+1)*n], j.y[r*n:(r+1)*n]
		var s float64
		for _, v := range x {
			s += float64(v) * float64(v)
		}
		rs := float32(1 / math.Sqrt(s/float64(n)+float64(j.eps)))
		j.rstd[r] = rs
		for c, v := range x {
			y[c] = (1 + j.w[c]) * (v * rs)
		}
	}
}

// RMSNorm sets y = (1+w) ⊙ x / sqrt(mean(x²)+eps) per row and rstd to the
// row's 1/sqrt(mean(x²)+eps).
func (b *Backend) RMSNorm(x, w, y, rstd compute.Buffer, rows, cols int, eps float32) {
	const op = "RMSNorm"
	if !b.rowsCols(op, rows, cols) {
		return
	}
	j := &b.jobs.rms
	j.x = b.f32(op, "x", x, rows*cols)
	j.w = b.f32(op, "w", w, cols)
	j.y = b.f32(op, "y", y, rows*cols)
	j.rstd = b.f32(op, "rstd", rstd, rows)
	j.cols, j.eps = cols, eps
	if b.err == nil && cols > 0 {
		b.pool.run(j, rows, rowGrain)
	}
	*j = rmsJob{}
}

type rmsBackJob struct {
	x, w, rstd, dy, dx, part []float32
	cols                     int
}

func (j *rmsBackJob) run(wk, lo, hi int) {
	n := j.cols
	acc := j.part[wk*n : (wk+1)*n]
	for r := lo; r < hi; r++ {
		x, dy, dx := j.x[r*n:(r+1)*n], j.dy[r*n:(r+1)*n], j.dx[r*n:(r+1)*n]
		rs := j.rstd[r]
		var dot float64 // Σ (dy ⊙ (1+w)) ⊙ x̂
		for c, v := range x {
			xh := v * rs
			acc[c] += dy[c] * xh
			dot += float64(dy[c]*(1+j.w[c])) * float64(xh)
		}
		m := float32(dot / float64(n))
		for c, v := range x {
			dx[c] = rs * (dy[c]*(1+j.w[c]) - v*rs*m)
		}
	}
}

// RMSNormBackward sets dx to the gradient with respect to x and adds the
// gradient with respect to w into dw.
func (b *Backend) RMSNormBackward(x, w, rstd, dy, dx, dw compute.Buffer, rows, cols int) {
	const op = "RMSNormBackward"
	if !b.rowsCols(op, rows, cols) {
		return
	}
	j := &b.jobs.rmsB
	j.x = b.f32(op, "x", x, rows*cols)
	j.w = b.f32(op, "w", w, cols)
	j.rstd = b.f32(op, "rstd", rstd, rows)
	j.dy = b.f32(op, "dy", dy, rows*cols)
	j.dx = b.f32(op, "dx", dx, rows*cols)
	dws := b.f32(op, "dw", dw, cols)
	j.cols = cols
	if b.err == nil && cols > 0 {
		j.part = b.partialVecs(cols)
		b.pool.run(j, rows, rowGrain)
		b.reduceInto(dws, j.part)
	}
	*j = rmsBackJob{}
}

// ropeTable caches cos/sin of n·θ^(-2i/Dh) for positions [0, N).
type ropeTable struct {
	n, dh    int
	theta    float64
	cos, sin []float32 // [N, Dh/2]
}

func (t *ropeTable) get(n, dh int, theta float64) {
	if t.n == n && t.dh == dh && t.theta == theta {
		return
	}
	half := dh / 2
	t.n, t.dh, t.theta = n, dh, theta
	t.cos, t.sin = make([]float32, n*half), make([]float32, n*half)
	for p := range n {
		for i := range half {
			ang := float64(p) * math.Pow(theta, -2*float64(i)/float64(dh))
			t.cos[p*half+i], t.sin[p*half+i] = float32(math.Cos(ang)), float32(math.Sin(ang))
		}
	}
}

type ropeJob struct {
	x        []float32
	s        compute.RopeShape
	cos, sin []float32
	sign     float32 // +1 forward, -1 inverse
}

func (j *ropeJob) run(_, lo, hi int) {
	s, half := j.s, j.s.Dh/2
	for t := lo; t < hi; t++ {
		p := t % s.N
		cs, sn := j.cos[p*half:(p+1)*half], j.sin[p*half:(p+1)*half]
		for h := range s.H {
			x := j.x[(t*s.H+h)*s.Dh : (t*s.H+h+1)*s.Dh]
			x1, x2 := x[:half], x[half:]
			for i := range half {
				c, si := cs[i], j.sign*sn[i]
				a, bb := x1[i], x2[i]
				x1[i] = a*c - bb*si
				x2[i] = bb*c + a*si
			}
		}
	}
}

func (b *Backend) rope(op string, x compute.Buffer, s compute.RopeShape, sign float32) {
	if b.err != nil {
		return
	}
	if s.B < 0 || s.N <= 0 || s.H <= 0 || s.Dh <= 0 || s.Dh%2 != 0 || !(s.Theta > 0) {
		b.fail(op, "bad shape B=%d N=%d H=%d Dh=%d (even) Theta=%g", s.B, s.N, s.H, s.Dh, s.Theta)
		return
	}
	xs := b.f32(op, "x", x, s.B*s.N*s.H*s.Dh)
	if b.err != nil {
		return
	}
	b.ropeTab.get(s.N, s.Dh, s.Theta)
	j := &b.jobs.rope
	*j = ropeJob{x: xs, s: s, cos: b.ropeTab.cos, sin: b.ropeTab.sin, sign: sign}
	b.pool.run(j, s.B*s.N, 4)
	*j = ropeJob{}
}

// Rope rotates x in place (NeoX rotate-half).
func (b *Backend) Rope(x compute.Buffer, s compute.RopeShape) { b.rope("Rope", x, s, 1) }

// RopeBackward applies the inverse rotation to dx in place.
func (b *Backend) RopeBackward(dx compute.Buffer, s compute.RopeShape) {
	b.rope("RopeBackward", dx, s, -1)
}

type embJob struct {
	table, out []float32
	ids        []int32
	dim        int
}

func (j *embJob) run(_, lo, hi int) {
	for t := lo; t < hi; t++ {
		id := int(j.ids[t])
		copy(j.out[t*j.dim:(t+1)*j.dim], j.table[id*j.dim:(id+1)*j.dim])
	}
}

// embArgs checks an embedding call: rows tokens of dim floats, ids in range.
func (b *Backend) embArgs(op string, table, ids, out compute.Buffer, rows, dim int) ([]float32, []int32, []float32) {
	if b.err == nil && (rows < 0 || dim <= 0) {
		b.fail(op, "bad shape rows=%d dim=%d", rows, dim)
	}
	ts := b.f32(op, "table", table, -1)
	is := b.i32(op, "ids", ids, rows)
	os := b.f32(op, "out", out, rows*dim)
	if b.err != nil {
		return nil, nil, nil
	}
	if len(ts)%dim != 0 {
		b.fail(op, "table has %d elements, not a multiple of dim %d", len(ts), dim)
		return nil, nil, nil
	}
	v := len(ts) / dim
	for t, id := range is {
		if id < 0 || int(id) >= v {
			b.fail(op, "id %d at token %d outside the table's %d rows", id, t, v)
			return nil, nil, nil
		}
	}
	return ts, is, os
}

// Embedding sets out[t,:] = table[ids[t],:] for the rows tokens of ids. The
// table has table.Len()/dim rows.
func (b *Backend) Embedding(table, ids, out compute.Buffer, rows, dim int) {
	ts, is, os := b.embArgs("Embedding", table, ids, out, rows, dim)
	if b.err != nil {
		return
	}
	j := &b.jobs.emb
	*j = embJob{table: ts, out: os, ids: is, dim: dim}
	b.pool.run(j, rows, 64)
	*j = embJob{}
}

type embBackJob struct {
	dtable, dout []float32
	ids          []int32
	dim          int
}

// run handles columns [lo, hi) of every token, so workers never collide.
func (j *embBackJob) run(_, lo, hi int) {
	for t, id := range j.ids {
		src := j.dout[t*j.dim+lo : t*j.dim+hi]
		dst := j.dtable[int(id)*j.dim+lo : int(id)*j.dim+hi]
		for i, v := range src {
			dst[i] += v
		}
	}
}

// EmbeddingBackward adds dout[t,:] into dtable[ids[t],:].
func (b *Backend) EmbeddingBackward(dtable, ids, dout compute.Buffer, rows, dim int) {
	ts, is, os := b.embArgs("EmbeddingBackward", dtable, ids, dout, rows, dim)
	if b.err != nil {
		return
	}
	j := &b.jobs.embB
	*j = embBackJob{dtable: ts, dout: os, ids: is, dim: dim}
	b.pool.run(j, dim, 32)
	*j = embBackJob{}
}
