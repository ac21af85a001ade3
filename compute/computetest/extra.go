package computetest

import (
	"math"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

func testMemory(t *testing.T, be compute.Backend) {
	e := newEnv(t, be, "Memory")
	x := be.Alloc(compute.F32, 10)
	if x.Len() != 10 || x.DType() != compute.F32 {
		t.Fatalf("Alloc(F32, 10): Len %d DType %v", x.Len(), x.DType())
	}
	if got := e.down(x); closeTo(got, make([]float64, 10), 0) != nil {
		t.Errorf("Alloc not zero-filled: %v", got)
	}
	src := []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	be.UploadF32(x, src)
	v := be.View(x, 3, 4)
	if v.Len() != 4 {
		t.Fatalf("View(3, 4).Len() = %d", v.Len())
	}
	if got := e.down(v); closeTo(got, []float64{3, 4, 5, 6}, 0) != nil {
		t.Errorf("View(3, 4) reads %v", got)
	}
	be.UploadF32(be.View(v, 1, 2), []float32{40, 50}) // a view of a view
	want := []float64{0, 1, 2, 3, 40, 50, 6, 7, 8, 9}
	if got := e.down(x); closeTo(got, want, 0) != nil {
		t.Errorf("write through view: got %v, want %v", got, want)
	}
	y := be.Alloc(compute.F32, 4)
	be.Copy(y, v)
	if got := e.down(y); closeTo(got, []float64{3, 40, 50, 6}, 0) != nil {
		t.Errorf("Copy from view: %v", got)
	}
	be.Zero(v)
	want = []float64{0, 1, 2, 0, 0, 0, 0, 7, 8, 9}
	if got := e.down(x); closeTo(got, want, 0) != nil {
		t.Errorf("Zero(view): got %v, want %v", got, want)
	}
	// I32: copy ids into another buffer, check them through Embedding.
	ids := be.Alloc(compute.I32, 3)
	if ids.DType() != compute.I32 {
		t.Fatalf("Alloc(I32).DType() = %v", ids.DType())
	}
	be.UploadI32(ids, []int32{2, 0, 1})
	ids2 := be.Alloc(compute.I32, 2)
	be.Copy(ids2, be.View(ids, 1, 2))
	table := e.up([]float32{10, 11, 20, 21, 30, 31})
	out := be.Alloc(compute.F32, 4)
	be.Embedding(table, ids2, out, 2, 2)
	if got := e.down(out); closeTo(got, []float64{10, 11, 20, 21}, 0) != nil {
		t.Errorf("I32 Copy/View through Embedding: %v", got)
	}
	be.Zero(ids2)
	be.Embedding(table, ids2, out, 2, 2)
	if got := e.down(out); closeTo(got, []float64{10, 11, 10, 11}, 0) != nil {
		t.Errorf("I32 Zero: %v", got)
	}
	for _, b := range []compute.Buffer{x, y, ids, ids2, table, out} {
		be.Free(b)
	}
	if err := be.Sync(); err != nil {
		t.Fatalf("memory ops: %v", err)
	}
}

// lossExample is one row of gidd-spec §2.7 (V = 4, m = 3, x = 0, logits [2, 1, 0, 5]).
type lossExample struct {
	name               string
	alpha, a           float64
	z                  int
	w, wel             float64
	kl, is, loss, elbo float64
}

var lossExamples = []lossExample{
	{"A/z=3", 0.5, 0.5, 3, 1.5, 6, 0.0859860008, -4.0e-12, 0.128979001, 0.515916005},
	{"A/z=0", 0.5, 0.5, 0, 1.0 / 14, 0.285714286, 0.0859860008, 0.0642147443, 0.0107286247, 0.0429144986},
	{"A/z=1", 0.5, 0.5, 1, 0.5, 2, 0.0859860008, 0.308683863, 0.197334932, 0.789339727},
	{"B/z=3", 0.817574476, 0.817574476, 3, 1.81757448, 12.1865083, 0.203425565, 0, 0.369741114, 2.47904733},
	{"B/z=0", 0.817574476, 0.817574476, 0, 0.0468656536, 0.314225735, 0.203425565, 0.081900703, 0.013372002, 0.0896568563},
	{"B/z=1", 0.817574476, 0.817574476, 1, 0.817574476, 5.48168907, 0.203425565, 0.813362865, 0.831300268, 5.57371802},
	{"C/z=3", 0.5, 0, 3, 1, 4, 0.203802982, 0, 0.203802982, 0.815211929},
	{"C/z=0", 0.5, 0, 0, 0, 0, 0.203802982, 0.09560876, 0, 0},
	{"D/z=0", 0.5, 1, 0, 0.25, 1, 0.061134714, 0.0461281946, 0.0268157272, 0.107262909},
	{"D/z=1", 0.5, 1, 1, 1, 4, 0.061134714, 0.12717741, 0.188312124, 0.753248498},
	{"E/z=0", 0.119202922, 1, 0, 0.711234594, 6.77407664, 0.00361418811, 0.00534743583, 0.00637381697, 0.0607067274},
	{"E/z=2", 0.119202922, 1, 2, 1, 9.52439138, 0.00361418811, 0.000636787959, 0.00425097607, 0.0404879599},
}

// testLossExamples checks every column of the spec's worked example. Each row
// runs twice: with the table's weights (loss, elbo, w·KL, w·IS) and with unit
// weights (the raw KL and IS).
func testLossExamples(t *testing.T, be compute.Backend) {
	e := newEnv(t, be, "LossExamples")
	T, V := 2*len(lossExamples), 4
	logits := make([]float32, 0, T*V)
	labels, noisy := make([]int32, T), make([]int32, T)
	params := make([]float32, T*compute.LossParamStride)
	for i, ex := range lossExamples {
		for k, w := range [][2]float64{{ex.w, ex.wel}, {1, 1}} {
			t := 2*i + k
			logits = append(logits, 2, 1, 0, 5)
			noisy[t] = int32(ex.z)
			p := params[t*compute.LossParamStride:]
			p[compute.LPAlpha], p[compute.LPUniform], p[compute.LPNoiseRate] = float32(ex.alpha), float32(ex.a), float32(1-ex.alpha)
			p[compute.LPWTrain], p[compute.LPWElbo], p[compute.LPGradScale] = float32(w[0]), float32(w[1]), 1
		}
	}
	l := compute.Loss{T: T, V: V, MaskID: 3, BetaIS: 1, Logits: e.up(logits), Labels: e.upI(labels),
		Noisy: e.upI(noisy), Params: e.up(params), Out: e.nan(T * compute.LossOutStride)}
	be.GIDDLoss(l)
	out := e.down(l.Out)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	near := func(name string, got, want float64) {
		if math.Abs(want) < 1e-9 {
			if math.Abs(got) > 1e-7 {
				t.Errorf("%s: got %.9g, want %.3g (≈0)", name, got, want)
			}
		} else if math.Abs(got-want) > 1e-4*math.Abs(want) {
			t.Errorf("%s: got %.9g, want %.9g (rel. err %.2g)", name, got, want, math.Abs(got-want)/math.Abs(want))
		}
	}
	for i, ex := range lossExamples {
		o, u := out[2*i*compute.LossOutStride:], out[(2*i+1)*compute.LossOutStride:]
		near(ex.name+" loss", o[compute.LOLoss], ex.loss)
		near(ex.name+" elbo", o[compute.LOElbo], ex.elbo)
		near(ex.name+" kl_loss", o[compute.LOKL], ex.w*ex.kl)
		near(ex.name+" is_loss", o[compute.LOIS], ex.w*ex.is)
		near(ex.name+" KL", u[compute.LOKL], ex.kl)
		near(ex.name+" IS", u[compute.LOIS], ex.is)
	}
}

// testLaPropTrace checks the worked example of gidd-spec §6.1 (ε = 0, wd = 0)
// and the parameter update θ ← θ − lr·μ.
func testLaPropTrace(t *testing.T, be compute.Backend) {
	e := newEnv(t, be, "LaPropTrace")
	p, g, m, v := e.up([]float32{1}), be.Alloc(compute.F32, 1), be.Alloc(compute.F32, 1), be.Alloc(compute.F32, 1)
	trace := []struct{ g, nu, mu float64 }{{0.5, 0.25, 1}, {-1, 0.626884422, -0.191057086}, {2, 1.76257533, 0.435331122}}
	theta := 1.0
	for i, s := range trace {
		be.UploadF32(g, []float32{float32(s.g)})
		be.Update(p, g, m, v, compute.OptStep{Kind: compute.LaProp, LR: 0.1, Beta1: 0.9, Beta2: 0.99, Step: i + 1})
		theta -= 0.1 * s.mu
		for _, c := range []struct {
			name      string
			got, want float64
		}{{"ν", e.down(v)[0], s.nu}, {"μ", e.down(m)[0], s.mu}, {"θ", e.down(p)[0], theta}} {
			if math.Abs(c.got-c.want) > 1e-5*math.Abs(c.want) {
				t.Errorf("step %d: %s = %.9g, want %.9g", i+1, c.name, c.got, c.want)
			}
		}
	}
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
}

// testErrors checks that bad calls record a sticky error naming the op,
// without panicking, and that the first error is the one kept.
func testErrors(t *testing.T, newBackend func(t *testing.T) compute.Backend) {
	f := func(be compute.Backend, n int) compute.Buffer { return be.Alloc(compute.F32, n) }
	i := func(be compute.Backend, v ...int32) compute.Buffer {
		b := be.Alloc(compute.I32, len(v))
		be.UploadI32(b, v)
		return b
	}
	tests := []struct {
		op  string
		bad func(be compute.Backend)
	}{
		{"Gemm", func(be compute.Backend) {
			be.Gemm(compute.Gemm{M: 4, N: 4, K: 4, Alpha: 1, A: f(be, 8), B: f(be, 16), C: f(be, 16)})
		}},
		{"Gemm", func(be compute.Backend) {
			be.Gemm(compute.Gemm{M: 2, N: 2, K: 2, A: f(be, 4), B: f(be, 4), C: f(be, 4), Batch: 2, StrideC: 4})
		}},
		{"Gemm", func(be compute.Backend) {
			be.Gemm(compute.Gemm{M: 2, N: 2, K: 3, LDA: 2, A: f(be, 9), B: f(be, 6), C: f(be, 4)})
		}},
		{"Embedding", func(be compute.Backend) { be.Embedding(f(be, 8), i(be, 0, 4), f(be, 4), 2, 2) }},
		{"EmbeddingBackward", func(be compute.Backend) { be.EmbeddingBackward(f(be, 8), i(be, -1, 0), f(be, 4), 2, 2) }},
		{"GIDDLoss", func(be compute.Backend) {
			be.GIDDLoss(compute.Loss{T: 1, V: 4, MaskID: 3, Logits: f(be, 4), Labels: i(be, 4), Noisy: i(be, 0),
				Params: f(be, compute.LossParamStride), Out: f(be, compute.LossOutStride)})
		}},
		{"GIDDLoss", func(be compute.Backend) {
			be.GIDDLoss(compute.Loss{T: 1, V: 4, MaskID: 4, Logits: f(be, 4), Labels: i(be, 0), Noisy: i(be, 0),
				Params: f(be, compute.LossParamStride), Out: f(be, compute.LossOutStride)})
		}},
		{"AddBias", func(be compute.Backend) { be.AddBias(f(be, 5), f(be, 2), 2, 2) }},
		{"RMSNorm", func(be compute.Backend) { be.RMSNorm(f(be, 4), f(be, 2), f(be, 4), f(be, 1), 2, 2, 1e-6) }},
		{"Rope", func(be compute.Backend) { be.Rope(f(be, 6), compute.RopeShape{B: 1, N: 2, H: 1, Dh: 3, Theta: 1e4}) }},
		{"Attention", func(be compute.Backend) {
			n := 2 * 4
			be.Attention(compute.Attn{B: 1, N: 2, H: 1, Dh: 4, Q: f(be, n), K: f(be, n), V: f(be, n), Out: f(be, n),
				Saved: f(be, compute.AttnSavedLen(1, 2, 1)-1)})
		}},
		{"Attention", func(be compute.Backend) {
			n := 2 * 4
			be.Attention(compute.Attn{B: 1, N: 2, H: 1, Dh: 4, Q: f(be, n), K: f(be, n), V: f(be, n), Out: f(be, n),
				SinkK: f(be, 4), Saved: f(be, compute.AttnSavedLen(1, 2, 1))})
		}},
		{"Update", func(be compute.Backend) {
			be.Update(f(be, 3), f(be, 3), f(be, 2), f(be, 3), compute.OptStep{Kind: compute.LaProp, Step: 1})
		}},
		{"Update", func(be compute.Backend) {
			be.Update(f(be, 3), f(be, 3), f(be, 3), f(be, 3), compute.OptStep{Kind: compute.AdamW, Step: 0})
		}},
		{"View", func(be compute.Backend) { be.View(f(be, 3), 2, 2) }},
		{"Copy", func(be compute.Backend) { be.Copy(f(be, 3), f(be, 4)) }},
		{"Copy", func(be compute.Backend) { be.Copy(f(be, 3), be.Alloc(compute.I32, 3)) }},
		{"UploadF32", func(be compute.Backend) { be.UploadF32(f(be, 3), []float32{1, 2}) }},
		{"Axpy", func(be compute.Backend) { be.Axpy(1, f(be, 3), be.Alloc(compute.I32, 3)) }},
	}
	for _, tc := range tests {
		t.Run(tc.op, func(t *testing.T) {
			be := fresh(t, newBackend)
			if err := be.Sync(); err != nil {
				t.Fatalf("fresh backend: %v", err)
			}
			tc.bad(be)
			err := be.Sync()
			if err == nil {
				t.Fatalf("bad %s call recorded no error", tc.op)
			}
			if !strings.Contains(err.Error(), tc.op) {
				t.Errorf("error %q does not name %s", err, tc.op)
			}
			be.Scale(f(be, 2), 2)
			be.AddBias(f(be, 1), f(be, 2), 1, 1) // a second error must not replace the first
			if err2 := be.Err(); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("error changed from %q to %v", err, err2)
			}
		})
	}
}

