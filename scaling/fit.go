package scaling

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize"
	"gonum.org/v1/gonum/stat"
)

// Point is one finished run: its noise type, non-embedding FLOPs per token
// M, tokens D, compute budget C (the iso-FLOP group it belongs to; M·D when
// not planned) and final loss (ELBO, nats/token).
type Point struct {
	Name   string  `json:"name,omitempty"`
	Noise  string  `json:"noise"`
	M      float64 `json:"M"`
	D      float64 `json:"D"`
	C      float64 `json:"C"`
	Loss   float64 `json:"loss"`
	Params float64 `json:"params,omitempty"`
}

// Law is a power law y = A·C^Exp with the 95% bootstrap interval of Exp.
type Law struct {
	A   float64 `json:"A"`
	Exp float64 `json:"exp"`
	Lo  float64 `json:"lo"`
	Hi  float64 `json:"hi"`
}

// At evaluates the law at compute c.
func (l Law) At(c float64) float64 { return l.A * math.Pow(c, l.Exp) }

// Optimum is the minimum of one iso-FLOP parabola.
type Optimum struct {
	C    float64 `json:"C"`
	M    float64 `json:"M"`
	D    float64 `json:"D"`
	Loss float64 `json:"loss"`
	// Outside: the minimum lies beyond the smallest or largest size run at
	// this budget, an extrapolation of the parabola.
	Outside bool `json:"outside,omitempty"`
}

// Group is one iso-FLOP curve: the best run of each size at one budget and
// the parabola ln L = P0·x² + P1·x + P2 in x = ln M, when it has a minimum.
type Group struct {
	C        float64   `json:"C"`
	Points   []Point   `json:"points"`
	Parabola []float64 `json:"parabola,omitempty"`
	Optimum  *Optimum  `json:"optimum,omitempty"`
	// Fitted is how many of Points (adjacent in M) the parabola was fitted
	// to: all of them unless FitOptions.IsoWindow chose fewer.
	Fitted int `json:"fitted,omitempty"`
}

// FittedPoints returns the points of g the parabola is fitted to.
func (g *Group) FittedPoints() []Point {
	if g.Fitted <= 0 || g.Fitted >= len(g.Points) {
		return g.Points
	}
	lo := window(g.Points, g.Fitted)
	return g.Points[lo : lo+g.Fitted]
}

// window returns the first index of the k adjacent points (sorted by M)
// centred, as far as the ends allow, on the one of lowest loss.
func window(pts []Point, k int) int {
	best := 0
	for i, p := range pts {
		if p.Loss < pts[best].Loss {
			best = i
		}
	}
	return max(0, min(best-(k-1)/2, len(pts)-k))
}

// Surface is L(M, D) = A·M^−Alpha + B·D^−Beta + E with 95% bootstrap
// intervals of the exponents.
type Surface struct {
	A       float64 `json:"a"`
	Alpha   float64 `json:"alpha"`
	B       float64 `json:"b"`
	Beta    float64 `json:"beta"`
	E       float64 `json:"E"`
	AlphaLo float64 `json:"alpha_lo"`
	AlphaHi float64 `json:"alpha_hi"`
	BetaLo  float64 `json:"beta_lo"`
	BetaHi  float64 `json:"beta_hi"`
	// MExp is the compute-optimal M* ∝ C^(β/(α+β)) the surface implies.
	MExp      float64 `json:"M_exp"`
	Resamples int     `json:"resamples"` // bootstrap resamples behind the intervals
}

// At evaluates the surface.
func (s Surface) At(m, d float64) float64 {
	return s.A*math.Pow(m, -s.Alpha) + s.B*math.Pow(d, -s.Beta) + s.E
}

// NoiseFit is everything fitted for one noise type.
type NoiseFit struct {
	Noise     string   `json:"noise"`
	Runs      int      `json:"runs"`
	Groups    []Group  `json:"iso_flop"`
	MOpt      *Law     `json:"M_opt,omitempty"`
	DOpt      *Law     `json:"D_opt,omitempty"`
	LOpt      *Law     `json:"L_opt,omitempty"`
	Resamples int      `json:"resamples"` // bootstrap resamples that gave all three laws
	Surface   *Surface `json:"surface,omitempty"`
	Notes     []string `json:"notes,omitempty"` // what could not be fitted, and why
}

// FitOptions control the fits.
type FitOptions struct {
	Bootstrap        int     // resamples for the power laws in C (the paper's 10,000)
	SurfaceBootstrap int     // resamples for the 2-D surface
	Delta            float64 // Huber δ on log-loss residuals of the surface (Chinchilla's 1e-3)
	// LawDelta is the Huber δ of the power laws through the optima. With a
	// handful of optima, a δ far below their scatter makes the fit an L1
	// fit whose minimum is flat and whose answer depends on where the
	// optimizer stops; 0.1 (10% in y) only stops gross outliers.
	LawDelta float64
	// IsoWindow, when above 2, fits each budget's parabola to that many
	// adjacent sizes around its best run instead of to all of them: one
	// parabola in ln M cannot follow a curve that is flat on one side of
	// its minimum and steep on the other over a wide ladder. 0 uses all.
	IsoWindow int
	Seed      uint64
}

