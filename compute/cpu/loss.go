package cpu

import (
	"math"

	"github.com/difftrain/difftrain/compute"
)

// floor is safe_log's floor, the smallest normal float32: log(floor) = −87.336544.
const floor = 1.17549435e-38

func safeLog(x float64) float64 { return math.Log(max(x, floor)) }

type lossJob struct {
	l                   compute.Loss
	logits, params, out []float32
	labels, noisy       []int32
	ex                  []float32 // per worker: e^(ℓ−max), V each
	g                   []float64 // per worker: d loss/d x̂, V each
}

func (j *lossJob) run(w, lo, hi int) {
	V := j.l.V
	ex, g := j.ex[w*V:(w+1)*V], j.g[w*V:(w+1)*V]
	for t := lo; t < hi; t++ {
		j.token(t, ex, g)
	}
}

// token computes the loss of token t and, with Grad, overwrites its logits
// row with GradScale·d loss/d logits. ex and g are scratch rows. Exponentials
// are float32 (exp32); everything else is float64.
//
// 1−α is the Params entry LPNoiseRate, not 1 − float32(α), which near
// λ = 9 keeps only three significant digits.
//
// Every v outside S = {x, m} has the same q(v) = c = (1−α)·a/(V−1), so
// Σ_{v∉S} q log q is one term, and Σ_{v∉S} c·log p(v) needs one log per
// token (logAcc). The few entries of S (and z) are handled one by one.
func (j *lossJob) token(t int, ex []float32, g []float64) {
	l := j.l
	V, m := l.V, l.MaskID
	lg := j.logits[t*V : (t+1)*V]
	pr := j.params[t*compute.LossParamStride : (t+1)*compute.LossParamStride]
	alpha, a := float64(pr[compute.LPAlpha]), float64(pr[compute.LPUniform])
	oma := float64(pr[compute.LPNoiseRate]) // 1 − α, exact near λ = Max
	wtr, wel := float64(pr[compute.LPWTrain]), float64(pr[compute.LPWElbo])
	x, z := int(j.labels[t]), int(j.noisy[t])
	beta := float64(l.BetaIS)

	// x̂ = softmax(ℓ) with ℓ_m = −1e6: ex holds e^(ℓ−max), x̂ = ex·inv.
	mx := float32(-1e6)
	for v, s := range lg {
		if v != m && (s > mx || s != s) {
			mx = s
		}
	}
	lm := lg[m] // suppressed for the exponentials, restored after
	lg[m] = -1e6
	sum := expShiftTo(lg, ex, mx)
	lg[m] = lm
	inv := 1 / sum
	piU := a / float64(V-1)
	c := oma * piU    // q(v) for v ∉ S
	ga := wtr * alpha // d loss/d x̂ = ga · d/dp

	// v ∉ S: KL part −c·log p(v), gradient −c/p(v).
	var acc logAcc
	acc.reset()
	var gdot float64 // Σ x̂ g
	for v := range V {
		xv := float64(ex[v]) * inv
		g[v] = 0
		if c == 0 || v == x || v == m {
			continue
		}
		pv := alpha*xv + oma*piU
		if pv > floor {
			g[v] = -ga * c / pv
			gdot += xv * g[v]
			acc.add(pv)
		} else {
			acc.add(floor)
		}
	}
	var kl float64
	if c > 0 {
		out := V - 2 // entries outside S
		if x == m {
			out = V - 1
		}
		kl = float64(out)*c*safeLog(c) - c*acc.sum()
	}
	xhat := func(v int) float64 { return float64(ex[v]) * inv }
	p := func(v int) float64 {
		if v == m {
			return alpha*xhat(v) + oma*(1-a)
		}
		return alpha*xhat(v) + oma*piU
	}
	q := func(v int) float64 {
		r := c
		if v == m {
			r = oma * (1 - a)
		}
		if v == x {
			r += alpha
		}
		return r
	}
	// v ∈ S: the full KL terms and gradients.
	for i, v := range [2]int{x, m} {
		if i == 1 && m == x {
			break
		}
		qv, pv := q(v), p(v)
		if qv > 0 {
			kl += qv * (safeLog(qv) - safeLog(pv))
			if pv > floor {
				g[v] = -ga * qv / pv
				gdot += xhat(v) * g[v]
			}
		}
	}
	qz, pz := q(z), p(z)
	is := qz/(pz+1e-12) - (safeLog(qz) - safeLog(pz)) - 1
	gz := ga * beta * isGrad(qz, pz)
	g[z] += gz
	gdot += xhat(z) * gz

	o := j.out[t*compute.LossOutStride : (t+1)*compute.LossOutStride]
	o[compute.LOLoss] = float32(wtr*kl + beta*wtr*is)
	o[compute.LOKL] = float32(wtr * kl)
	o[compute.LOIS] = float32(wtr * is)
	o[compute.LOElbo] = float32(wel * (kl + is))
	if !l.Grad {
		return
	}
	gs := float64(pr[compute.LPGradScale])
	for v := range V {
		lg[v] = float32(gs * float64(ex[v]) * inv * (g[v] - gdot))
	}
	lg[m] = 0
}

// isGrad is d IS / d p(z).
func isGrad(qz, pz float64) float64 {
	g := -qz / ((pz + 1e-12) * (pz + 1e-12))
	if pz > floor {
		g += 1 / pz
	}
	return g
}

// GIDDLoss computes the fused GIDD loss (see compute.Loss).
func (b *Backend) GIDDLoss(l compute.Loss) {
	const op = "GIDDLoss"
	if b.err != nil {
		return
	}
	if l.T < 0 || l.V < 2 || l.MaskID < 0 || l.MaskID >= l.V {
		b.fail(op, "bad shape T=%d V=%d MaskID=%d", l.T, l.V, l.MaskID)
		return
	}
	j := &b.jobs.loss
	*j = lossJob{l: l}
	j.logits = b.f32(op, "Logits", l.Logits, l.T*l.V)
	j.labels = b.i32(op, "Labels", l.Labels, l.T)
	j.noisy = b.i32(op, "Noisy", l.Noisy, l.T)
	j.params = b.f32(op, "Params", l.Params, l.T*compute.LossParamStride)
	j.out = b.f32(op, "Out", l.Out, l.T*compute.LossOutStride)
	if b.err != nil {
		*j = lossJob{}
		return
	}
	for t := range l.T {
		if x, z := j.labels[t], j.noisy[t]; x < 0 || int(x) >= l.V || z < 0 || int(z) >= l.V {
			b.fail(op, "token %d: label %d or noisy id %d outside [0, %d)", t, x, z, l.V)
			*j = lossJob{}
			return
		}
	}
	n := b.threads * l.V
	if cap(b.lossG) < n {
		b.lossG, b.lossEx = make([]float64, n), make([]float32, n)
	}
	j.g, j.ex = b.lossG[:n], b.lossEx[:n]
	b.pool.run(j, l.T, 4)
	*j = lossJob{}
}
