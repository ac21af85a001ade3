package cpu

import "github.com/difftrain/difftrain/compute"

// Grain sizes: the least work worth handing to another worker.
const (
	elemGrain = 1 << 14 // elements
	rowGrain  = 8       // rows of a row kernel
)

// jobs holds one preallocated job per kernel, so dispatch allocates nothing.
type jobs struct {
	gemm    gemmJob
	scale   scaleJob
	axpy    axpyJob
	sumsq   sumsqJob
	bias    biasJob
	biasB   biasBackJob
	relu    reluJob
	reluB   reluBackJob
	rms     rmsJob
	rmsB    rmsBackJob
	rope    ropeJob
	emb     embJob
	embB    embBackJob
	attn    attnJob
	attnB   attnBackJob
	loss    lossJob
	opt     optJob
	reduceV reduceJob
}

type scaleJob struct {
	x     []float32
	alpha float32
}

func (j *scaleJob) run(_, lo, hi int) {
	x := j.x[lo:hi]
	for i := range x {
		x[i] *= j.alpha
	}
}

// Scale sets x *= alpha.
func (b *Backend) Scale(x compute.Buffer, alpha float32) {
	xs := b.f32("Scale", "x", x, -1)
	if b.err != nil {
		return
	}
	j := &b.jobs.scale
	j.x, j.alpha = xs, alpha
	b.pool.run(j, len(xs), elemGrain)
	j.x = nil
}

type axpyJob struct {
	x, y  []float32
	alpha float32
}

func (j *axpyJob) run(_, lo, hi int) {
	x, y := j.x[lo:hi], j.y[lo:hi]
	for i := range x {
		y[i] += j.alpha * x[i]
	}
}

// Axpy sets y += alpha*x.
func (b *Backend) Axpy(alpha float32, x, y compute.Buffer) {
	xs := b.f32("Axpy", "x", x, -1)
	ys := b.f32("Axpy", "y", y, len(xs))
	if b.err != nil {
		return
	}
	j := &b.jobs.axpy
	j.x, j.y, j.alpha = xs, ys, alpha
	b.pool.run(j, len(xs), elemGrain)
	j.x, j.y = nil, nil
}

type sumsqJob struct {
	x   []float32
	out []float64
}

func (j *sumsqJob) run(w, lo, hi int) {
	var s0, s1, s2, s3 float64
	x := j.x[lo:hi]
	i := 0
	for ; i+4 <= len(x); i += 4 {
		a, b, c, d := float64(x[i]), float64(x[i+1]), float64(x[i+2]), float64(x[i+3])
		s0 += a * a
		s1 += b * b
		s2 += c * c
		s3 += d * d
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i]) * float64(x[i])
	}
	j.out[w] = s0 + s1 + s2 + s3
}

// SumSquares returns Σ x² accumulated in float64.
func (b *Backend) SumSquares(x compute.Buffer) float64 {
	xs := b.f32("SumSquares", "x", x, -1)
	if b.err != nil {
		return 0
	}
	j := &b.jobs.sumsq
	j.x, j.out = xs, b.partial
	clear(j.out)
	b.pool.run(j, len(xs), elemGrain)
	s := 0.0
	for _, v := range j.out {
		s += v
	}
	j.x = nil
	return s
}

// rowsCols checks a rows x cols activation and its [cols] vector.
func (b *Backend) rowsCols(op string, rows, cols int) bool {
	if b.err == nil && (rows < 0 || cols < 0) {
		b.fail(op, "negative shape %d x %d", rows, cols)
	}
	return b.err == nil
}

type biasJob struct {
	x, bias []float32
	cols    int
}

func (j *biasJob) run(_, lo, hi int) {
	for r := lo; r < hi; r++ {
		row := j.x[r*j.cols : (r+1)*j.cols]
		for c, v := range j.bias {
			row[c] += v
		}
	}
}

