package cpu

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

// Benchmarks at the shapes of an L8-d512 step: 1024 tokens (4 x 256), 8 heads
// of 64, MLP 2048, an 8192 vocabulary. Run with OPENBLAS_CORETYPE unset.

func benchBackend(b *testing.B, blas string, threads int) *Backend {
	if blas == "openblas" {
		if _, err := loadOpenBLAS(); err != nil {
			b.Skipf("OpenBLAS not available: %v", err)
		}
	}
	be, err := New(Options{Threads: threads, BLAS: blas})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}

func BenchmarkGemm(b *testing.B) {
	shapes := []struct {
		name    string
		ta, tb  bool
		m, n, k int
	}{
		{"qkv_1024x512x512", false, false, 1024, 512, 512},
		{"up_1024x2048x512", false, false, 1024, 2048, 512},
		{"down_1024x512x2048", false, false, 1024, 512, 2048},
		{"head_1024x8192x512", false, false, 1024, 8192, 512},
		{"dX_NT_1024x512x2048", false, true, 1024, 512, 2048},
		{"dW_TN_512x2048x1024", true, false, 512, 2048, 1024},
	}
	for _, blas := range []string{"openblas", "gonum"} {
		for _, th := range []int{1, 2} {
			for _, s := range shapes {
				b.Run(fmt.Sprintf("%s/t%d/%s", blas, th, s.name), func(b *testing.B) {
					if blas == "gonum" {
						if s.name == "head_1024x8192x512" {
							b.Skip("too slow to be useful")
						}
						// gonum threads itself over GOMAXPROCS goroutines.
						defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(th))
					}
					be := benchBackend(b, blas, th)
					g := compute.Gemm{TransA: s.ta, TransB: s.tb, M: s.m, N: s.n, K: s.k, Alpha: 1,
						A: be.Alloc(compute.F32, s.m*s.k), B: be.Alloc(compute.F32, s.k*s.n), C: be.Alloc(compute.F32, s.m*s.n)}
					be.Gemm(g)
					b.ResetTimer()
					for range b.N {
						be.Gemm(g)
					}
					b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					if err := be.Err(); err != nil {
						b.Fatal(err)
					}
				})
			}
		}
	}
}

// benchKernel times one op of a fixture at the L8-d512 shapes.
func benchKernel(b *testing.B, op func(fx *fixture)) {
	for _, th := range []int{1, 2} {
		b.Run(fmt.Sprintf("t%d", th), func(b *testing.B) {
			be := benchBackend(b, "openblas", th)
			fx := newFixture(b, be, 4, 256, 512, 8, 8192)
			op(fx)
			b.ResetTimer()
			for range b.N {
				op(fx)
			}
			if err := be.Err(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func BenchmarkAttention(b *testing.B) {
	benchKernel(b, func(fx *fixture) { fx.b.Attention(fx.attn) })
}

func BenchmarkAttentionBackward(b *testing.B) {
	benchKernel(b, func(fx *fixture) { fx.b.AttentionBackward(fx.attn) })
}

func BenchmarkGIDDLoss(b *testing.B) {
	benchKernel(b, func(fx *fixture) { fx.b.GIDDLoss(fx.loss(false)) })
}

func BenchmarkGIDDLossGrad(b *testing.B) {
	// The gradient pass overwrites the logits; the loss of gradients is as
	// costly as the loss of logits, so the input is not restored.
	benchKernel(b, func(fx *fixture) { fx.b.GIDDLoss(fx.loss(true)) })
}

func BenchmarkRMSNorm(b *testing.B) {
	benchKernel(b, func(fx *fixture) { fx.b.RMSNorm(fx.x, fx.w, fx.y, fx.rstd, fx.T, fx.d, 1e-6) })
}

func BenchmarkRMSNormBackward(b *testing.B) {
	benchKernel(b, func(fx *fixture) { fx.b.RMSNormBackward(fx.x, fx.w, fx.rstd, fx.dy, fx.dx, fx.dw, fx.T, fx.d) })
}

func BenchmarkUpdate(b *testing.B) {
	benchKernel(b, func(fx *fixture) {
		fx.b.Update(fx.wUp, fx.gUp, fx.m, fx.v, compute.OptStep{Kind: compute.LaProp, LR: 1e-3, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, Step: 5})
	})
}

func BenchmarkStep(b *testing.B) {
	benchKernel(b, func(fx *fixture) { fx.step() })
}

// BenchmarkGemmThreading compares the two ways to run a GEMM on 2 threads:
// Go workers splitting it over single-threaded OpenBLAS ("go-split", the
// default) and OpenBLAS's own threads ("openblas-threads",
// Options.OpenBLASThreads), interleaved.
func BenchmarkGemmThreading(b *testing.B) {
	be := benchBackend(b, "openblas", 2)
	for _, s := range []struct {
		name    string
		ta, tb  bool
		m, n, k int
	}{{"up_1024x2048x512", false, false, 1024, 2048, 512}, {"dW_TN_512x2048x1024", true, false, 512, 2048, 1024},
		{"qkv_1024x512x512", false, false, 1024, 512, 512}} {
		g := compute.Gemm{TransA: s.ta, TransB: s.tb, M: s.m, N: s.n, K: s.k, Alpha: 1,
			A: be.Alloc(compute.F32, s.m*s.k), B: be.Alloc(compute.F32, s.k*s.n), C: be.Alloc(compute.F32, s.m*s.n)}
		for _, self := range []bool{false, true, false, true} {
			name := "go-split"
			if self {
				name = "openblas-threads"
			}
			b.Run(s.name+"/"+name, func(b *testing.B) {
				be.setGemmSplit(!self)
				defer be.setGemmSplit(true)
				be.Gemm(g)
				b.ResetTimer()
				for range b.N {
					be.Gemm(g)
				}
				b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