// Fit fits every noise type among pts, sorted by name.
func Fit(pts []Point, o FitOptions) ([]*NoiseFit, error) {
	if !(o.Delta > 0) || !(o.LawDelta > 0) {
		return nil, fmt.Errorf("fit: Huber deltas %g and %g, must be positive", o.Delta, o.LawDelta)
	}
	if o.IsoWindow != 0 && o.IsoWindow < 3 {
		return nil, fmt.Errorf("fit: iso-FLOP window %d: a parabola needs at least 3 sizes (0 uses all)", o.IsoWindow)
	}
	by := map[string][]Point{}
	for _, p := range pts {
		if !(p.M > 0 && p.D > 0 && p.C > 0 && p.Loss > 0) || math.IsInf(p.M+p.D+p.C+p.Loss, 0) {
			return nil, fmt.Errorf("fit: run %q (%s): M %g, D %g, C %g, loss %g must be positive and finite", p.Name, p.Noise, p.M, p.D, p.C, p.Loss)
		}
		by[p.Noise] = append(by[p.Noise], p)
	}
	var out []*NoiseFit
	for _, n := range sortedKeys(by) {
		out = append(out, fitNoise(n, by[n], o))
	}
	return out, nil
}

// groupKey names a budget to 3 significant digits, so runs planned for one
// budget share a group whatever their rounding.
func groupKey(c float64) string { return strconv.FormatFloat(c, 'g', 3, 64) }

// isoGroups keeps the lowest loss per (budget, size) and groups by budget.
func isoGroups(pts []Point) []Group {
	best := map[[2]string]Point{}
	for _, p := range pts {
		k := [2]string{groupKey(p.C), strconv.FormatFloat(p.M, 'g', 6, 64)}
		if b, ok := best[k]; !ok || p.Loss < b.Loss {
			best[k] = p
		}
	}
	gs := map[string]*Group{}
	for k, p := range best {
		g := gs[k[0]]
		if g == nil {
			g = &Group{C: p.C}
			gs[k[0]] = g
		}
		g.Points = append(g.Points, p)
	}
	var out []Group
	for _, g := range gs {
		slices.SortFunc(g.Points, func(a, b Point) int { return cmp.Compare(a.M, b.M) })
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Group) int { return cmp.Compare(a.C, b.C) })
	return out
}

func fitNoise(noise string, pts []Point, o FitOptions) *NoiseFit {
	nf := &NoiseFit{Noise: noise, Runs: len(pts), Groups: isoGroups(pts)}
	var opt []Optimum
	for i := range nf.Groups {
		g := &nf.Groups[i]
		g.Fitted = len(g.Points)
		if o.IsoWindow > 2 {
			g.Fitted = min(o.IsoWindow, len(g.Points))
		}
		par, op, why := isoFLOP(g.C, g.FittedPoints())
		if why != "" {
			nf.Notes = append(nf.Notes, fmt.Sprintf("C=%s: %s", groupKey(g.C), why))
			continue
		}
		g.Parabola, g.Optimum = par, &op
		opt = append(opt, op)
		if fp := g.FittedPoints(); op.Outside {
			nf.Notes = append(nf.Notes, fmt.Sprintf("C=%s: the minimum M=%.3g lies outside the sizes fitted (%.3g to %.3g): an extrapolation",
				groupKey(g.C), op.M, fp[0].M, fp[len(fp)-1].M))
		}
	}
	if len(opt) >= 2 {
		nf.MOpt, nf.DOpt, nf.LOpt = &Law{}, &Law{}, &Law{}
		m, d, l := optimaLaws(opt, o.LawDelta)
		*nf.MOpt, *nf.DOpt, *nf.LOpt = m, d, l
		nf.Resamples = bootstrapLaws(nf, o)
	} else {
		nf.Notes = append(nf.Notes, fmt.Sprintf("%d iso-FLOP optima: need 2 budgets with a minimum for the laws in C", len(opt)))
	}
	var best []Point
	for _, g := range nf.Groups {
		best = append(best, g.Points...)
	}
	if len(best) >= 6 {
		s := fitSurface(best, o.Delta, nil)
		if s.Alpha > 0 && s.Beta > 0 {
			bootstrapSurface(&s, best, o)
		} else {
			nf.Notes = append(nf.Notes, fmt.Sprintf("the 2-D surface is degenerate (α %.3g, β %.3g): the runs are too few or too noisy; no bootstrap", s.Alpha, s.Beta))
		}
		nf.Surface = &s
	} else {
		nf.Notes = append(nf.Notes, fmt.Sprintf("%d runs: need 6 for the 2-D surface", len(best)))
	}
	return nf
}

