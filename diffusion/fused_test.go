package diffusion

import (
	"math"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

// TestRefFused checks the host reference of compute.Loss against RefLoss on
// prepared batches and its gradient against central finite differences.
func TestRefFused(t *testing.T) {
	const B, N, V = 4, 6, 7
	for _, shift := range []float64{-1000, -2, 0, 2, 1000} {
		c := testConfig(shift, V)
		c.PPrompt, c.BetaIS = 0.5, 0.7
		var b Batch
		if err := c.Prepare(RNG{Seed: 6}, indices(0, B), cleanTokens(B, N, V), N, 2, &b); err != nil {
			t.Fatal(err)
		}
		T := B * N
		logits := make([]float32, T*V)
		for i := range logits {
			logits[i] = float32(2 * math.Sin(float64(i)*1.3))
		}
		out := make([]float32, T*compute.LossOutStride)
		grad := make([]float32, T*V)
		if err := RefFused(logits, b.Labels, b.Noisy, b.Params, V, 3, c.BetaIS, out, grad); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < T; i++ {
			tl := RefLoss32(logits[i*V:(i+1)*V], int(b.Labels[i]), int(b.Noisy[i]), float64(b.LogSNR[i]), c.Noise, c.Schedule, c.BetaIS)
			o := out[i*compute.LossOutStride:]
			for _, x := range []struct {
				name      string
				got, want float64
			}{{"loss", float64(o[compute.LOLoss]), tl.Loss}, {"kl", float64(o[compute.LOKL]), tl.KLLoss},
				{"is", float64(o[compute.LOIS]), tl.ISLoss}, {"elbo", float64(o[compute.LOElbo]), tl.Elbo}} {
				if math.Abs(x.got-x.want) > 1e-4*math.Max(1, math.Abs(x.want)) {
					t.Errorf("shift %g token %d: %s %g, RefLoss %g", shift, i, x.name, x.got, x.want)
				}
			}
			// Finite differences of gradScale·loss_tok in float64.
			scale := float64(b.Params[i*compute.LossParamStride+compute.LPGradScale])
			row := make([]float32, V)
			copy(row, logits[i*V:(i+1)*V])
			lossAt := func(k int, d float64) float64 {
				l := make([]float64, V)
				for v := range l {
					l[v] = float64(row[v])
				}
				l[k] += d
				xhat := make([]float64, V)
				MaskedSoftmax64(l, 3, xhat)
				p := b.Params[i*compute.LossParamStride:]
				return scale * fusedLoss64(xhat, int(b.Labels[i]), int(b.Noisy[i]), float64(p[0]), float64(p[1]), float64(p[2]), c.BetaIS, V, 3)
			}
			for k := 0; k < V; k++ {
				h := 1e-6
				fd := (lossAt(k, h) - lossAt(k, -h)) / (2 * h)
				if k == 3 {
					fd = 0
				}
				if g := float64(grad[i*V+k]); math.Abs(g-fd) > 1e-4*math.Max(1e-3, math.Abs(fd))+1e-6 {
					t.Errorf("shift %g token %d logit %d: grad %g, finite difference %g", shift, i, k, g, fd)
				}
			}
		}
	}
	if err := RefFused(make([]float32, 3), []int32{0}, []int32{0}, make([]float32, 5), 4, 3, 1, make([]float32, 4), nil); err == nil {
		t.Error("size mismatch accepted")
	}
}

// fusedLoss64 is loss_tok from x̂ and the Params values, in float64.
func fusedLoss64(xhat []float64, x, z int, alpha, a, wTr, betaIS float64, V, m int) float64 {
	q, p := make([]float64, V), make([]float64, V)
	for v := range q {
		pi := a / float64(V-1)
		if v == m {
			pi = 1 - a
		}
		q[v] = (1 - alpha) * pi
		p[v] = alpha*xhat[v] + (1-alpha)*pi
	}
	q[x] += alpha
	var kl float64
	for v := range q {
		kl += q[v] * (SafeLog(q[v]) - SafeLog(p[v]))
	}
	is := q[z]/(p[z]+1e-12) - (SafeLog(q[z]) - SafeLog(p[z])) - 1
	return wTr*kl + betaIS*wTr*is
}
