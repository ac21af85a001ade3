package cpu

import (
	"math"

	"github.com/difftrain/difftrain/compute"
)

type optJob struct {
	p, g, m, v []float32
	h          compute.OptStep
	c1, c2     float32 // LaProp: b1, b2; AdamW: 1/(1−β1^t), 1/(1−β2^t)
}

func (j *optJob) run(_, lo, hi int) {
	if j.simd(lo, hi) {
		return
	}
	j.runGo(lo, hi)
}

func (j *optJob) runGo(lo, hi int) {
	p, g, m, v := j.p[lo:hi], j.g[lo:hi], j.m[lo:hi], j.v[lo:hi]
	h := j.h
	switch h.Kind {
	case compute.LaProp:
		b1, b2 := j.c1, j.c2
		for i, gi := range g {
			vi := b2*v[i] + (1-b2)*gi*gi
			v[i] = vi
			gh := gi / (float32(math.Sqrt(float64(vi))) + h.Eps)
			mi := b1*m[i] + (1-b1)*gh
			m[i] = mi
			p[i] -= h.LR * (mi + h.WD*p[i])
		}
	case compute.AdamW:
		for i, gi := range g {
			mi := h.Beta1*m[i] + (1-h.Beta1)*gi
			vi := h.Beta2*v[i] + (1-h.Beta2)*gi*gi
			m[i], v[i] = mi, vi
			den := float32(math.Sqrt(float64(vi*j.c2))) + h.Eps
			p[i] -= h.LR * (mi*j.c1/den + h.WD*p[i])
		}
	}
}

// Update applies one LaProp or AdamW step (see compute.OptStep).
func (b *Backend) Update(p, g, m, v compute.Buffer, h compute.OptStep) {
	const op = "Update"
	if b.err != nil {
		return
	}
	if h.Step < 1 || h.Kind > compute.AdamW {
		b.fail(op, "step %d (must be >= 1), optimizer kind %d", h.Step, h.Kind)
		return
	}
	j := &b.jobs.opt
	j.p = b.f32(op, "p", p, -1)
	j.g = b.f32(op, "g", g, len(j.p))
	j.m = b.f32(op, "m", m, len(j.p))
	j.v = b.f32(op, "v", v, len(j.p))
	if b.err == nil {
		j.h = h
		t := float64(h.Step)
		p1, p2 := math.Pow(float64(h.Beta1), t), math.Pow(float64(h.Beta2), t)
		if h.Kind == compute.LaProp {
			j.c1 = float32(1 - (1-float64(h.Beta1))/(1-p1))
			j.c2 = float32(1 - (1-float64(h.Beta2))/(1-p2))
		} else {
			j.c1, j.c2 = float32(1/(1-p1)), float32(1/(1-p2))
		}
		b.pool.run(j, len(j.p), elemGrain)
	}
	*j = optJob{}
}
