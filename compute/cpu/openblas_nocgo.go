//go:build !cgo

package cpu

import "errors"

// Without cgo OpenBLAS cannot be loaded; New falls back to gonum.
type openblas struct{ core, config string }

func loadOpenBLAS() (*openblas, error) {
	return nil, errors.New("load OpenBLAS: binary built without cgo (CGO_ENABLED=0)")
}

func (o *openblas) kind() string     { return "openblas" }
func (o *openblas) describe() string { return "OpenBLAS" }
func (o *openblas) useThreads(n int) {}
func (o *openblas) getThreads() int  { return 1 }
func (o *openblas) sgemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
}
