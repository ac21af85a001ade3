package diffusion

import (
	"math"
	"testing"
)

// tokRow is one row of a spec §2.7 table; isZero marks IS ≈ 0 entries.
type tokRow struct {
	z                        int
	w, wElbo, is, loss, elbo float64
	isZero                   bool
}

type workedCase struct {
	name          string
	shift, lambda float64
	alpha, dens   float64 // 0: not given
	pi, piPrime   []float64
	q, p          []float64
	kl            float64
	rows          []tokRow
}

// The worked example of spec §2.7: V = 4, m = 3, x = 0, logits [2, 1, 0, 5].
var workedCases = []workedCase{
	{name: "A balanced λ=0", shift: 0, lambda: 0, alpha: 0.5, dens: 0.25,
		pi: []float64{1.0 / 6, 1.0 / 6, 1.0 / 6, 0.5}, piPrime: []float64{1.0 / 12, 1.0 / 12, 1.0 / 12, -0.25},
		q: []float64{0.583333333, 0.0833333333, 0.0833333333, 0.25}, p: []float64{0.415953811, 0.205697569, 0.12834862, 0.25},
		kl: 0.0859860008,
		rows: []tokRow{
			{z: 3, w: 1.5, wElbo: 6, loss: 0.128979001, elbo: 0.515916005, isZero: true},
			{z: 0, w: 1.0 / 14, wElbo: 0.285714286, is: 0.0642147443, loss: 0.0107286247, elbo: 0.0429144986},
			{z: 1, w: 0.5, wElbo: 2, is: 0.308683863, loss: 0.197334932, elbo: 0.789339727},
		}},
	{name: "B balanced λ=1.5", shift: 0, lambda: 1.5, alpha: 0.817574476, dens: 0.149146452,
		pi:      []float64{0.272524825, 0.272524825, 0.272524825, 0.182425524},
		piPrime: []float64{0.049715484, 0.049715484, 0.049715484, -0.149146452},
		q:       []float64{0.86728996, 0.049715484, 0.049715484, 0.0332790717}, p: []float64{0.59359951, 0.249799236, 0.123322183, 0.0332790717},
		kl: 0.203425565,
		rows: []tokRow{
			{z: 3, w: 1.81757448, wElbo: 12.1865083, loss: 0.369741114, elbo: 2.47904733, isZero: true},
			{z: 0, w: 0.0468656536, wElbo: 0.314225735, is: 0.081900703, loss: 0.013372002, elbo: 0.0896568563},
			{z: 1, w: 0.817574476, wElbo: 5.48168907, is: 0.813362865, loss: 0.831300268, elbo: 5.57371802},
		}},
	{name: "C masked λ=0", shift: -1000, lambda: 0, alpha: 0.5, dens: 0.25,
		pi: []float64{0, 0, 0, 1}, piPrime: []float64{0, 0, 0, 0},
		q: []float64{0.5, 0, 0, 0.5}, p: []float64{0.332620478, 0.122364236, 0.0450152866, 0.5},
		kl: 0.203802982,
		rows: []tokRow{
			{z: 3, w: 1, wElbo: 4, loss: 0.203802982, elbo: 0.815211929, isZero: true},
			{z: 0, w: 0, wElbo: 0, is: 0.09560876, loss: 0, elbo: 0},
		}},
	{name: "D uniform λ=0", shift: 1000, lambda: 0, alpha: 0.5, dens: 0.25,
		pi: []float64{1.0 / 3, 1.0 / 3, 1.0 / 3, 0}, piPrime: []float64{0, 0, 0, 0},
		q: []float64{0.666666667, 0.166666667, 0.166666667, 0}, p: []float64{0.499287145, 0.289030902, 0.211681953, 0},
		kl: 0.061134714,
		rows: []tokRow{
			{z: 0, w: 0.25, wElbo: 1, is: 0.0461281946, loss: 0.0268157272, elbo: 0.107262909},
			{z: 1, w: 1, wElbo: 4, is: 0.12717741, loss: 0.188312124, elbo: 0.753248498},
		}},
	{name: "E uniform λ=-2", shift: 1000, lambda: -2, alpha: 0.119202922, dens: 0.104993585,
		kl: 0.00361418811,
		rows: []tokRow{
			{z: 0, w: 0.711234594, wElbo: 6.77407664, is: 0.00534743583, loss: 0.00637381697, elbo: 0.0607067274},
			{z: 2, w: 1, wElbo: 9.52439138, is: 0.000636787959, loss: 0.00425097607, elbo: 0.0404879599},
		}},
}

func checkRel(t *testing.T, what string, got, want float64) {
	t.Helper()
	// The spec prints 9 significant digits; 1e-6 relative is its test tolerance.
	if want == 0 {
		if math.Abs(got) > 1e-12 {
			t.Errorf("%s = %.10g, want 0", what, got)
		}
		return
	}
	if !near(got, want, 1e-6) {
		t.Errorf("%s = %.10g, want %.10g (rel err %.2g)", what, got, want, math.Abs(got-want)/math.Abs(want))
	}
}

