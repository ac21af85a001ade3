package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestExp32(t *testing.T) {
	worst := 0.0
	for i := range 200001 {
		x := -87.0 + float64(i)*(88.5+87.0)/200000
		got, want := float64(exp32(float32(x))), math.Exp(float64(float32(x)))
		worst = max(worst, math.Abs(got-want)/want)
	}
	if worst > 3e-7 {
		t.Errorf("exp32 worst relative error %.3g, want <= 3e-7", worst)
	}
	inf := float32(math.Inf(1))
	for _, c := range []struct{ x, want float32 }{{0, 1}, {-inf, 0}, {-100, 0}, {100, inf}, {inf, inf}} {
		if got := exp32(c.x); got != c.want {
			t.Errorf("exp32(%g) = %g, want %g", c.x, got, c.want)
		}
	}
	if nan := exp32(float32(math.NaN())); nan == nan {
		t.Errorf("exp32(NaN) = %g", nan)
	}
}

func TestTanh32(t *testing.T) {
	for i := range 40001 {
		x := -20 + float64(i)*0.001
		if d := math.Abs(float64(tanh32(float32(x))) - math.Tanh(float64(float32(x)))); d > 4e-7 {
			t.Fatalf("tanh32(%g) off by %.3g", x, d)
		}
	}
}

func TestLogAcc(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var a logAcc
	a.reset()
	want := 0.0
	for range 10000 {
		p := math.Exp(-90 * rng.Float64()) // 1 down to 1e-39
		p = max(p, 1.17549435e-38)
		a.add(p)
		want += math.Log(p)
	}
	if got := a.sum(); math.Abs(got-want) > 1e-9*math.Abs(want) {
		t.Errorf("logAcc sum %.15g, want %.15g", got, want)
	}
}

var sink float32

func BenchmarkExp32(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) / 256
	}
	b.Run("exp32", func(b *testing.B) {
		var s float32
		for range b.N {
			for _, v := range x {
				s += exp32(v)
			}
		}
		sink = s
	})
	b.Run("math.Exp", func(b *testing.B) {
		var s float32
		for range b.N {
			for _, v := range x {
				s += float32(math.Exp(float64(v)))
			}
		}
		sink = s
	})
	b.Run("tanh32", func(b *testing.B) {
		var s float32
		for range b.N {
			for _, v := range x {
				s += tanh32(v / 8)
			}
		}
		sink = s
	})
	b.Run("math.Tanh", func(b *testing.B) {
		var s float32
		for range b.N {
			for _, v := range x {
				s += float32(math.Tanh(float64(v / 8)))
			}
		}
		sink = s
	})
}
