package scaling

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// synthetic returns runs drawn from L(M, D) = a·M^−α + b·D^−β + E with
// multiplicative noise sd: at each budget, sizes spaced evenly in ln M over
// two decades around the true optimum.
func synthetic(s Surface, budgets []float64, sizes int, sd float64, seed uint64) []Point {
	rng := rand.New(rand.NewPCG(seed, 0))
	var pts []Point
	for _, c := range budgets {
		mstar := math.Pow(s.Alpha*s.A/(s.Beta*s.B), 1/(s.Alpha+s.Beta)) * math.Pow(c, s.Beta/(s.Alpha+s.Beta))
		for i := range sizes {
			m := mstar * math.Pow(10, -1+2*float64(i)/float64(sizes-1))
			d := c / m
			pts = append(pts, Point{Noise: "masked", M: m, D: d, C: c, Loss: s.At(m, d) * math.Exp(sd*rng.NormFloat64())})
		}
	}
	return pts
}

// TestFitRecoversKnownLaws: runs from the §9.5 masked surface give back α
// and β within their bootstrap intervals, and iso-FLOP optima whose
// exponents match β/(α+β) and α/(α+β) within theirs.
func TestFitRecoversKnownLaws(t *testing.T) {
	truth := Surface{A: 222, Alpha: 0.292, B: 1.92e3, Beta: 0.367, E: 2.17}
	pts := synthetic(truth, []float64{1e17, 1e18, 1e19, 1e20, 1e21}, 9, 0.003, 1)
	fits, err := Fit(pts, FitOptions{Bootstrap: 1000, SurfaceBootstrap: 100, Delta: 1e-3, LawDelta: 0.1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(fits) != 1 {
		t.Fatalf("%d noise types fitted, want 1", len(fits))
	}
	f := fits[0]
	if f.MOpt == nil || f.Surface == nil {
		t.Fatalf("no laws fitted: %v", f.Notes)
	}
	s := f.Surface
	t.Logf("surface a %.4g α %.4f [%.4f, %.4f] b %.4g β %.4f [%.4f, %.4f] E %.4f", s.A, s.Alpha, s.AlphaLo, s.AlphaHi, s.B, s.Beta, s.BetaLo, s.BetaHi, s.E)
	t.Logf("M* ∝ C^%.4f [%.4f, %.4f], D* ∝ C^%.4f [%.4f, %.4f], L* ∝ C^%.4f [%.4f, %.4f], %d resamples",
		f.MOpt.Exp, f.MOpt.Lo, f.MOpt.Hi, f.DOpt.Exp, f.DOpt.Lo, f.DOpt.Hi, f.LOpt.Exp, f.LOpt.Lo, f.LOpt.Hi, f.Resamples)
	within := func(name string, v, lo, hi float64) {
		if !(lo <= v && v <= hi) || hi-lo > 0.2 {
			t.Errorf("%s: true value %.4f outside the interval [%.4f, %.4f] (or the interval is uselessly wide)", name, v, lo, hi)
		}
	}
	within("α", truth.Alpha, s.AlphaLo, s.AlphaHi)
	within("β", truth.Beta, s.BetaLo, s.BetaHi)
	a := truth.Beta / (truth.Alpha + truth.Beta)
	within("M* exponent", a, f.MOpt.Lo, f.MOpt.Hi)
	within("D* exponent", 1-a, f.DOpt.Lo, f.DOpt.Hi)
	if f.Resamples < 900 {
		t.Errorf("only %d of 1000 resamples fitted", f.Resamples)
	}
	if len(f.Groups) != 5 {
		t.Errorf("%d iso-FLOP groups, want 5", len(f.Groups))
	}
}

// TestFitPower: a Huber power law ignores one wild point.
func TestFitPower(t *testing.T) {
	var c, y []float64
	for i := range 8 {
		x := math.Pow(10, 15+float64(i))
		c, y = append(c, x), append(y, 0.0176*math.Pow(x, 0.566))
	}
	y[3] *= 3
	a, k := FitPower(c, y, 0.1)
	if math.Abs(k-0.566) > 1e-3 || math.Abs(a/0.0176-1) > 0.05 {
		t.Errorf("fit %.4g·C^%.4f, want 0.0176·C^0.566", a, k)
	}
}

// TestLossRatio reproduces §9.7: the uniform/masked compute-optimal loss
// ratio from the Method 1 sq-fit laws.
func TestLossRatio(t *testing.T) {
	m := Law{A: 27.21883, Exp: -0.04961}
	u := Law{A: 31.26171, Exp: -0.05219}
	for _, c := range []struct{ c, want float64 }{{1e18, 1.0321}, {1e19, 1.0259}, {1e20, 1.0199}, {1e21, 1.0138}, {1e22, 1.0078}} {
		if r := Ratio(u, m, c.c); math.Abs(r-c.want) > 1e-4 {
			t.Errorf("C=%g: ratio %.4f, want %.4f", c.c, r, c.want)
		}
	}
}

// TestIsoFLOPTooFewSizes: a budget with two sizes has no parabola, and
// says so.
func TestIsoFLOPTooFewSizes(t *testing.T) {
	pts := []Point{{Noise: "u", M: 1, D: 1, C: 1, Loss: 3}, {Noise: "u", M: 2, D: 1, C: 1, Loss: 2}}
	f, err := Fit(pts, FitOptions{Bootstrap: 10, Delta: 1e-3, LawDelta: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	if f[0].MOpt != nil || len(f[0].Notes) == 0 {
		t.Errorf("fitted laws from two runs: %+v", f[0])
	}
	if _, err := Fit([]Point{{Noise: "u", M: 1, D: 1, C: 1, Loss: math.NaN()}}, FitOptions{Delta: 1e-3, LawDelta: 0.1}); err == nil {
		t.Error("a NaN loss was accepted")
	}
}

// TestBootstrapKeepsTheFittedBudgets: a budget whose iso-FLOP curve has no
// minimum is left out of the laws, and so out of their bootstrap too, even
// when some resamples of its runs happen to have a minimum. Two exact
// parabolas then give the same optima in every resample: the intervals
// collapse onto the estimates.
func TestBootstrapKeepsTheFittedBudgets(t *testing.T) {
	var pts []Point
	for i, c := range []float64{1e10, 1e11} {
		mstar := 1e4 * math.Pow(10, float64(i)*0.6)
		for k := -2; k <= 2; k++ {
			m := mstar * math.Exp(float64(k))
			pts = append(pts, Point{Noise: "masked", M: m, D: c / m, C: c, Loss: 3 * math.Exp(0.01*float64(k*k)) * math.Pow(c/1e10, -0.05)})
		}
	}
	// At 1e12 the curve opens downwards over all five sizes, while three
	// middle sizes alone curve upwards.
	for k, y := range []float64{0, 0.05, 0.03, 0.05, 0} {
		m := 1e5 * math.Exp(float64(k-2))
		pts = append(pts, Point{Noise: "masked", M: m, D: 1e12 / m, C: 1e12, Loss: 2.5 * math.Exp(y)})
	}
	fits, err := Fit(pts, FitOptions{Bootstrap: 2000, Delta: 1e-3, LawDelta: 0.1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	f := fits[0]
	if f.Groups[2].Optimum != nil || f.MOpt == nil {
		t.Fatalf("1e12 optimum %v, M* law %v: want none and a law through two budgets", f.Groups[2].Optimum, f.MOpt)
	}
	if math.Abs(f.MOpt.Exp-0.6) > 1e-6 {
		t.Errorf("M* exponent %g, want 0.6", f.MOpt.Exp)
	}
	for name, l := range map[string]*Law{"M*": f.MOpt, "D*": f.DOpt, "L*": f.LOpt} {
		if math.Abs(l.Lo-l.Exp) > 1e-6 || math.Abs(l.Hi-l.Exp) > 1e-6 {
			t.Errorf("%s exponent %g, interval [%g, %g]: resamples used the budget without a minimum", name, l.Exp, l.Lo, l.Hi)
		}
	}
}

// TestIsoFLOPOutside: a minimum beyond the sizes run, but near enough to
// be kept, is marked as an extrapolation; one among them is not.
func TestIsoFLOPOutside(t *testing.T) {
	curve := func(c, mstar float64) []Point {
		var pts []Point
		for k := range 5 {
			m := 1e4 * math.Exp(float64(k))
			pts = append(pts, Point{Noise: "uniform", M: m, D: c / m, C: c, Loss: 3 * math.Exp(0.02*math.Pow(math.Log(m/mstar), 2))})
		}
		return pts
	}
	_, in, why := isoFLOP(1e11, curve(1e11, 3e4))
	if why != "" || in.Outside || math.Abs(in.M/3e4-1) > 1e-6 {
		t.Errorf("interior minimum: %+v %q", in, why)
	}
	_, out, why := isoFLOP(1e11, curve(1e11, 4e3))
	if why != "" || !out.Outside || math.Abs(out.M/4e3-1) > 1e-6 {
		t.Errorf("minimum below the smallest size 1e4: %+v %q", out, why)
	}
	fits, err := Fit(curve(1e11, 4e3), FitOptions{Delta: 1e-3, LawDelta: 0.1})
	if err != nil || len(fits[0].Notes) == 0 || !strings.Contains(fits[0].Notes[0], "extrapolation") {
		t.Errorf("no note of the extrapolated minimum: %v %v", fits[0].Notes, err)
	}
}

// TestIsoWindow: over a wide ladder, a curve flat below its minimum and
// steep above it pulls one parabola through all sizes far from the
// minimum; fitted to the 5 sizes around the best run, it lands near it.
func TestIsoWindow(t *testing.T) {
	const mstar = 1e5
	var pts []Point
	for k := range 11 {
		m := 2e3 * math.Exp(0.6*float64(k))
		u := math.Log(m / mstar)
		w := 0.01
		if u > 0 {
			w = 0.05
		}
		pts = append(pts, Point{Noise: "uniform", M: m, D: 1e12 / m, C: 1e12, Loss: 3 * math.Exp(w*u*u)})
	}
	miss := func(o FitOptions) (float64, *Group) {
		o.Delta, o.LawDelta = 1e-3, 0.1
		fits, err := Fit(pts, o)
		if err != nil {
			t.Fatal(err)
		}
		g := &fits[0].Groups[0]
		if g.Optimum == nil {
			return math.Inf(1), g
		}
		return math.Abs(math.Log(g.Optimum.M / mstar)), g
	}
	all, _ := miss(FitOptions{})
	win, g := miss(FitOptions{IsoWindow: 5})
	if fp := g.FittedPoints(); len(fp) != 5 || g.Fitted != 5 || !slices.ContainsFunc(fp, func(p Point) bool { return math.Abs(p.M/mstar-1) < 0.3 }) {
		t.Fatalf("window of 5 fitted %d points %v", len(fp), fp)
	}
	if !(win < math.Log(1.6)) || !(all > 2*win) {
		t.Errorf("ln(M*/true) off by %.3f with the window, %.3f with all sizes: want the window within ln 1.6 and all sizes twice as far", win, all)
	}
	if _, err := Fit(pts, FitOptions{Delta: 1e-3, LawDelta: 0.1, IsoWindow: 2}); err == nil {
		t.Error("a window of 2 sizes accepted")
	}
	for _, c := range []struct{ best, k, n, want int }{{0, 3, 7, 0}, {6, 3, 7, 4}, {3, 5, 7, 1}, {3, 4, 7, 2}, {1, 5, 5, 0}} {
		p := make([]Point, c.n)
		for i := range p {
			p[i].Loss = 2
		}
		p[c.best].Loss = 1
		if got := window(p, c.k); got != c.want {
			t.Errorf("window(best %d, k %d, n %d) starts at %d, want %d", c.best, c.k, c.n, got, c.want)
		}
	}
}
