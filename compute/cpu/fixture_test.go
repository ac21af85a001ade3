package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

// fixture holds buffers for one transformer-block-like sequence of every op,
// used by the allocation test and the benchmarks.
type fixture struct {
	b                        *Backend
	T, d, f, V               int
	attn                     compute.Attn
	rope                     compute.RopeShape
	x, w, y, rstd, dy, dx    compute.Buffer
	dw, up, act, bias, dbias compute.Buffer
	wUp, gUp                 compute.Buffer
	ids, labels, noisy       compute.Buffer
	table, dtable            compute.Buffer
	logits, params, lossOut  compute.Buffer
	m, v                     compute.Buffer
}

func newFixture(tb testing.TB, b *Backend, batch, n, d, heads, V int) *fixture {
	T := batch * n
	fx := &fixture{b: b, T: T, d: d, f: 4 * d, V: V}
	rng := rand.New(rand.NewPCG(1, 2))
	f := func(size int, sd float64) compute.Buffer {
		x := b.Alloc(compute.F32, size)
		if sd != 0 {
			v := b.F32(x)
			for i := range v {
				v[i] = float32(rng.NormFloat64() * sd)
			}
		}
		return x
	}
	ids := func(lim int) compute.Buffer {
		x := b.Alloc(compute.I32, T)
		v := b.I32(x)
		for i := range v {
			v[i] = int32(rng.IntN(lim))
		}
		return x
	}
	fx.x, fx.w, fx.y, fx.rstd = f(T*d, 1), f(d, 0.1), f(T*d, 0), f(T, 0)
	fx.dy, fx.dx, fx.dw = f(T*d, 1), f(T*d, 0), f(d, 0)
	fx.up, fx.act, fx.bias, fx.dbias = f(T*fx.f, 1), f(T*fx.f, 0), f(fx.f, 0.1), f(fx.f, 0)
	fx.wUp, fx.gUp = f(d*fx.f, 0.02), f(d*fx.f, 0)
	fx.ids, fx.labels, fx.noisy = ids(V), ids(V), ids(V)
	fx.table, fx.dtable = f(V*d, 0.02), f(V*d, 0)
	fx.logits, fx.params, fx.lossOut = f(T*V, 1), f(T*compute.LossParamStride, 0), f(T*compute.LossOutStride, 0)
	for t := range T {
		p := b.F32(fx.params)[t*compute.LossParamStride:]
		p[compute.LPAlpha], p[compute.LPUniform], p[compute.LPWTrain], p[compute.LPWElbo], p[compute.LPGradScale] = 0.5, 0.5, 1, 4, 1
		p[compute.LPNoiseRate] = 0.5
	}
	fx.m, fx.v = f(d*fx.f, 0), f(d*fx.f, 0)
	noise := ids(2)
	fx.attn = compute.Attn{B: batch, N: n, H: heads, Dh: d / heads, SoftCap: 30, CausalPrompt: true,
		Q: f(T*d, 1), K: f(T*d, 1), V: f(T*d, 1), SinkK: f(d, 0.1), SinkV: f(d, 0.1), Noise: noise,
		Out: f(T*d, 0), Saved: f(compute.AttnSavedLen(batch, n, heads), 0),
		DOut: f(T*d, 1), DQ: f(T*d, 0), DK: f(T*d, 0), DV: f(T*d, 0), DSinkK: f(d, 0), DSinkV: f(d, 0)}
	fx.rope = compute.RopeShape{B: batch, N: n, H: heads, Dh: d / heads, Theta: 10000}
	if err := b.Err(); err != nil {
		tb.Fatal(err)
	}
	return fx
}

func (fx *fixture) loss(grad bool) compute.Loss {
	return compute.Loss{T: fx.T, V: fx.V, MaskID: 3, BetaIS: 1, Logits: fx.logits, Labels: fx.labels,
		Noisy: fx.noisy, Params: fx.params, Out: fx.lossOut, Grad: grad}
}

// step runs every op once.
func (fx *fixture) step() {
	b, T, d := fx.b, fx.T, fx.d
	b.Embedding(fx.table, fx.ids, fx.x, T, d)
	b.RMSNorm(fx.x, fx.w, fx.y, fx.rstd, T, d, 1e-6)
	b.Rope(fx.attn.Q, fx.rope)
	b.Attention(fx.attn)
	b.Gemm(compute.Gemm{M: T, N: fx.f, K: d, Alpha: 1, A: fx.y, B: fx.wUp, C: fx.up})
	b.AddBias(fx.up, fx.bias, T, fx.f)
	b.ReluSq(fx.up, fx.act)
	b.GIDDLoss(fx.loss(false))
	b.ReluSqBackward(fx.up, fx.act, fx.act)
	b.BiasBackward(fx.act, fx.dbias, T, fx.f)
	b.Gemm(compute.Gemm{TransA: true, M: d, N: fx.f, K: T, Alpha: 1, Beta: 1, A: fx.y, B: fx.act, C: fx.gUp})
	b.AttentionBackward(fx.attn)
	b.RopeBackward(fx.attn.DQ, fx.rope)
	b.RMSNormBackward(fx.x, fx.w, fx.rstd, fx.dy, fx.dx, fx.dw, T, d)
	b.EmbeddingBackward(fx.dtable, fx.ids, fx.dx, T, d)
	b.Axpy(0.5, fx.dx, fx.y)
	b.Scale(fx.y, 0.5)
	_ = b.SumSquares(fx.gUp)
	b.Update(fx.wUp, fx.gUp, fx.m, fx.v, compute.OptStep{Kind: compute.LaProp, LR: 1e-3, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, Step: 1})
	b.Copy(fx.dx, fx.x)
	b.Zero(fx.dx)
}

func TestNoAllocations(t *testing.T) {
	for _, blas := range []string{"openblas", "gonum"} {
		t.Run(blas, func(t *testing.T) {
			if blas == "openblas" {
				haveOpenBLAS(t)
			}
			b, err := New(Options{Threads: 2, BLAS: blas})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			fx := newFixture(t, b, 2, 16, 32, 2, 50)
			fx.step() // grows scratch
			if n := testing.AllocsPerRun(5, fx.step); n != 0 {
				t.Errorf("a step allocates %v times, want 0", n)
			}
			if err := b.Err(); err != nil || blas == "gonum" {
				// gonum's own parallel GEMM starts goroutines: no more checks.
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			// GEMMs large enough to be split by rows, columns and batch,
			// split over the Go workers and threaded by OpenBLAS.
			m := 128
			x, y, z := b.Alloc(compute.F32, m*m), b.Alloc(compute.F32, m*m), b.Alloc(compute.F32, 4*m*m)
			gemms := func() {
				b.Gemm(compute.Gemm{M: m, N: m, K: m, Alpha: 1, A: x, B: y, C: z})
				b.Gemm(compute.Gemm{M: 16, N: m * 4, K: m, Alpha: 1, A: x, B: z, C: y})
				b.Gemm(compute.Gemm{M: m / 2, N: m, K: m / 2, Alpha: 1, A: x, B: y, C: z, Batch: 4,
					StrideA: m * m / 4, StrideC: m * m})
			}
			for _, split := range []bool{false, true} {
				b.setGemmSplit(split)
				gemms()
				if n := testing.AllocsPerRun(5, gemms); n != 0 {
					t.Errorf("GEMMs (split %v) allocate %v times, want 0", split, n)
				}
			}
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
