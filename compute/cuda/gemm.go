package cuda

/*
#include "api.h"
*/
import "C"

import "github.com/difftrain/difftrain/compute"

// rgemm is a row-major GEMM on device addresses, as compute.Gemm describes
// it: C = alpha·op(A)·op(B) + beta·C, batch times with element strides.
type rgemm struct {
	ta, tb      bool
	m, n, k     int
	alpha, beta float32
	a           uint64
	lda, sa     int
	b           uint64
	ldb, sb     int
	c           uint64
	ldc, sc     int
	batch       int
}

// cuBLAS enums.
const (
	cublasOpN  = 0
	cublasOpT  = 1
	cudaR16BF  = 14
	bf16Stride = 2 // bytes
)

// span is the number of elements a rows x cols matrix with row stride ld,
// repeated batch times every stride elements, reaches from its start.
func span(rows, cols, ld, stride, batch int) int {
	if rows == 0 || cols == 0 {
		return 0
	}
	return (batch-1)*stride + (rows-1)*ld + cols
}

// gemm runs g through cuBLAS. Row-major C = op(A)·op(B) is column-major
// Cᵀ = op(B)ᵀ·op(A)ᵀ, and a row-major matrix read column-major is its
// transpose, so cuBLAS gets B as its first operand and A as its second, with
// the same transposition flags, and m and n swapped.
func (b *Backend) gemm(op string, g rgemm) {
	if b.err != nil || g.m == 0 || g.n == 0 {
		return
	}
	batch := max(g.batch, 1)
	ta, tb := C.int(cublasOpN), C.int(cublasOpN)
	if g.ta {
		ta = cublasOpT
	}
	if g.tb {
		tb = cublasOpT
	}
	if b.info.Precision != BF16 {
		b.checkBlas(op, C.dt_sgemm(b.ctx, b.blas, tb, ta, C.int(g.n), C.int(g.m), C.int(g.k), C.float(g.alpha),
			C.CUdeviceptr(g.b), C.int(g.ldb), C.longlong(g.sb), C.CUdeviceptr(g.a), C.int(g.lda), C.longlong(g.sa),
			C.float(g.beta), C.CUdeviceptr(g.c), C.int(g.ldc), C.longlong(g.sc), C.int(batch)))
		return
	}
	// bf16: round both operands into scratch (same layout), multiply with
	// fp32 accumulation into the fp32 C.
	ar, ac := g.m, g.k
	if g.ta {
		ar, ac = g.k, g.m
	}
	br, bc := g.k, g.n
	if g.tb {
		br, bc = g.n, g.k
	}
	na, nb := span(ar, ac, g.lda, g.sa, batch), span(br, bc, g.ldb, g.sb, batch)
	a16 := b.toBF16(op, "gemmA", g.a, na)
	b16 := b.toBF16(op, "gemmB", g.b, nb)
	if b.err != nil {
		return
	}
	b.checkBlas(op, C.dt_gemmEx(b.ctx, b.blas, tb, ta, C.int(g.n), C.int(g.m), C.int(g.k), C.float(g.alpha),
		C.CUdeviceptr(b16), cudaR16BF, C.int(g.ldb), C.longlong(g.sb),
		C.CUdeviceptr(a16), cudaR16BF, C.int(g.lda), C.longlong(g.sa),
		C.float(g.beta), C.CUdeviceptr(g.c), C.int(g.ldc), C.longlong(g.sc), C.int(batch)))
}

// toBF16 converts n floats at src into the named bf16 scratch area.
func (b *Backend) toBF16(op, name string, src uint64, n int) uint64 {
	dst := b.scratchBuf(op, name, max(n, 1)*bf16Stride)
	if dst == 0 || n == 0 {
		return dst
	}
	b.launch1D(op, kF32ToBF16, n, src, dst, lArg(n))
	return dst
}

// Gemm runs C = Alpha*op(A)*op(B) + Beta*C on cuBLAS.
func (b *Backend) Gemm(g compute.Gemm) {
	const op = "Gemm"
	if b.err != nil {
		return
	}
	pa, pb, pc := b.f32(op, "A", g.A, -1), b.f32(op, "B", g.B, -1), b.f32(op, "C", g.C, -1)
	if pa == nil || pb == nil || pc == nil {
		return
	}
	d, err := g.Dims(pa.n, pb.n, pc.n)
	if err != nil {
		b.fail(op, "%v", err)
		return
	}
	batch, lda, ldb, ldc := d.Batch, d.LDA, d.LDB, d.LDC
	b.gemm(op, rgemm{ta: g.TransA, tb: g.TransB, m: g.M, n: g.N, k: g.K, alpha: g.Alpha, beta: g.Beta,
		a: pa.ptr(), lda: lda, sa: g.StrideA, b: pb.ptr(), ldb: ldb, sb: g.StrideB,
		c: pc.ptr(), ldc: ldc, sc: g.StrideC, batch: batch})
}
