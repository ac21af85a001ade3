package diffusion

// Posterior writes the exact GIDD posterior P(z_s = v | z_t, x̂) of spec §7.2
// into dst (len Vocab), for a step from log-SNR lt to ls (ls > lt):
//
//	α_{t|s} = α_t/α_s,  c = β_t·π_t − α_{t|s}·β_s·π_s
//	P(v) = q_s(v)·(α_{t|s}·[v = z_t] + c(z_t)) / q_t(z_t)
//
// with q = α·x̂ + β·π. The row sums to 1. When q_t(z_t) = 0 (z_t impossible
// under the model, e.g. a mask token under pure uniform noise) the step
// carries no information about z_t and dst is q_s.
func Posterior(xhat []float64, zt int, lt, ls float64, n Noise, s Schedule, dst []float64) {
	at, as := s.Alpha(lt), s.Alpha(ls)
	bt, bs := 1-at, 1-as
	ats := at / as
	pit, pis := n.Pi(lt, zt), n.Pi(ls, zt)
	c := bt*pit - ats*bs*pis
	qt := at*xhat[zt] + bt*pit
	n.PiVec(ls, dst)
	for v := range dst {
		dst[v] = as*xhat[v] + bs*dst[v] // q_s
	}
	if !(qt > 0) {
		return
	}
	for v := range dst {
		k := c
		if v == zt {
			k += ats
		}
		dst[v] *= k / qt
	}
}

// InverseCDF samples from probabilities p with a uniform u ∈ [0,1): the
// cumulative sum with its last entry forced to 1, then #{v : cdf(v) < u}.
func InverseCDF(p []float64, u float64) int {
	var cdf float64
	for v := range p {
		cdf += p[v]
		if v == len(p)-1 {
			cdf = 1
		}
		if !(cdf < u) {
			return v
		}
	}
	return len(p) - 1
}
