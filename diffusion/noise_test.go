package diffusion

import (
	"math"
	"testing"
)

func TestParseShift(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"masked", -1000, true}, {"low-uniform", -2, true}, {"balanced", 0, true},
		{"High-Uniform", 2, true}, {" uniform ", 1000, true}, {"-1.5", -1.5, true}, {"3", 3, true},
		{"", 0, false}, {"mask", 0, false}, {"NaN", 0, false}, {"inf", 0, false}, {"1e400", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseShift(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseShift(%q) = %g, %v; want %g ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseShift(f *testing.F) {
	for _, s := range []string{"masked", "uniform", "0", "-2.5", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseShift(s)
		if err == nil && (math.IsNaN(b) || math.IsInf(b, 0)) {
			t.Fatalf("ParseShift(%q) accepted %g", s, b)
		}
	})
}

func TestNoiseValidate(t *testing.T) {
	bad := []Noise{
		{Scale: 1, MaskID: 3, Vocab: 1}, {Scale: 1, MaskID: 4, Vocab: 4}, {Scale: 1, MaskID: -1, Vocab: 4},
		{Shift: math.NaN(), Scale: 1, MaskID: 3, Vocab: 4}, {Scale: math.Inf(1), MaskID: 3, Vocab: 4},
	}
	for _, n := range bad {
		if n.Validate() == nil {
			t.Errorf("Validate(%+v) accepted", n)
		}
	}
	if _, err := NewNoise("balanced", 4, 3); err != nil {
		t.Error(err)
	}
}

func TestPiClosedFormsAndDerivative(t *testing.T) {
	const V, m = 7, 3
	for _, shift := range []float64{-1000, -2, 0, 2, 1000, 0.7} {
		for _, scale := range []float64{1, 0.5} {
			n := Noise{Shift: shift, Scale: scale, MaskID: m, Vocab: V}
			for _, l := range []float64{-9, -3, -0.5, 0, 1.5, 4, 9, 10} {
				a := Sigmoid(scale*l + shift)
				vec := make([]float64, V)
				n.PiVec(l, vec)
				var sum float64
				for z := 0; z < V; z++ {
					want, wantD := a/(V-1), scale*a*(1-a)/(V-1)
					if z == m {
						want, wantD = 1-a, -scale*a*(1-a)
					}
					if got := n.Pi(l, z); !near(got, want, 1e-12) || vec[z] != got {
						t.Errorf("π(λ=%g, z=%d) b=%g = %g, want %g", l, z, shift, got, want)
					}
					if got := n.PiPrime(l, z); !near(got, wantD, 1e-12) {
						t.Errorf("π'(λ=%g, z=%d) b=%g = %g, want %g", l, z, shift, got, wantD)
					}
					// Central finite difference, rtol 1e-4 (spec §11.11).
					h := 1e-5
					fd := (n.Pi(l+h, z) - n.Pi(l-h, z)) / (2 * h)
					if d := n.PiPrime(l, z); math.Abs(fd-d) > 1e-4*math.Abs(d)+1e-10 {
						t.Errorf("π'(λ=%g, z=%d) b=%g = %g, finite difference %g", l, z, shift, d, fd)
					}
					sum += vec[z]
				}
				if math.Abs(sum-1) > 1e-12 {
					t.Errorf("π sums to %g", sum)
				}
			}
		}
	}
}

func TestPureNoiseTypes(t *testing.T) {
	for _, l := range []float64{-9, -1, 0, 1, 9} {
		masked := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: 4}
		uniform := Noise{Shift: 1000, Scale: 1, MaskID: 3, Vocab: 4}
		if masked.A(l) != 0 || float32(masked.A(l)) != 0 || masked.PiPrime(l, 3) != 0 {
			t.Errorf("masked at λ=%g: a = %g, π'(m) = %g", l, masked.A(l), masked.PiPrime(l, 3))
		}
		if uniform.A(l) != 1 || uniform.PiPrime(l, 0) != 0 {
			t.Errorf("uniform at λ=%g: a = %g", l, uniform.A(l))
		}
	}
}

func TestWeightSpecialCases(t *testing.T) {
	const V, m = 11, 3
	masked := Noise{Shift: -1000, Scale: 1, MaskID: m, Vocab: V}
	uniform := Noise{Shift: 1000, Scale: 1, MaskID: m, Vocab: V}
	for _, l := range []float64{-9, -2, 0, 1.5, 9} {
		w, we, _, _ := masked.Weights(l, m, 0)
		if w != 1 || !near(we, 1/(Sigmoid(l)*Sigmoid(-l)), 1e-12) {
			t.Errorf("masked z=m λ=%g: w=%g w_elbo=%g", l, w, we)
		}
		if w, _, _, _ := masked.Weights(l, 0, 0); w != 0 {
			t.Errorf("masked z=x λ=%g: w=%g, want 0", l, w)
		}
		if w, _, _, _ := uniform.Weights(l, 1, 0); !near(w, 1, 1e-12) {
			t.Errorf("uniform z≠x λ=%g: w=%g, want 1", l, w)
		}
		if w, _, _, _ := uniform.Weights(l, 0, 0); !near(w, 1/(1+(V-1)*math.Exp(l)), 1e-12) {
			t.Errorf("uniform z=x λ=%g: w=%g, want %g", l, w, 1/(1+(V-1)*math.Exp(l)))
		}
	}
	// The clips: w_tr ≤ 1e3, w_el ≤ 1e6, both ≥ 0.
	bal := Noise{Scale: 1, MaskID: m, Vocab: V}
	for _, l := range []float64{-30, -9, 0, 9, 30} {
		for z := 0; z < V; z++ {
			w, we, wtr, wel := bal.Weights(l, z, 0)
			if wtr != clip(w, 0, 1e3) || wel != clip(we, 0, 1e6) || wtr < 0 || wtr > 1e3 || wel < 0 || wel > 1e6 {
				t.Errorf("λ=%g z=%d: w=%g wtr=%g we=%g wel=%g", l, z, w, wtr, we, wel)
			}
		}
	}
	if _, we, _, wel := masked.Weights(-30, m, 0); wel != 1e6 || we <= 1e6 {
		t.Errorf("w_elbo at λ=-30 = %g clipped to %g, want clip at 1e6", we, wel)
	}
}