// isoFLOP fits ln L = a·x² + b·x + c in x = ln M by least squares and
// returns its coefficients and minimum, or why there is none.
func isoFLOP(c float64, pts []Point) ([]float64, Optimum, string) {
	xs := make([]float64, 0, len(pts))
	distinct := map[float64]bool{}
	for _, p := range pts {
		xs = append(xs, math.Log(p.M))
		distinct[p.M] = true
	}
	if len(distinct) < 3 {
		return nil, Optimum{}, fmt.Sprintf("%d sizes, need 3 for a parabola", len(distinct))
	}
	mean := stat.Mean(xs, nil)
	x := mat.NewDense(len(pts), 3, nil)
	y := mat.NewVecDense(len(pts), nil)
	for i, p := range pts {
		u := xs[i] - mean
		x.Set(i, 0, u*u)
		x.Set(i, 1, u)
		x.Set(i, 2, 1)
		y.SetVec(i, math.Log(p.Loss))
	}
	var beta mat.VecDense
	if err := beta.SolveVec(x, y); err != nil {
		return nil, Optimum{}, fmt.Sprintf("parabola: %v", err)
	}
	a, b, k := beta.AtVec(0), beta.AtVec(1), beta.AtVec(2)
	if !(a > 0) {
		return nil, Optimum{}, "the loss has no minimum over the sizes (the parabola opens downwards)"
	}
	u := -b / (2 * a)
	lo, hi := slices.Min(xs)-mean, slices.Max(xs)-mean
	if span := hi - lo; u < lo-span/2 || u > hi+span/2 {
		return nil, Optimum{}, fmt.Sprintf("the minimum M=%.3g lies far outside the sizes fitted (%.3g to %.3g)", math.Exp(u+mean), math.Exp(lo+mean), math.Exp(hi+mean))
	}
	m := math.Exp(u + mean)
	// Coefficients in x = ln M, uncentred, for drawing.
	par := []float64{a, b - 2*a*mean, a*mean*mean - b*mean + k}
	return par, Optimum{C: c, M: m, D: c / m, Loss: math.Exp(a*u*u + b*u + k), Outside: u < lo || u > hi}, ""
}

// optimaLaws fits M*, D* and L* as power laws in C.
func optimaLaws(opt []Optimum, delta float64) (m, d, l Law) {
	c, ms, ds, ls := make([]float64, len(opt)), make([]float64, len(opt)), make([]float64, len(opt)), make([]float64, len(opt))
	for i, o := range opt {
		c[i], ms[i], ds[i], ls[i] = o.C, o.M, o.D, o.Loss
	}
	m.A, m.Exp = FitPower(c, ms, delta)
	d.A, d.Exp = FitPower(c, ds, delta)
	l.A, l.Exp = FitPower(c, ls, delta)
	return m, d, l
}

// FitPower fits y = A·x^k in log space with a Huber loss (δ on the log
// residuals), starting from least squares.
func FitPower(x, y []float64, delta float64) (a, k float64) {
	lx, ly := make([]float64, len(x)), make([]float64, len(y))
	for i := range x {
		lx[i], ly[i] = math.Log(x[i]), math.Log(y[i])
	}
	mean := stat.Mean(lx, nil)
	for i := range lx {
		lx[i] -= mean
	}
	b0, k0 := stat.LinearRegression(lx, ly, nil, false)
	f := func(p []float64) float64 {
		s := 0.0
		for i := range lx {
			s += huber(ly[i]-p[0]-p[1]*lx[i], delta)
		}
		return s
	}
	p := minimize(f, []float64{b0, k0})
	return math.Exp(p[0] - p[1]*mean), p[1]
}

// huber is the Huber loss divided by δ: r²/(2δ) near 0, |r| − δ/2 beyond δ.
func huber(r, delta float64) float64 {
	if a := math.Abs(r); a > delta {
		return a - delta/2
	}
	return r * r / (2 * delta)
}

// minimize runs gonum's Nelder–Mead from x0, then once more from where it
// stopped (a fresh simplex gets past a collapsed one), and returns the best
// point found.
func minimize(f func([]float64) float64, x0 []float64) []float64 {
	best, bestF := x0, f(x0)
	for range 2 {
		s := &optimize.Settings{
			MajorIterations: 5000,
			Converger:       &optimize.FunctionConverge{Absolute: 1e-10, Relative: 1e-9, Iterations: 60},
		}
		res, _ := optimize.Minimize(optimize.Problem{Func: f}, best, s, &optimize.NelderMead{})
		if res == nil || !(res.F < bestF) {
			break
		}
		best, bestF = res.X, res.F
	}
	return best
}

