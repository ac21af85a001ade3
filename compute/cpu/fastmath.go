package cpu

import "math"

// exp32 is e^x in float32 to about 1 ulp (the Cephes expf polynomial). It
// returns 0 below −87.34 (where e^x is subnormal), +Inf above 88.72 and NaN
// for NaN.
func exp32(x float32) float32 {
	if !(x > -87.33654 && x < 88.0) {
		return expEdge(x)
	}
	return expPoly(x)
}

// expPoly is exp32 for x in [−87.34, 88], small enough to inline.
func expPoly(x float32) float32 {
	// n = floor(x/ln2 + 0.5): the argument is positive after adding 128
	// (x ≥ −87.34), so truncation floors.
	n := float32(int32(x*1.44269504088896341+128.5)) - 128
	r := x - n*0.693359375 + n*2.12194440e-4
	y := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	return (y*r*r + r + 1) * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// expEdge is exp32 outside (−87.34, 88): 0 below (e^x is subnormal there),
// +Inf above 88.72, NaN for NaN, and e^x in between.
func expEdge(x float32) float32 {
	switch {
	case x != x:
		return x
	case x <= -87.33654:
		return 0
	case x >= 88.72283:
		return float32(math.Inf(1))
	}
	return float32(math.Exp(float64(x)))
}

// expShift sets x[i] = e^(x[i]−shift) (shift ≥ every x[i]) and returns the
// sum in float64. −Inf entries give 0; NaN stays NaN.
func expShift(x []float32, shift float32) float64 {
	var s0, s1 float64
	i := 0
	for ; i+2 <= len(x); i += 2 {
		a, b := x[i]-shift, x[i+1]-shift
		if a > -87.33654 {
			a = expPoly(a)
		} else {
			a = expEdge(a)
		}
		if b > -87.33654 {
			b = expPoly(b)
		} else {
			b = expEdge(b)
		}
		x[i], x[i+1] = a, b
		s0 += float64(a)
		s1 += float64(b)
	}
	for ; i < len(x); i++ {
		x[i] = exp32(x[i] - shift)
		s0 += float64(x[i])
	}
	return s0 + s1
}

// capRow applies the tanh soft-cap s ← c·tanh(s/c) to every entry of x and
// stores the derivative 1 − tanh² in d.
func capRow(x, d []float32, c float32) {
	d = d[:len(x)]
	inv := 1 / c
	for i, s := range x {
		y := 2 * s * inv
		if y > 18 { // tanh(9) is 1 in float32
			y = 18
		} else if y < -18 {
			y = -18
		} else if y != y {
			x[i], d[i] = y, y
			continue
		}
		t := 1 - 2/(expPoly(y)+1)
		x[i], d[i] = c*t, 1-t*t
	}
}

// tanh32 is tanh(x) in float32 through expPoly: 1 − 2/(e^{2x}+1), accurate
// to a few 1e-7 absolute.
func tanh32(x float32) float32 {
	y := 2 * x
	if y > 18 { // tanh(9) is 1 in float32
		return 1
	} else if y < -18 {
		return -1
	} else if y != y {
		return y
	}
	return 1 - 2/(expPoly(y)+1)
}

// logAcc accumulates Σ log(p) over positive normal float64 values with one
// math.Log per call of sum: it multiplies mantissas and adds exponents.
type logAcc struct {
	exp  int
	prod float64 // product of mantissas in [1, 2), renormalised every 32
	n    int
}

const mantMask = 1<<52 - 1

func (a *logAcc) reset() { *a = logAcc{prod: 1} }

// add adds log(p) for a normal p > 0.
func (a *logAcc) add(p float64) {
	b := math.Float64bits(p)
	a.exp += int(b>>52&0x7ff) - 1023
	a.prod *= math.Float64frombits(b&mantMask | 1023<<52)
	if a.n++; a.n == 32 {
		a.norm()
	}
}

func (a *logAcc) norm() {
	b := math.Float64bits(a.prod)
	a.exp += int(b>>52&0x7ff) - 1023
	a.prod = math.Float64frombits(b&mantMask | 1023<<52)
	a.n = 0
}

func (a *logAcc) sum() float64 {
	a.norm()
	return float64(a.exp)*math.Ln2 + math.Log(a.prod)
}
