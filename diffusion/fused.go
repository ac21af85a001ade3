package diffusion

import (
	"fmt"

	"github.com/difftrain/difftrain/compute"
)

// RefFused is a float64 host reference of the backend's fused loss
// (compute.Loss), for checking a backend: the same inputs (logits [T,V],
// labels and noisy tokens [T], Params [T, compute.LossParamStride]) and the
// same outputs. It writes out [T, compute.LossOutStride] and, when grad is
// not nil, grad [T,V] = GradScale·d(loss_tok)/dℓ with a zero mask column,
// treating safe_log as log above its floor and as a constant below it.
func RefFused(logits []float32, labels, noisy []int32, params []float32, V, maskID int, betaIS float64, out, grad []float32) error {
	T := len(labels)
	switch {
	case V < 2 || maskID < 0 || maskID >= V:
		return fmt.Errorf("fused loss: vocabulary %d with mask id %d", V, maskID)
	case len(logits) != T*V || len(noisy) != T || len(params) != T*compute.LossParamStride || len(out) != T*compute.LossOutStride:
		return fmt.Errorf("fused loss: sizes logits %d, labels %d, noisy %d, params %d, out %d for T=%d V=%d",
			len(logits), T, len(noisy), len(params), len(out), T, V)
	case grad != nil && len(grad) != T*V:
		return fmt.Errorf("fused loss: %d gradients for T=%d V=%d", len(grad), T, V)
	}
	l64 := make([]float64, V)
	xhat, q, p, g := make([]float64, V), make([]float64, V), make([]float64, V), make([]float64, V)
	for t := 0; t < T; t++ {
		x, z := int(labels[t]), int(noisy[t])
		if x < 0 || x >= V || z < 0 || z >= V {
			return fmt.Errorf("fused loss: token %d: label %d or noisy %d outside [0, %d)", t, x, z, V)
		}
		row := params[t*compute.LossParamStride:]
		alpha, a := float64(row[compute.LPAlpha]), float64(row[compute.LPUniform])
		oma := float64(row[compute.LPNoiseRate]) // 1 − α, exact near λ = Max
		wTr, wEl := float64(row[compute.LPWTrain]), float64(row[compute.LPWElbo])
		for v, f := range logits[t*V : (t+1)*V] {
			l64[v] = float64(f)
		}
		MaskedSoftmax64(l64, maskID, xhat)
		for v := range q {
			pi := a / float64(V-1)
			if v == maskID {
				pi = 1 - a
			}
			q[v] = oma * pi
			p[v] = alpha*xhat[v] + oma*pi
		}
		q[x] += alpha
		var kl float64
		for v := range q {
			kl += q[v] * (SafeLog(q[v]) - SafeLog(p[v]))
		}
		is := q[z]/(p[z]+1e-12) - (SafeLog(q[z]) - SafeLog(p[z])) - 1
		o := out[t*compute.LossOutStride:]
		o[compute.LOLoss] = float32(wTr*kl + betaIS*wTr*is)
		o[compute.LOKL] = float32(wTr * kl)
		o[compute.LOIS] = float32(wTr * is)
		o[compute.LOElbo] = float32(wEl * (kl + is))
		if grad == nil {
			continue
		}
		// G(v) = d loss_tok / d p(v); then dℓ_k = α·x̂_k·(G(k) − Σ_v G(v)·x̂_v).
		for v := range g {
			g[v] = 0
			if p[v] > Tiny {
				g[v] = -q[v] / p[v]
			}
		}
		dIS := -q[z] / ((p[z] + 1e-12) * (p[z] + 1e-12))
		if p[z] > Tiny {
			dIS += 1 / p[z]
		}
		g[z] += betaIS * dIS
		var dot float64
		for v := range g {
			g[v] *= wTr
			dot += g[v] * xhat[v]
		}
		scale := float64(row[compute.LPGradScale])
		gr := grad[t*V : (t+1)*V]
		for k := range gr {
			gr[k] = float32(scale * alpha * xhat[k] * (g[k] - dot))
		}
		gr[maskID] = 0
	}
	return nil
}
