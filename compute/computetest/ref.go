package computetest

import (
	"math"

	"github.com/difftrain/difftrain/compute"
)

// Float64 reference implementations of the operations, written for clarity.

// refGemm computes g on float64 copies of A, B, C and returns the new C.
func refGemm(g compute.Gemm, a, b, c []float64) []float64 {
	out := append([]float64(nil), c...)
	lda, ldb, ldc := g.LDA, g.LDB, g.LDC
	if lda == 0 {
		lda = map[bool]int{false: g.K, true: g.M}[g.TransA]
	}
	if ldb == 0 {
		ldb = map[bool]int{false: g.N, true: g.K}[g.TransB]
	}
	if ldc == 0 {
		ldc = g.N
	}
	for bi := range max(g.Batch, 1) {
		for i := range g.M {
			for j := range g.N {
				s := 0.0
				for k := range g.K {
					ai, bj := i*lda+k, k*ldb+j
					if g.TransA {
						ai = k*lda + i
					}
					if g.TransB {
						bj = j*ldb + k
					}
					av, bv := a[bi*g.StrideA+ai], b[bi*g.StrideB+bj]
					s += av * bv
				}
				p := bi*g.StrideC + i*ldc + j
				out[p] = float64(g.Alpha)*s + float64(g.Beta)*c[p]
			}
		}
	}
	return out
}

func refRMSNorm(x, w []float64, rows, cols int, eps float64) (y, rstd []float64) {
	y, rstd = make([]float64, len(x)), make([]float64, rows)
	for r := range rows {
		s := 0.0
		for _, v := range x[r*cols : (r+1)*cols] {
			s += v * v
		}
		rstd[r] = 1 / math.Sqrt(s/float64(cols)+eps)
		for c := range cols {
			y[r*cols+c] = (1 + w[c]) * x[r*cols+c] * rstd[r]
		}
	}
	return y, rstd
}

func refRope(x []float64, s compute.RopeShape) []float64 {
	out := append([]float64(nil), x...)
	half := s.Dh / 2
	for t := range s.B * s.N {
		pos := float64(t % s.N)
		for h := range s.H {
			o := (t*s.H + h) * s.Dh
			for i := range half {
				ang := pos * math.Pow(s.Theta, -2*float64(i)/float64(s.Dh))
				c, sn := math.Cos(ang), math.Sin(ang)
				a, b := x[o+i], x[o+i+half]
				out[o+i] = a*c - b*sn
				out[o+i+half] = b*c + a*sn
			}
		}
	}
	return out
}

// attnIn holds the float64 inputs of one attention call.
type attnIn struct {
	a       compute.Attn
	q, k, v []float64
	sk, sv  []float64 // nil: no sink
	noise   []int32   // nil: no mask
}

// refAttention is the forward pass of compute.Attn in float64.
func refAttention(in attnIn) []float64 {
	a := in.a
	N, H, Dh := a.N, a.H, a.Dh
	ld := H * Dh
	out := make([]float64, a.B*N*ld)
	sc := make([]float64, N+1)
	vis := make([]bool, N+1)
	for b := range a.B {
		for h := range H {
			for i := range N {
				qi := in.q[(b*N+i)*ld+h*Dh : (b*N+i)*ld+(h+1)*Dh]
				mx := math.Inf(-1)
				for j := range N + 1 {
					var kj []float64
					if j == 0 {
						vis[0] = in.sk != nil
						if !vis[0] {
							continue
						}
						kj = in.sk[h*Dh : (h+1)*Dh]
					} else {
						t := j - 1
						vis[j] = in.noise == nil || in.noise[b*N+i] != 0 ||
							(!a.CausalPrompt && in.noise[b*N+t] == 0) || (a.CausalPrompt && t <= i)
						kj = in.k[(b*N+t)*ld+h*Dh : (b*N+t)*ld+(h+1)*Dh]
					}
					s := dot(qi, kj) / math.Sqrt(float64(Dh))
					if a.SoftCap > 0 {
						c := float64(a.SoftCap)
						s = c * math.Tanh(s/c)
					}
					sc[j] = s
					if vis[j] {
						mx = max(mx, s)
					}
				}
				z := 0.0
				for j := range N + 1 {
					if vis[j] {
						sc[j] = math.Exp(sc[j] - mx)
						z += sc[j]
					} else {
						sc[j] = 0
					}
				}
				o := out[(b*N+i)*ld+h*Dh : (b*N+i)*ld+(h+1)*Dh]
				for j := range N + 1 {
					if sc[j] == 0 {
						continue
					}
					var vj []float64
					if j == 0 {
						vj = in.sv[h*Dh : (h+1)*Dh]
					} else {
						vj = in.v[(b*N+j-1)*ld+h*Dh : (b*N+j-1)*ld+(h+1)*Dh]
					}
					for c := range o {
						o[c] += sc[j] / z * vj[c]
					}
				}
			}
		}
	}
	return out
}

