package optim

import (
	"math"

	"github.com/difftrain/difftrain/compute"
)

// Ref is a float64 reference of one tensor's optimizer state, for tests
// and for checking a backend's Update. M and V follow the backend's
// conventions (compute.OptStep): LaProp stores them bias-corrected.
type Ref struct {
	M, V []float64
	T    int // updates applied
}

// NewRef returns zero state for a tensor of n elements.
func NewRef(n int) *Ref { return &Ref{M: make([]float64, n), V: make([]float64, n)} }

// Step applies one update to p with gradient g (spec §6.1 for LaProp):
//
//	t ← t+1; b1 = 1 − (1−β1)/(1−β1^t); b2 = 1 − (1−β2)/(1−β2^t)
//	v ← b2·v + (1−b2)·g²; ĝ = g/(sqrt(v)+ε); m ← b1·m + (1−b1)·ĝ
//	θ ← θ − lr·(m + wd·θ)
//
// and the standard AdamW update for compute.AdamW.
func (r *Ref) Step(kind compute.OptKind, p, g []float64, lr, wd, beta1, beta2, eps float64) {
	r.T++
	t := float64(r.T)
	c1, c2 := 1-math.Pow(beta1, t), 1-math.Pow(beta2, t)
	if kind == compute.AdamW {
		for i := range p {
			r.M[i] = beta1*r.M[i] + (1-beta1)*g[i]
			r.V[i] = beta2*r.V[i] + (1-beta2)*g[i]*g[i]
			p[i] -= lr * ((r.M[i]/c1)/(math.Sqrt(r.V[i]/c2)+eps) + wd*p[i])
		}
		return
	}
	b1, b2 := 1-(1-beta1)/c1, 1-(1-beta2)/c2
	for i := range p {
		r.V[i] = b2*r.V[i] + (1-b2)*g[i]*g[i]
		gh := g[i] / (math.Sqrt(r.V[i]) + eps)
		r.M[i] = b1*r.M[i] + (1-b1)*gh
		p[i] -= lr * (r.M[i] + wd*p[i])
	}
}
