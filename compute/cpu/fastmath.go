package cpu

import "math"

// exp32 is e^x in float32 to about 1 ulp (the Cephes expf polynomial), three
// times cheaper than math.Exp. It returns 0 below −87.3 (where e^x is
// subnormal), +Inf above 88.7 and NaN for NaN.
func exp32(x float32) float32 {
	switch {
	case x != x:
		return x
	case x > 88.72283:
		return float32(math.Inf(1))
	case x < -87.33654:
		return 0
	}
	fx := x*1.44269504088896341 + 0.5
	n := float32(int32(fx)) // floor(fx): truncate, then step down below zero
	if n > fx {
		n--
	}
	r := x - n*0.693359375 + n*2.12194440e-4
	z := r * r
	y := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	y = y*z + r + 1
	k := int32(n)
	if k > 127 { // 2^128 is not a float32; scale in two steps
		return 2 * y * math.Float32frombits(uint32(k+126)<<23)
	}
	return y * math.Float32frombits(uint32(k+127)<<23)
}

// tanh32 is tanh(x) in float32 through exp32: 1 − 2/(e^{2x}+1), accurate
// to a few 1e-7 absolute.
func tanh32(x float32) float32 {
	if x > 9 {
		return 1
	}
	if x < -9 {
		return -1
	}
	return 1 - 2/(exp32(2*x)+1)
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
