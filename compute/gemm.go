package compute

import "fmt"

// GemmDims are a Gemm's resolved leading dimensions and batch count.
type GemmDims struct {
	Batch         int // at least 1
	LDA, LDB, LDC int // row strides, defaults filled in
}

// Dims checks a Gemm against the lengths of its three buffers and returns its
// leading dimensions (0 means tightly packed) and batch count: sizes must be
// non-negative, each leading dimension at least its matrix's columns, strides
// non-negative, and each buffer must hold every element the batched product
// touches. Every backend runs this check, so they accept and refuse the same
// calls with the same messages.
func (g Gemm) Dims(lenA, lenB, lenC int) (GemmDims, error) {
	if g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 0 {
		return GemmDims{}, fmt.Errorf("negative size M=%d N=%d K=%d Batch=%d", g.M, g.N, g.K, g.Batch)
	}
	ar, ac := g.M, g.K
	if g.TransA {
		ar, ac = g.K, g.M
	}
	br, bc := g.K, g.N
	if g.TransB {
		br, bc = g.N, g.K
	}
	d := GemmDims{Batch: max(g.Batch, 1), LDA: packed(g.LDA, ac), LDB: packed(g.LDB, bc), LDC: packed(g.LDC, g.N)}
	for _, x := range []struct {
		name                      string
		n, rows, cols, ld, stride int
	}{
		{"A", lenA, ar, ac, d.LDA, g.StrideA},
		{"B", lenB, br, bc, d.LDB, g.StrideB},
		{"C", lenC, g.M, g.N, d.LDC, g.StrideC},
	} {
		if x.ld < max(x.cols, 1) {
			return d, fmt.Errorf("LD%s = %d is less than its %d columns", x.name, x.ld, x.cols)
		}
		if x.stride < 0 {
			return d, fmt.Errorf("Stride%s = %d is negative", x.name, x.stride)
		}
		if x.rows == 0 || x.cols == 0 {
			continue
		}
		if need := (d.Batch-1)*x.stride + (x.rows-1)*x.ld + x.cols; need > x.n {
			return d, fmt.Errorf("%s needs %d elements (%dx%d, ld %d, batch %d, stride %d), buffer has %d",
				x.name, need, x.rows, x.cols, x.ld, d.Batch, x.stride, x.n)
		}
	}
	return d, nil
}

func packed(ld, cols int) int {
	if ld == 0 {
		return max(cols, 1)
	}
	return ld
}
