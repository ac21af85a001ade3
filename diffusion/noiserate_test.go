package diffusion

import (
	"math"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

// Params carries 1−α(λ) = σ(−λ) rounded on its own, accurate to float32's
// precision near λ = Max where 1 − float32(α) keeps about three digits.
func TestParamsNoiseRate(t *testing.T) {
	c := testConfig(0, 8)
	row := make([]float32, compute.LossParamStride)
	for _, l := range []float64{9, 8.99, 8.5, 0, -8.5, -9, 12, -12} {
		c.Params(row, l, 1, 1, 1, 1)
		lc := float64(float32(math.Max(-9, math.Min(9, l))))
		want := 1 / (1 + math.Exp(lc))
		got := float64(row[compute.LPNoiseRate])
		if rel := math.Abs(got-want) / want; rel > 1e-7 {
			t.Errorf("λ %g: 1−α %.9g, want σ(−λ) %.9g (relative error %.2g)", l, got, want, rel)
		}
	}
}
