package diffusion

import (
	"math"
	"testing"
)

func near(got, want, rel float64) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= rel*math.Max(math.Abs(want), 1e-300)
}

func TestTimeLogSNRTable(t *testing.T) {
	s := DefaultSchedule()
	tests := []struct{ t, l float64 }{{0.5, 0}, {0.25, math.Log(3)}, {0.25, 1.0986123}, {0.9, -2.1972246}, {0.01, 4.5951199}}
	for _, tt := range tests {
		got := s.LogSNR(tt.t)
		if math.Abs(got-tt.l) > 1e-6*math.Max(1, math.Abs(tt.l)) {
			t.Errorf("LogSNR(%g) = %.9g, want %.9g", tt.t, got, tt.l)
		}
		if back := s.Time(got); math.Abs(back-tt.t) > 1e-6 {
			t.Errorf("Time(LogSNR(%g)) = %.9g", tt.t, back)
		}
	}
	if p := Density(0); p != 0.25 {
		t.Errorf("p(0) = %g, want 0.25", p)
	}
	if got := s.TMin(); !near(got, 1.2339458e-4, 1e-6) {
		t.Errorf("t_min = %.9g, want 1.2339458e-4", got)
	}
	if got := s.TMax(); !near(got, 0.99987661, 1e-7) {
		t.Errorf("t_max = %.9g, want 0.99987661", got)
	}
	if got := 1 / (s.TMax() - s.TMin()); !near(got, 1.000247, 1e-6) {
		t.Errorf("truncation factor %.9g, want 1.000247", got)
	}
}

func TestScheduleInvariants(t *testing.T) {
	s := DefaultSchedule()
	prev := math.Inf(1)
	for i := 1; i < 1000; i++ {
		tt := float64(i) / 1000
		l := s.LogSNR(tt)
		if l > prev {
			t.Fatalf("λ(t) increases at t = %g", tt)
		}
		prev = l
		// Round trip where λ is not clipped.
		if tt > s.TMin() && tt < s.TMax() {
			if back := s.Time(l); math.Abs(back-tt) > 1e-6 {
				t.Errorf("round trip t = %g gives %g", tt, back)
			}
		}
	}
	// p(λ) peaks at 0 and is symmetric.
	for _, l := range []float64{0.1, 0.5, 1, 3, 9} {
		if Density(l) >= Density(0) || !near(Density(l), Density(-l), 1e-12) {
			t.Errorf("p(%g) = %g, p(-%g) = %g, p(0) = %g", l, Density(l), l, Density(-l), Density(0))
		}
	}
	// Training λ stays inside the clip range, including at the ends of u.
	for _, u := range []float64{Float64(0), 0.25, 0.5, 0.75, Float64(math.MaxUint64)} {
		if l := s.Sample(u); l < -9 || l > 9 {
			t.Errorf("Sample(%g) = %g outside [-9, 9]", u, l)
		}
	}
	if a := s.Alpha(100); a != Sigmoid(9) {
		t.Errorf("α is not clipped: α(100) = %g", a)
	}
	if SafeLog(0) != math.Log(Tiny) || math.Abs(SafeLog(0)+87.336544) > 1e-6 {
		t.Errorf("SafeLog(0) = %g, want -87.336544", SafeLog(0))
	}
}

func TestScheduleValidate(t *testing.T) {
	for _, s := range []Schedule{{9, -9}, {0, 0}, {math.NaN(), 9}, {-9, math.Inf(1)}} {
		if s.Validate() == nil {
			t.Errorf("Validate(%v) accepted", s)
		}
	}
	if err := DefaultSchedule().Validate(); err != nil {
		t.Error(err)
	}
}
