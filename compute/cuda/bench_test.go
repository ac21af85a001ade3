package cuda

import (
	"testing"

	"github.com/difftrain/difftrain/compute"
)

// Benchmarks at the shapes of L12-d768-H12, sequence 1024, batch 8
// (8192 tokens), vocabulary 50304. They skip without a GPU.

func benchBuf(g *Backend, n int) compute.Buffer { return g.Alloc(compute.F32, n) }

func BenchmarkGemm(b *testing.B) {
	for _, p := range []Precision{FP32, TF32, BF16} {
		b.Run(p.String(), func(b *testing.B) {
			g := newGPU(b, p)
			m, n, k := 8192, 3072, 768
			x, w, y := benchBuf(g, m*k), benchBuf(g, k*n), benchBuf(g, m*n)
			gm := compute.Gemm{M: m, N: n, K: k, Alpha: 1, A: x, B: w, C: y}
			g.Gemm(gm)
			if err := g.Sync(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				g.Gemm(gm)
			}
			if err := g.Sync(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
		})
	}
}

func BenchmarkAttention(b *testing.B) {
	for _, p := range []Precision{FP32, TF32, BF16} {
		b.Run(p.String(), func(b *testing.B) {
			g := newGPU(b, p)
			a := compute.Attn{B: 8, N: 1024, H: 12, Dh: 64, SoftCap: 30}
			n, hd := a.B*a.N*a.H*a.Dh, a.H*a.Dh
			a.Q, a.K, a.V, a.Out = benchBuf(g, n), benchBuf(g, n), benchBuf(g, n), benchBuf(g, n)
			a.SinkK, a.SinkV, a.DSinkK, a.DSinkV = benchBuf(g, hd), benchBuf(g, hd), benchBuf(g, hd), benchBuf(g, hd)
			a.DOut, a.DQ, a.DK, a.DV = benchBuf(g, n), benchBuf(g, n), benchBuf(g, n), benchBuf(g, n)
			a.Saved = benchBuf(g, compute.AttnSavedLen(a.B, a.N, a.H))
			g.Attention(a)
			g.AttentionBackward(a)
			if err := g.Sync(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				g.Attention(a)
				g.AttentionBackward(a)
			}
			if err := g.Sync(); err != nil {
				b.Fatal(err)
			}
			// 2 GEMMs forward, 4 backward, each 2·B·H·N²·Dh.
			fl := 6 * 2 * float64(a.B*a.H*a.N*a.N*a.Dh)
			b.ReportMetric(fl*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
		})
	}
}

func BenchmarkLoss(b *testing.B) {
	g := newGPU(b, FP32)
	T, V := 8192, 50304
	l := compute.Loss{T: T, V: V, MaskID: 3, BetaIS: 1, Logits: benchBuf(g, T*V),
		Labels: g.Alloc(compute.I32, T), Noisy: g.Alloc(compute.I32, T),
		Params: benchBuf(g, T*compute.LossParamStride), Out: benchBuf(g, T*compute.LossOutStride), Grad: true}
	g.GIDDLoss(l)
	if err := g.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		g.GIDDLoss(l)
	}
	if err := g.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(T*V*4)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s(logits)")
}

func BenchmarkEmbeddingBackward(b *testing.B) {
	g := newGPU(b, FP32)
	T, V, d := 8192, 50304, 768
	ids := make([]int32, T)
	for i := range ids {
		ids[i] = int32(i * 7919 % V)
	}
	idb := g.Alloc(compute.I32, T)
	g.UploadI32(idb, ids)
	dtab, dout := benchBuf(g, V*d), benchBuf(g, T*d)
	b.ResetTimer()
	for range b.N {
		g.EmbeddingBackward(dtab, idb, dout, T, d)
	}
	if err := g.Sync(); err != nil {
		b.Fatal(err)
	}
}