// AddBias adds bias to every row of x.
func (b *Backend) AddBias(x, bias compute.Buffer, rows, cols int) {
	if !b.rowsCols("AddBias", rows, cols) {
		return
	}
	xs := b.f32("AddBias", "x", x, rows*cols)
	bs := b.f32("AddBias", "bias", bias, cols)
	if b.err != nil {
		return
	}
	j := &b.jobs.bias
	j.x, j.bias, j.cols = xs, bs, cols
	b.pool.run(j, rows, rowGrain)
	j.x, j.bias = nil, nil
}

// partialVecs returns threads zeroed vectors of n floats (scratch).
func (b *Backend) partialVecs(n int) []float32 {
	need := b.threads * n
	if cap(b.wpart) < need {
		b.wpart = make([]float32, need)
	}
	b.wpart = b.wpart[:need]
	clear(b.wpart)
	return b.wpart
}

type biasBackJob struct {
	dx, part []float32
	cols     int
}

func (j *biasBackJob) run(w, lo, hi int) {
	acc := j.part[w*j.cols : (w+1)*j.cols]
	for r := lo; r < hi; r++ {
		row := j.dx[r*j.cols : (r+1)*j.cols]
		for c, v := range row {
			acc[c] += v
		}
	}
}

// reduceJob adds the per-worker partial vectors into dst, split over columns.
type reduceJob struct {
	dst, part []float32
	parts     int
}

func (j *reduceJob) run(_, lo, hi int) {
	n := len(j.dst)
	for p := range j.parts {
		src := j.part[p*n+lo : p*n+hi]
		dst := j.dst[lo:hi]
		for i, v := range src {
			dst[i] += v
		}
	}
}

func (b *Backend) reduceInto(dst, part []float32) {
	j := &b.jobs.reduceV
	j.dst, j.part, j.parts = dst, part, b.threads
	b.pool.run(j, len(dst), elemGrain)
	j.dst, j.part = nil, nil
}

// BiasBackward sets dbias += Σ_r dx[r,:].
func (b *Backend) BiasBackward(dx, dbias compute.Buffer, rows, cols int) {
	if !b.rowsCols("BiasBackward", rows, cols) {
		return
	}
	xs := b.f32("BiasBackward", "dx", dx, rows*cols)
	bs := b.f32("BiasBackward", "dbias", dbias, cols)
	if b.err != nil {
		return
	}
	j := &b.jobs.biasB
	j.dx, j.part, j.cols = xs, b.partialVecs(cols), cols
	b.pool.run(j, rows, rowGrain)
	b.reduceInto(bs, j.part)
	j.dx, j.part = nil, nil
}

type reluJob struct{ x, y []float32 }

func (j *reluJob) run(_, lo, hi int) {
	x, y := j.x[lo:hi], j.y[lo:hi]
	for i, v := range x {
		v = max(v, 0)
		y[i] = v * v
	}
}

// ReluSq sets y = max(x, 0)².
func (b *Backend) ReluSq(x, y compute.Buffer) {
	xs := b.f32("ReluSq", "x", x, -1)
	ys := b.f32("ReluSq", "y", y, len(xs))
	if b.err != nil {
		return
	}
	j := &b.jobs.relu
	j.x, j.y = xs, ys
	b.pool.run(j, len(xs), elemGrain)
	j.x, j.y = nil, nil
}

type reluBackJob struct{ x, dy, dx []float32 }

func (j *reluBackJob) run(_, lo, hi int) {
	x, dy, dx := j.x[lo:hi], j.dy[lo:hi], j.dx[lo:hi]
	for i, v := range x {
		dx[i] = dy[i] * 2 * max(v, 0)
	}
}

// ReluSqBackward sets dx = dy·2·max(x, 0).
func (b *Backend) ReluSqBackward(x, dy, dx compute.Buffer) {
	xs := b.f32("ReluSqBackward", "x", x, -1)
	dys := b.f32("ReluSqBackward", "dy", dy, len(xs))
	dxs := b.f32("ReluSqBackward", "dx", dx, len(xs))
	if b.err != nil {
		return
	}
	j := &b.jobs.reluB
	j.x, j.dy, j.dx = xs, dys, dxs
	b.pool.run(j, len(xs), elemGrain)
	j.x, j.dy, j.dx = nil, nil, nil
}
