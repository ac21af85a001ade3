// Package computetest is the conformance suite for compute.Backend
// implementations. Run checks every operation against plain float64 reference
// code (forward) and central finite differences of that reference (backward);
// Parity compares two backends op by op on the same random inputs.
package computetest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

// Tolerances of Run, relative (see closeTo).
const (
	fwdTol  = 1e-4
	gradTol = 1e-3
)

// Run tests every operation of the backends newBackend makes: forward
// results against float64 references (1e-4 relative), backward results
// against central finite differences of those references (1e-3), the worked
// GIDD loss examples of gidd-spec §2.7 and the LaProp trace of §6.1, memory
// operations, and bad calls, which must record a sticky error whose message
// names the operation. It makes a fresh backend per subtest and closes it
// when the subtest ends.
func Run(t *testing.T, newBackend func(t *testing.T) compute.Backend) {
	t.Run("Memory", func(t *testing.T) { testMemory(t, fresh(t, newBackend)) })
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, fresh(t, newBackend), c.name)
			for _, ch := range c.run(e) {
				if ch.tol == 0 {
					ch.tol = fwdTol
				}
				if err := closeTo(ch.got, ch.want, ch.tol); err != nil {
					t.Errorf("%s: %v", ch.name, err)
				}
			}
			if err := e.be.Sync(); err != nil {
				t.Fatalf("backend error: %v", err)
			}
		})
	}
	t.Run("LossExamples", func(t *testing.T) { testLossExamples(t, fresh(t, newBackend)) })
	t.Run("LossNearClip", func(t *testing.T) { testLossNearClip(t, fresh(t, newBackend)) })
	t.Run("LaPropTrace", func(t *testing.T) { testLaPropTrace(t, fresh(t, newBackend)) })
	t.Run("Errors", func(t *testing.T) { testErrors(t, newBackend) })
}

// Parity runs every case on ref and got with the same random inputs and
// checks that their outputs agree to tol (relative, see closeTo). It does not
// consult the float64 reference; Run does that.
func Parity(t *testing.T, ref, got compute.Backend, tol float64) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			a := c.run(newEnv(t, ref, c.name))
			b := c.run(newEnv(t, got, c.name))
			if err := ref.Sync(); err != nil {
				t.Fatalf("%s: reference backend error: %v", ref.Name(), err)
			}
			if err := got.Sync(); err != nil {
				t.Fatalf("%s: backend error: %v", got.Name(), err)
			}
			for i := range a {
				if err := closeTo(b[i].got, a[i].got, tol); err != nil {
					t.Errorf("%s: %s vs %s: %v", a[i].name, got.Name(), ref.Name(), err)
				}
			}
		})
	}
}

func fresh(t *testing.T, newBackend func(t *testing.T) compute.Backend) compute.Backend {
	be := newBackend(t)
	t.Cleanup(func() { be.Close() })
	return be
}

// check is one output of a case: what the backend computed and what the
// reference says.
type check struct {
	name      string
	got, want []float64
	tol       float64 // 0: fwdTol
}

type opCase struct {
	name string
	run  func(e *env) []check
}

// env wraps a backend with helpers; its random source is seeded by the case
// name, so two backends see the same inputs.
type env struct {
	t   testing.TB
	be  compute.Backend
	rng *rand.Rand
}

func newEnv(t testing.TB, be compute.Backend, name string) *env {
	var seed uint64 = 14695981039346656037
	for _, c := range []byte(name) {
		seed = (seed ^ uint64(c)) * 1099511628211
	}
	return &env{t: t, be: be, rng: rand.New(rand.NewPCG(seed, 42))}
}

// rnd returns n normal values with standard deviation sd.
func (e *env) rnd(n int, sd float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(e.rng.NormFloat64() * sd)
	}
	return v
}

func (e *env) ids(n, lim int) []int32 {
	v := make([]int32, n)
	for i := range v {
		v[i] = int32(e.rng.IntN(lim))
	}
	return v
}

func (e *env) up(v []float32) compute.Buffer {
	b := e.be.Alloc(compute.F32, len(v))
	e.be.UploadF32(b, v)
	return b
}

func (e *env) upI(v []int32) compute.Buffer {
	b := e.be.Alloc(compute.I32, len(v))
	e.be.UploadI32(b, v)
	return b
}

func (e *env) nan(n int) compute.Buffer {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return e.up(v)
}

func (e *env) down(b compute.Buffer) []float64 {
	v := make([]float32, b.Len())
	e.be.DownloadF32(v, b)
	return f64(v)
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// closeTo checks |got−want| <= tol·(|want| + 0.05·max|want|) elementwise
// (max|want| floored at 1e-6), so near-zero entries are judged against the
// vector's scale, and reports the worst entry.
func closeTo(got, want []float64, tol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d values, want %d", len(got), len(want))
	}
	scale := 1e-6
	for _, w := range want {
		scale = max(scale, math.Abs(w))
	}
	worst, at := 0.0, -1
	for i := range got {
		d := math.Abs(got[i] - want[i])
		lim := tol * (math.Abs(want[i]) + 0.05*scale)
		if d <= lim {
			continue
		}
		if r := d / lim; !(r <= 1) && (at < 0 || r > worst || math.IsNaN(r)) {
			worst, at = r, i
			if math.IsNaN(r) {
				break
			}
		}
	}
	if at >= 0 {
		return fmt.Errorf("element %d of %d: got %.9g, want %.9g (%.3g times the tolerance %g; max|want| %.3g)",
			at, len(got), got[at], want[at], worst, tol, scale)
	}
	return nil
}

// fdGrad is the gradient of f at x by central differences in float64.
func fdGrad(f func([]float64) float64, x []float64) []float64 {
	g := make([]float64, len(x))
	for i := range x {
		x0 := x[i]
		h := 1e-6 * max(1, math.Abs(x0))
		x[i] = x0 + h
		fp := f(x)
		x[i] = x0 - h
		fm := f(x)
		x[i] = x0
		g[i] = (fp - fm) / (2 * h)
	}
	return g
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func add(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}
