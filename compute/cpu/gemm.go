package cpu

import "github.com/difftrain/difftrain/compute"

// Gemm runs C = Alpha*op(A)*op(B) + Beta*C, repeated Batch times with the
// given element strides. Every operand extent is checked before any work.
func (b *Backend) Gemm(g compute.Gemm) {
	const op = "Gemm"
	if b.err != nil {
		return
	}
	a := b.f32(op, "A", g.A, -1)
	bb := b.f32(op, "B", g.B, -1)
	c := b.f32(op, "C", g.C, -1)
	if b.err != nil {
		return
	}
	d, err := g.Dims(len(a), len(bb), len(c))
	if err != nil {
		b.fail(op, "%v", err)
		return
	}
	batch, lda, ldb, ldc := d.Batch, d.LDA, d.LDB, d.LDC
	if g.M == 0 || g.N == 0 {
		return
	}
	if g.K == 0 {
		for i := range batch {
			scaleRows(c[i*g.StrideC:], g.M, g.N, ldc, g.Beta)
		}
		return
	}
	j := &b.jobs.gemm
	*j = gemmJob{blas: b.blas, g: g, a: a, b: bb, c: c, lda: lda, ldb: ldb, ldc: ldc}
	work := g.M * g.N * g.K
	switch {
	case !b.goGemm:
		b.blas.useThreads(b.threads)
		for i := range batch {
			j.one(i, 0, g.M, 0, g.N)
		}
	case b.threads == 1 || batch*work < gemmSplitMin:
		b.blas.useThreads(1)
		for i := range batch {
			j.one(i, 0, g.M, 0, g.N)
		}
	case batch >= b.threads:
		b.blas.useThreads(1)
		j.mode = splitBatch
		b.pool.run(j, batch, 1)
	default:
		b.blas.useThreads(1)
		j.mode = splitRows
		units := (g.M + gemmUnit - 1) / gemmUnit
		if g.N > g.M {
			j.mode = splitCols
			units = (g.N + gemmUnit - 1) / gemmUnit
		}
		for i := range batch {
			j.batch = i
			b.pool.run(j, units, 1)
		}
	}
	*j = gemmJob{}
}

// Unless Options.OpenBLASThreads, the Go workers split the product, each
// calling the single-threaded BLAS on its own block of C.
const (
	gemmSplitMin = 1 << 20 // multiply-adds below which one thread does it all
	gemmUnit     = 16      // rows or columns per unit of work
)

const (
	splitBatch = iota
	splitRows
	splitCols
)

type gemmJob struct {
	blas          blasImpl
	g             compute.Gemm
	a, b, c       []float32
	lda, ldb, ldc int
	mode, batch   int
}

func (j *gemmJob) run(_, lo, hi int) {
	g := j.g
	switch j.mode {
	case splitBatch:
		for i := lo; i < hi; i++ {
			j.one(i, 0, g.M, 0, g.N)
		}
	case splitRows:
		j.one(j.batch, lo*gemmUnit, min(hi*gemmUnit, g.M), 0, g.N)
	case splitCols:
		j.one(j.batch, 0, g.M, lo*gemmUnit, min(hi*gemmUnit, g.N))
	}
}

// one computes rows [m0, m1) and columns [n0, n1) of C for batch entry i.
func (j *gemmJob) one(i, m0, m1, n0, n1 int) {
	g := j.g
	ao, bo := m0*j.lda, n0
	if g.TransA {
		ao = m0
	}
	if g.TransB {
		bo = n0 * j.ldb
	}
	j.blas.sgemm(g.TransA, g.TransB, m1-m0, n1-n0, g.K, g.Alpha, j.a[i*g.StrideA+ao:], j.lda,
		j.b[i*g.StrideB+bo:], j.ldb, g.Beta, j.c[i*g.StrideC+m0*j.ldc+n0:], j.ldc)
}

// scaleRows sets C = beta*C (beta 0 clears, ignoring NaNs in C).
func scaleRows(c []float32, m, n, ldc int, beta float32) {
	for r := range m {
		row := c[r*ldc : r*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}
