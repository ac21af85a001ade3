package diffusion

import "math"

// TokenLoss is the float64 reference of the per-token GIDD loss (spec §2).
type TokenLoss struct {
	Alpha, A       float64 // α(clipped λ), a(λ)
	W, WElbo       float64 // unclipped weights
	WTr, WEl       float64 // clipped weights
	KL, IS         float64 // divergence terms
	KLLoss, ISLoss float64 // w_tr·KL, w_tr·IS (the logged kl_loss, is_loss)
	Loss, Elbo     float64 // loss_tok = w_tr·KL + β_IS·w_tr·IS, elbo_tok = w_el·(KL + IS)
	Q, P           []float64
	XHat           []float64 // softmax with the mask logit suppressed
}

// RefLoss computes the per-token loss in float64 for logits ℓ (len Vocab),
// clean token x, noisy token z and log-SNR λ. It is the reference the
// backend's fused loss (compute.Loss) is checked against. Q, P and XHat are
// returned for inspection.
func RefLoss(logits []float64, x, z int, l float64, n Noise, s Schedule, betaIS float64) TokenLoss {
	V := n.Vocab
	xhat := make([]float64, V)
	MaskedSoftmax64(logits, n.MaskID, xhat)
	return refLoss(xhat, x, z, l, n, s, betaIS, make([]float64, V), make([]float64, V))
}

// refLoss is RefLoss given x̂, with q and p as scratch (len Vocab).
func refLoss(xhat []float64, x, z int, l float64, n Noise, s Schedule, betaIS float64, q, p []float64) TokenLoss {
	V := n.Vocab
	t := TokenLoss{XHat: xhat, Q: q, P: p}
	t.Alpha = s.Alpha(l)
	t.A = n.A(l)
	n.PiVec(l, t.Q)
	for v := 0; v < V; v++ {
		pi := t.Q[v]
		t.Q[v] = (1 - t.Alpha) * pi
		t.P[v] = t.Alpha*t.XHat[v] + (1-t.Alpha)*pi
	}
	t.Q[x] += t.Alpha
	for v := 0; v < V; v++ {
		t.KL += t.Q[v] * (SafeLog(t.Q[v]) - SafeLog(t.P[v]))
	}
	t.IS = t.Q[z]/(t.P[z]+1e-12) - (SafeLog(t.Q[z]) - SafeLog(t.P[z])) - 1
	t.W, t.WElbo, t.WTr, t.WEl = n.Weights(l, z, x)
	t.KLLoss = t.WTr * t.KL
	t.ISLoss = t.WTr * t.IS
	t.Loss = t.KLLoss + betaIS*t.ISLoss
	t.Elbo = t.WEl * (t.KL + t.IS)
	return t
}

// RefLoss32 is RefLoss for float32 logits.
func RefLoss32(logits []float32, x, z int, l float64, n Noise, s Schedule, betaIS float64) TokenLoss {
	l64 := make([]float64, len(logits))
	for i, v := range logits {
		l64[i] = float64(v)
	}
	return RefLoss(l64, x, z, l, n, s, betaIS)
}

// MaskedSoftmax64 writes softmax(ℓ) with ℓ_mask ← −1e6 into dst (so
// dst[mask] = 0). len(dst) == len(logits).
func MaskedSoftmax64(logits []float64, mask int, dst []float64) {
	mx := math.Inf(-1)
	for v, x := range logits {
		if v != mask && x > mx {
			mx = x
		}
	}
	var sum float64
	for v, x := range logits {
		if v == mask {
			x = -1e6
		}
		e := math.Exp(x - mx)
		dst[v] = e
		sum += e
	}
	for v := range dst {
		dst[v] /= sum
	}
}

// maskedSoftmax32 is MaskedSoftmax64 of float32 logits divided by temp
// (temp ≤ 0 means 1).
func maskedSoftmax32(logits []float32, mask int, temp float64, dst []float64) {
	if temp <= 0 {
		temp = 1
	}
	mx := math.Inf(-1)
	for v, x := range logits {
		if v != mask && float64(x)/temp > mx {
			mx = float64(x) / temp
		}
	}
	var sum float64
	for v, x := range logits {
		e := 0.0
		if v != mask {
			e = math.Exp(float64(x)/temp - mx)
		}
		dst[v] = e
		sum += e
	}
	for v := range dst {
		dst[v] /= sum
	}
}