func TestWorkedExample(t *testing.T) {
	logits := []float64{2, 1, 0, 5}
	xhat := []float64{0.665240956, 0.244728471, 0.0900305732, 0}
	s := DefaultSchedule()
	for _, c := range workedCases {
		t.Run(c.name, func(t *testing.T) {
			n := Noise{Shift: c.shift, Scale: 1, MaskID: 3, Vocab: 4}
			checkRel(t, "α", s.Alpha(c.lambda), c.alpha)
			checkRel(t, "p(λ)", Density(c.lambda), c.dens)
			for v := range c.pi {
				checkRel(t, "π", n.Pi(c.lambda, v), c.pi[v])
				checkRel(t, "π'", n.PiPrime(c.lambda, v), c.piPrime[v])
			}
			for _, r := range c.rows {
				tl := RefLoss(logits, 0, r.z, c.lambda, n, s, 1)
				for v := range xhat {
					checkRel(t, "x̂", tl.XHat[v], xhat[v])
				}
				for v := range c.q {
					checkRel(t, "q", tl.Q[v], c.q[v])
					checkRel(t, "p", tl.P[v], c.p[v])
				}
				checkRel(t, "KL", tl.KL, c.kl)
				checkRel(t, "w", tl.W, r.w)
				checkRel(t, "w_elbo", tl.WElbo, r.wElbo)
				if r.isZero {
					if math.Abs(tl.IS) > 1e-10 {
						t.Errorf("z=%d: IS = %g, want ≈0", r.z, tl.IS)
					}
				} else {
					checkRel(t, "IS", tl.IS, r.is)
				}
				checkRel(t, "loss_tok", tl.Loss, r.loss)
				checkRel(t, "elbo_tok", tl.Elbo, r.elbo)
				checkRel(t, "kl_loss", tl.KLLoss, tl.WTr*c.kl)
			}
		})
	}
	// Case C: KL = −α·log x̂_x.
	n := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: 4}
	checkRel(t, "masked KL", RefLoss(logits, 0, 3, 0, n, s, 1).KL, -0.5*math.Log(xhat[0]))
	// IS of case A z = 3 is the 1e−12 offset: −4.0e−12.
	if is := RefLoss(logits, 0, 3, 0, Noise{Scale: 1, MaskID: 3, Vocab: 4}, s, 1).IS; math.Abs(is+4e-12) > 1e-13 {
		t.Errorf("case A z=3: IS = %g, want -4.0e-12", is)
	}
}

// TestMaskedELBO checks that, for masked noise, elbo_tok on a mask token is
// CE/(1−α) (the MDLM weight) and that β_IS does not enter the ELBO.
func TestMaskedELBO(t *testing.T) {
	s := DefaultSchedule()
	n := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: 6}
	logits := []float64{0.3, -1.2, 2.5, 7, 0.1, -0.4}
	for _, l := range []float64{-9, -4, -1, 0, 0.5, 2, 6, 9} {
		for x := range []int{0, 1, 2, 4, 5} {
			if x == 3 {
				continue
			}
			tl := RefLoss(logits, x, 3, l, n, s, 0.3)
			ce := -math.Log(tl.XHat[x])
			a := s.Alpha(l)
			// 1e-7: IS carries the −1e−12/p(z) offset of its denominator,
			// which w_el (up to 1/p(λ) ≈ 8·10³) magnifies.
			if !near(tl.Elbo, ce/(1-a), 1e-7) {
				t.Errorf("λ=%g x=%d: elbo %g, want CE/(1−α) = %g", l, x, tl.Elbo, ce/(1-a))
			}
			if !near(tl.Loss, a*ce, 1e-7) {
				t.Errorf("λ=%g x=%d: loss %g, want α·CE = %g", l, x, tl.Loss, a*ce)
			}
		}
	}
}

// TestMarginalsSumToOne checks q and p are distributions for every noise.
func TestMarginalsSumToOne(t *testing.T) {
	s := DefaultSchedule()
	logits := []float64{0.3, -1.2, 2.5, 7, 0.1}
	for _, b := range []float64{-1000, -2, 0, 2, 1000} {
		n := Noise{Shift: b, Scale: 1, MaskID: 3, Vocab: 5}
		for _, l := range []float64{-10, -9, -1, 0, 3, 9, 10} {
			tl := RefLoss(logits, 1, 2, l, n, s, 1)
			var sq, sp float64
			for v := range tl.Q {
				sq += tl.Q[v]
				sp += tl.P[v]
			}
			if math.Abs(sq-1) > 1e-12 || math.Abs(sp-1) > 1e-12 {
				t.Errorf("b=%g λ=%g: Σq = %g, Σp = %g", b, l, sq, sp)
			}
			if tl.KL < -1e-12 || tl.IS < -1e-11 {
				t.Errorf("b=%g λ=%g: KL %g, IS %g negative", b, l, tl.KL, tl.IS)
			}
		}
	}
}

// TestInitialKL: with all-zero logits (a zero-initialised head) x̂ is uniform
// over the non-mask tokens and KL has a closed form for masked noise:
// α·log(V−1).
func TestInitialKL(t *testing.T) {
	s := DefaultSchedule()
	const V = 9
	n := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: V}
	logits := make([]float64, V)
	for _, l := range []float64{-5, 0, 2} {
		tl := RefLoss(logits, 0, 3, l, n, s, 1)
		if want := s.Alpha(l) * math.Log(V-1); !near(tl.KL, want, 1e-12) {
			t.Errorf("λ=%g: KL %g, want %g", l, tl.KL, want)
		}
	}
}
