package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

// TestKernels checks the dispatched row kernels (AVX2 where available)
// against the Go versions, on odd lengths and with −Inf and NaN entries.
func TestKernels(t *testing.T) {
	t.Logf("row kernels: %s", simdKernels)
	rng := rand.New(rand.NewPCG(5, 6))
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	// same allows tol relative error, or tol·30 absolute (the soft-cap's
	// 1 − 2/(e+1) loses a few ulps of tanh near 0, times c = 30).
	same := func(name string, got, want []float32, tol float64) {
		t.Helper()
		for i := range want {
			g, w := float64(got[i]), float64(want[i])
			if math.IsNaN(w) != math.IsNaN(g) || math.Abs(g-w) > tol*max(math.Abs(w), 30) && g != w {
				t.Fatalf("%s[%d] = %g, want %g", name, i, g, w)
			}
		}
	}
	for n := 1; n <= 40; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 20)
		}
		x[rng.IntN(n)] = -inf
		if n > 5 {
			x[3] = 1e30
		}
		x1, x2 := append([]float32(nil), x...), append([]float32(nil), x...)
		d1, d2 := make([]float32, n), make([]float32, n)
		capRows(x1, d1, 30)
		capRowsGo(x2, d2, 30)
		same("cap", x1, x2, 1e-6)
		same("cap derivative", d1, d2, 1e-5)

		y1, y2 := make([]float32, n), make([]float32, n)
		mx := float32(math.Inf(-1))
		for _, v := range x {
			mx = max(mx, v)
		}
		s1, s2 := expShiftTo(x, y1, mx), expShiftToGo(x, y2, mx)
		same("expShift", y1, y2, 1e-6)
		if math.Abs(s1-s2) > 1e-6*s2 {
			t.Fatalf("expShift sum %g, want %g", s1, s2)
		}

		rows := 3
		p := make([]float32, rows*n)
		for i := range p {
			p[i] = float32(rng.NormFloat64() * 5)
		}
		for c := range n {
			p[n+c] = -inf // row 1 fully masked
		}
		p[2*n] = -inf
		p1, p2 := append([]float32(nil), p...), append([]float32(nil), p...)
		softmaxRows(p1, rows, n)
		softmaxRowsGo(p2, rows, n)
		same("softmax", p1, p2, 1e-6)
		p[0] = nan
		p1, p2 = append([]float32(nil), p...), append([]float32(nil), p...)
		softmaxRows(p1, rows, n)
		softmaxRowsGo(p2, rows, n)
		same("softmax with NaN", p1, p2, 1e-6)
		if !math.IsNaN(float64(p1[0])) {
			t.Fatalf("softmax of a row with NaN gave %g, want NaN", p1[0])
		}
	}
}

func BenchmarkKernels(b *testing.B) {
	rows, cols := 256, 257
	p, src := make([]float32, rows*cols), make([]float32, rows*cols)
	d := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(i%97) / 10
	}
	fill := func() { copy(p, src) }
	for _, k := range []struct {
		name string
		f    func()
	}{
		{"cap/" + simdKernels, func() { capRows(p, d, 30) }},
		{"cap/go", func() { capRowsGo(p, d, 30) }},
		{"softmax/" + simdKernels, func() { softmaxRows(p, rows, cols) }},
		{"softmax/go", func() { softmaxRowsGo(p, rows, cols) }},
	} {
		b.Run(k.name, func(b *testing.B) {
			for range b.N {
				fill()
				k.f()
			}
		})
	}
}

// TestUpdateKernels checks the dispatched optimizer loop against the Go one.
func TestUpdateKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, kind := range []compute.OptKind{compute.LaProp, compute.AdamW} {
		for _, n := range []int{1, 7, 8, 9, 100} {
			vec := func(pos bool) []float32 {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
					if pos {
						x[i] = float32(math.Abs(float64(x[i])))
					}
				}
				return x
			}
			p, g, m, v := vec(false), vec(false), vec(false), vec(true)
			h := compute.OptStep{Kind: kind, LR: 0.01, WD: 0.1, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, Step: 4}
			j1 := optJob{p: append([]float32(nil), p...), g: g, m: append([]float32(nil), m...), v: append([]float32(nil), v...), h: h, c1: 0.7, c2: 0.8}
			j2 := optJob{p: append([]float32(nil), p...), g: g, m: append([]float32(nil), m...), v: append([]float32(nil), v...), h: h, c1: 0.7, c2: 0.8}
			j1.run(0, 0, n)
			j2.runGo(0, n)
			for i := range n {
				for _, c := range [][2]float32{{j1.p[i], j2.p[i]}, {j1.m[i], j2.m[i]}, {j1.v[i], j2.v[i]}} {
					if d := math.Abs(float64(c[0] - c[1])); d > 1e-6*math.Max(1, math.Abs(float64(c[1]))) {
						t.Fatalf("kind %d n %d [%d]: %g vs Go %g", kind, n, i, c[0], c[1])
					}
				}
			}
		}
	}
}
