package cpu

import "math"

// Row kernels of attention's softmax and the loss's exponentials. These are
// the portable Go versions; kern_cgo.go dispatches to AVX2 versions of the
// same arithmetic when the CPU has AVX2 and FMA.

// capRowsGo applies the tanh soft-cap x ← c·tanh(x/c) to every entry and
// stores the derivative 1 − tanh² in d.
func capRowsGo(x, d []float32, c float32) { capRow(x, d, c) }

// softmaxRowsGo turns each row of cols entries of p into a softmax in place;
// −Inf entries get 0, and a row of only −Inf becomes all zeros.
func softmaxRowsGo(p []float32, rows, cols int) {
	negInf := float32(math.Inf(-1))
	for r := range rows {
		row := p[r*cols : (r+1)*cols]
		mx := negInf
		for _, s := range row {
			if s > mx || s != s {
				mx = s
			}
		}
		if mx == negInf {
			clear(row)
			continue
		}
		inv := float32(1 / expShift(row, mx))
		for c := range row {
			row[c] *= inv
		}
	}
}

// expShiftToGo sets y[i] = e^(x[i]−shift) (shift ≥ every x[i]) and returns
// Σ y in float64.
func expShiftToGo(x, y []float32, shift float32) float64 {
	copy(y, x)
	return expShift(y[:len(x)], shift)
}