// lossTok is the GIDD loss of one token (gidd-spec §2) in float64.
type lossTok struct{ kl, is, loss, elbo float64 }

const safeFloor = 1.17549435e-38

func safeLog(x float64) float64 { return math.Log(max(x, safeFloor)) }

// refLoss computes the per-token loss from logits lg, label x, noisy z and
// the params row p (compute.LP*), with vocabulary len(lg) and mask id m.
func refLoss(lg []float64, x, z, m int, p []float64, betaIS float64) lossTok {
	V := len(lg)
	alpha, a, wtr, wel := p[compute.LPAlpha], p[compute.LPUniform], p[compute.LPWTrain], p[compute.LPWElbo]
	oma := p[compute.LPNoiseRate]
	l := append([]float64(nil), lg...)
	l[m] = -1e6
	mx := math.Inf(-1)
	for _, v := range l {
		mx = max(mx, v)
	}
	z0 := 0.0
	for _, v := range l {
		z0 += math.Exp(v - mx)
	}
	pi := func(v int) float64 {
		if v == m {
			return 1 - a
		}
		return a / float64(V-1)
	}
	q := func(v int) float64 {
		r := oma * pi(v)
		if v == x {
			r += alpha
		}
		return r
	}
	p_ := func(v int) float64 { return alpha*math.Exp(l[v]-mx)/z0 + oma*pi(v) }
	kl := 0.0
	for v := range V {
		if qv := q(v); qv > 0 {
			kl += qv * (safeLog(qv) - safeLog(p_(v)))
		}
	}
	is := q(z)/(p_(z)+1e-12) - (safeLog(q(z)) - safeLog(p_(z))) - 1
	return lossTok{kl: kl, is: is, loss: wtr*kl + betaIS*wtr*is, elbo: wel * (kl + is)}
}

// refUpdate applies one optimizer step in float64 to copies of p, m, v.
func refUpdate(p, g, m, v []float64, h compute.OptStep) (np, nm, nv []float64) {
	np, nm, nv = append([]float64(nil), p...), append([]float64(nil), m...), append([]float64(nil), v...)
	t := float64(h.Step)
	b1, b2 := float64(h.Beta1), float64(h.Beta2)
	lr, wd, eps := float64(h.LR), float64(h.WD), float64(h.Eps)
	for i := range p {
		switch h.Kind {
		case compute.LaProp:
			c1 := 1 - (1-b1)/(1-math.Pow(b1, t))
			c2 := 1 - (1-b2)/(1-math.Pow(b2, t))
			nv[i] = c2*v[i] + (1-c2)*g[i]*g[i]
			gh := g[i] / (math.Sqrt(nv[i]) + eps)
			nm[i] = c1*m[i] + (1-c1)*gh
			np[i] = p[i] - lr*(nm[i]+wd*p[i])
		case compute.AdamW:
			nm[i] = b1*m[i] + (1-b1)*g[i]
			nv[i] = b2*v[i] + (1-b2)*g[i]*g[i]
			mh := nm[i] / (1 - math.Pow(b1, t))
			vh := nv[i] / (1 - math.Pow(b2, t))
			np[i] = p[i] - lr*(mh/(math.Sqrt(vh)+eps)+wd*p[i])
		}
	}
	return np, nm, nv
}
