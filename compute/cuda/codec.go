package cuda

import "math"

// Host versions of the device conversions behind DownloadBF16 and
// DownloadQ8, bit for bit: the gradient codecs can use them for data that
// never was on a GPU, and the tests compare the kernels against them.

// ToBF16 rounds f to bfloat16 (nearest, ties to even) and returns its bits, the
// upper half of a float32. NaN stays a quiet NaN.
func ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// FromBF16 widens bfloat16 bits to float32.
func FromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// QuantizeQ8 quantises x in blocks of block elements: scales[k] =
// max|x|/127 over block k, q[i] = round-half-even(x[i]/scale) clamped to
// ±127, and 0 where the scale is 0 or x/scale is NaN.
func QuantizeQ8(x []float32, block int) (q []int8, scales []float32) {
	if block <= 0 {
		return nil, nil
	}
	q = make([]int8, len(x))
	scales = make([]float32, (len(x)+block-1)/block)
	for k := range scales {
		lo, hi := k*block, min((k+1)*block, len(x))
		var m float32
		for _, v := range x[lo:hi] {
			if a := float32(math.Abs(float64(v))); a > m { // NaN is skipped, as fmaxf does
				m = a
			}
		}
		s := m / 127
		scales[k] = s
		for i := lo; i < hi; i++ {
			if s > 0 {
				r := math.RoundToEven(float64(x[i] / s))
				if r == r { // NaN becomes 0
					q[i] = int8(max(-127, min(127, r)))
				}
			}
		}
	}
	return q, scales
}
