//go:build !cgo || !amd64

package cpu

// Without cgo, or off amd64, the Go kernels are the only ones.

const simdKernels = "go"

func capRows(x, d []float32, c float32)                { capRowsGo(x, d, c) }
func softmaxRows(p []float32, rows, cols int)          { softmaxRowsGo(p, rows, cols) }
func expShiftTo(x, y []float32, shift float32) float64 { return expShiftToGo(x, y, shift) }

func (j *optJob) simd(lo, hi int) bool { return false }
