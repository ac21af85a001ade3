package diffusion

import (
	"math"
	"testing"
)

func TestGridExamples(t *testing.T) {
	s := DefaultSchedule()
	tests := []struct {
		kind GridKind
		want []float64
	}{
		{GridCosine, []float64{-9, -1.75830778, 0, 1.75830778, 9}},
		{GridLinear, []float64{-9, -1.09834564, 0, 1.09834564, 9}},
	}
	for _, tt := range tests {
		g, err := Grid(tt.kind, 4, s)
		if err != nil {
			t.Fatal(err)
		}
		for i := range g {
			if math.Abs(g[i]-tt.want[i]) > 1e-6*math.Max(1, math.Abs(tt.want[i])) {
				t.Errorf("%v grid[%d] = %.9g, want %.9g", tt.kind, i, g[i], tt.want[i])
			}
		}
	}
	if _, err := Grid(GridLinear, 0, s); err == nil {
		t.Error("0-step grid accepted")
	}
	for _, name := range []string{"cosine", "linear"} {
		if k, err := ParseGrid(name); err != nil || k.String() != name {
			t.Errorf("ParseGrid(%q) = %v, %v", name, k, err)
		}
	}
	if _, err := ParseGrid("cos"); err == nil {
		t.Error("ParseGrid accepted cos")
	}
}

var xhatExample = []float64{0.665240956, 0.244728471, 0.0900305732, 0}

func TestPosteriorTable(t *testing.T) {
	s := DefaultSchedule()
	tests := []struct {
		shift float64
		zt    int
		want  []float64
	}{
		{0, 3, []float64{0.545275006, 0.229463261, 0.113282614, 0.111979119}},
		{0, 1, []float64{0.152742085, 0.806962056, 0.0317326531, 0.00856320587}},
		{-1000, 3, []float64{0.422527096, 0.155439032, 0.0571828242, 0.364851048}},
		{1000, 1, []float64{0.270886486, 0.668899007, 0.0602145072, 0}},
	}
	xhat := make([]float64, 4)
	MaskedSoftmax64([]float64{2, 1, 0, 5}, 3, xhat)
	for _, tt := range tests {
		n := Noise{Shift: tt.shift, Scale: 1, MaskID: 3, Vocab: 4}
		got := make([]float64, 4)
		Posterior(xhat, tt.zt, 0, 1.5, n, s, got)
		var sum float64
		for v := range got {
			sum += got[v]
			if tt.want[v] == 0 {
				if math.Abs(got[v]) > 1e-15 {
					t.Errorf("b=%g z_t=%d: P(%d) = %g, want 0", tt.shift, tt.zt, v, got[v])
				}
			} else if !near(got[v], tt.want[v], 1e-6) {
				t.Errorf("b=%g z_t=%d: P(%d) = %.9g, want %.9g", tt.shift, tt.zt, v, got[v], tt.want[v])
			}
		}
		if math.Abs(sum-1) > 1e-12 {
			t.Errorf("b=%g z_t=%d: posterior sums to %g", tt.shift, tt.zt, sum)
		}
	}
	// Masked: P(stay masked) = (1−α_s)/(1−α_t).
	n := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: 4}
	got := make([]float64, 4)
	Posterior(xhatExample, 3, 0, 1.5, n, s, got)
	if want := (1 - s.Alpha(1.5)) / (1 - s.Alpha(0)); !near(got[3], want, 1e-9) || !near(want, 0.364851, 1e-6) {
		t.Errorf("P(stay masked) = %g, want %g", got[3], want)
	}
	// An impossible z_t (mask under pure uniform noise) falls back to q_s.
	u := Noise{Shift: 1000, Scale: 1, MaskID: 3, Vocab: 4}
	Posterior(xhatExample, 3, 0, 1.5, u, s, got)
	var sum float64
	for _, p := range got {
		sum += p
		if math.IsNaN(p) {
			t.Fatal("NaN posterior for an impossible z_t")
		}
	}
	if math.Abs(sum-1) > 1e-9 {
		t.Errorf("fallback posterior sums to %g", sum)
	}
}

func TestInverseCDF(t *testing.T) {
	p := []float64{0.2, 0, 0.5, 0.3}
	tests := []struct {
		u    float64
		want int
	}{{1e-9, 0}, {0.19, 0}, {0.2, 0}, {0.21, 2}, {0.7, 2}, {0.71, 3}, {0.999999, 3}}
	for _, tt := range tests {
		if got := InverseCDF(p, tt.u); got != tt.want {
			t.Errorf("InverseCDF(%g) = %d, want %d", tt.u, got, tt.want)
		}
	}
	// The last entry is forced to 1, so rounding cannot run off the end.
	if got := InverseCDF([]float64{0.3, 0.3, 0.3999999}, 0.99999999); got != 2 {
		t.Errorf("InverseCDF with a short sum = %d, want 2", got)
	}
}

func TestAdaptiveExample(t *testing.T) {
	const V = 4
	probs := make([]float64, 3*V)
	for j, row := range [][]float64{{2, 1, 0, 0}, {0, 3, 0, 0}, {1, 1, 1, 0}} {
		MaskedSoftmax64(row, 3, probs[j*V:(j+1)*V])
	}
	nm := []int32{1, 1, 1}
	scores := make([]float64, 3)
	tests := []struct {
		shift float64
		z     []int32
		want  []float64
		pick  int
		setTo int
	}{
		{-1000, []int32{3, 0, 3}, []float64{0.665240956, 0, 0.333333333}, 0, 0},
		{1000, []int32{0, 0, 2}, []float64{0, 0.288054833, 0}, 1, 1},
	}
	for _, tt := range tests {
		n := Noise{Shift: tt.shift, Scale: 1, MaskID: 3, Vocab: V}
		AdaptiveScores(probs, tt.z, nm, n, scores)
		for j := range scores {
			if tt.want[j] == 0 && math.Abs(scores[j]) > 1e-12 || tt.want[j] != 0 && !near(scores[j], tt.want[j], 1e-6) {
				t.Errorf("b=%g: score[%d] = %.9g, want %.9g", tt.shift, j, scores[j], tt.want[j])
			}
		}
		top := TopK(scores, 1)
		if len(top) != 1 || top[0] != tt.pick {
			t.Errorf("b=%g: picked %v, want [%d]", tt.shift, top, tt.pick)
		}
		if a := Argmax(probs[tt.pick*V : (tt.pick+1)*V]); a != tt.setTo {
			t.Errorf("b=%g: argmax %d, want %d", tt.shift, a, tt.setTo)
		}
	}
	// Ties go to the highest indices.
	if got := TopK([]float64{0, 0, 0, 0}, 2); got[0] != 2 || got[1] != 3 {
		t.Errorf("TopK of ties = %v, want [2 3]", got)
	}
	// Conditioning positions score 0.
	n := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: V}
	AdaptiveScores(probs, []int32{3, 3, 3}, []int32{0, 1, 1}, n, scores)
	if scores[0] != 0 {
		t.Errorf("prompt position scored %g", scores[0])
	}
}