// testLossNearClip checks the loss of tokens at λ near ±9, where α is within
// 1.3e-4 of 1 or 0, against a float64 reference computed from λ itself:
// α = σ(λ) and 1−α = σ(−λ) exactly, every other input as the backend sees
// it. Params carry 1−α rounded on its own (compute.LPNoiseRate), as
// diffusion.Config.Params writes it; 1 − float32(α) used to cost up to
// 6e-5 of the loss.
func testLossNearClip(t *testing.T, be compute.Backend) {
	e := newEnv(t, be, "LossNearClip")
	const V, m = 16, 3
	lambdas := []float64{9, 8.9999, 8.93, 8.5, -9, -8.9999, -8.6}
	T := 2 * len(lambdas)
	logits := e.rnd(T*V, 3)
	labels, noisy := make([]int32, T), make([]int32, T)
	params := make([]float32, T*compute.LossParamStride)
	sig := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	for k := range T {
		l := lambdas[k%len(lambdas)]
		x := 5 + k%7
		z := []int{x, m, 9}[k%3]
		labels[k], noisy[k] = int32(x), int32(z)
		p := params[k*compute.LossParamStride:]
		p[compute.LPAlpha], p[compute.LPNoiseRate] = float32(sig(l)), float32(sig(-l))
		p[compute.LPUniform] = []float32{0, 0.5}[k/len(lambdas)]
		p[compute.LPWTrain], p[compute.LPWElbo], p[compute.LPGradScale] = 1.25, 0.75, 1
	}
	l := compute.Loss{T: T, V: V, MaskID: m, BetaIS: 1, Logits: e.up(logits), Labels: e.upI(labels),
		Noisy: e.upI(noisy), Params: e.up(params), Out: e.nan(T * compute.LossOutStride)}
	be.GIDDLoss(l)
	out := e.down(l.Out)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	// The CPU backend (host memory) is the reference and keeps the loss in
	// float64 past the exponentials: it must match to 2e-6. A device
	// backend works in float32 throughout, where KL at λ = −9 is a
	// difference of nearly equal logs; it is held to the forward tolerance
	// at λ > 0, where the 1−α entry matters.
	bound, negative := 2e-6, true
	if _, host := be.(compute.Host); !host {
		bound, negative = fwdTol, false
	}
	worst := 0.0
	for k := range T {
		lam := lambdas[k%len(lambdas)]
		if lam < 0 && !negative {
			continue
		}
		p := f64(params[k*compute.LossParamStride : (k+1)*compute.LossParamStride])
		p[compute.LPAlpha], p[compute.LPNoiseRate] = sig(lam), sig(-lam)
		r := refLoss(f64(logits[k*V:(k+1)*V]), int(labels[k]), int(noisy[k]), m, p, 1)
		o := out[k*compute.LossOutStride:]
		for _, c := range []struct {
			name      string
			got, want float64
		}{{"loss", o[compute.LOLoss], r.loss}, {"elbo", o[compute.LOElbo], r.elbo}} {
			rel := math.Abs(c.got-c.want) / math.Max(math.Abs(c.want), 1e-30)
			worst = max(worst, rel)
			if rel > bound {
				t.Errorf("λ %g token %d: %s %.9g, float64 reference %.9g (relative error %.2g, want ≤ %g)", lam, k, c.name, c.got, c.want, rel, bound)
			}
		}
	}
	t.Logf("worst relative error near λ = ±9: %.2g", worst)
}