// fitSurface fits ln L = LSE(a' − α ln M, b' − β ln D, e') with a Huber loss
// (Chinchilla's approach 3): from a grid of starts, or from start alone.
func fitSurface(pts []Point, delta float64, start []float64) Surface {
	lm, ld, ll := make([]float64, len(pts)), make([]float64, len(pts)), make([]float64, len(pts))
	for i, p := range pts {
		lm[i], ld[i], ll[i] = math.Log(p.M), math.Log(p.D), math.Log(p.Loss)
	}
	f := func(t []float64) float64 {
		s := 0.0
		for i := range lm {
			s += huber(lse3(t[0]-t[1]*lm[i], t[2]-t[3]*ld[i], t[4])-ll[i], delta)
		}
		return s
	}
	var starts [][]float64
	if start != nil {
		starts = [][]float64{start}
	} else {
		for _, al := range []float64{0.2, 0.5} {
			for _, be := range []float64{0.2, 0.5} {
				for _, la := range []float64{0, 5, 10} {
					for _, lb := range []float64{0, 5, 10} {
						for _, le := range []float64{-1, 0.5} {
							starts = append(starts, []float64{la, al, lb, be, le})
						}
					}
				}
			}
		}
	}
	var best []float64
	bestF := math.Inf(1)
	for _, s0 := range starts {
		t := minimize(f, s0)
		if v := f(t); v < bestF {
			best, bestF = t, v
		}
	}
	s := Surface{A: math.Exp(best[0]), Alpha: best[1], B: math.Exp(best[2]), Beta: best[3], E: math.Exp(best[4])}
	s.MExp = s.Beta / (s.Alpha + s.Beta)
	return s
}

func (s Surface) params() []float64 {
	return []float64{math.Log(s.A), s.Alpha, math.Log(s.B), s.Beta, math.Log(s.E)}
}

func lse3(a, b, c float64) float64 {
	m := max(a, b, c)
	return m + math.Log(math.Exp(a-m)+math.Exp(b-m)+math.Exp(c-m))
}

// bootstrapLaws resamples the runs of each iso-FLOP group with replacement,
// refits the parabolas and the three laws, and sets the 2.5% and 97.5%
// percentiles of each exponent. Only the groups behind the laws are
// resampled: a budget whose curve has no minimum is not in the estimate,
// and a resample that happens to find one there would measure another
// estimate. It returns the resamples that succeeded.
func bootstrapLaws(nf *NoiseFit, o FitOptions) int {
	rng := rand.New(rand.NewPCG(o.Seed, 1))
	var me, de, le []float64
	for range o.Bootstrap {
		var opt []Optimum
		for _, g := range nf.Groups {
			if g.Optimum == nil {
				continue
			}
			pts := g.FittedPoints()
			s := make([]Point, len(pts))
			for i := range s {
				s[i] = pts[rng.IntN(len(pts))]
			}
			if _, op, why := isoFLOP(g.C, s); why == "" {
				opt = append(opt, op)
			}
		}
		if len(opt) < 2 {
			continue
		}
		m, d, l := optimaLaws(opt, o.LawDelta)
		me, de, le = append(me, m.Exp), append(de, d.Exp), append(le, l.Exp)
	}
	nf.MOpt.Lo, nf.MOpt.Hi = interval(me, nf.MOpt.Exp)
	nf.DOpt.Lo, nf.DOpt.Hi = interval(de, nf.DOpt.Exp)
	nf.LOpt.Lo, nf.LOpt.Hi = interval(le, nf.LOpt.Exp)
	return len(me)
}

// bootstrapSurface resamples the runs and refits the surface from its fit.
func bootstrapSurface(s *Surface, pts []Point, o FitOptions) {
	rng := rand.New(rand.NewPCG(o.Seed, 2))
	var al, be []float64
	start := s.params()
	r := make([]Point, len(pts))
	for range o.SurfaceBootstrap {
		for i := range r {
			r[i] = pts[rng.IntN(len(pts))]
		}
		b := fitSurface(r, o.Delta, start)
		al, be = append(al, b.Alpha), append(be, b.Beta)
	}
	s.AlphaLo, s.AlphaHi = interval(al, s.Alpha)
	s.BetaLo, s.BetaHi = interval(be, s.Beta)
	s.Resamples = len(al)
}

// interval is the 95% percentile interval of v, or [x, x] without samples.
func interval(v []float64, x float64) (float64, float64) {
	if len(v) == 0 {
		return x, x
	}
	sort.Float64s(v)
	return stat.Quantile(0.025, stat.Empirical, v, nil), stat.Quantile(0.975, stat.Empirical, v, nil)
}

// Ratio is L*_a(C)/L*_b(C), e.g. the uniform/masked gap of §9.7.
func Ratio(a, b Law, c float64) float64 { return a.At(c) / b.At(c) }
