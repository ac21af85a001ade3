package cpu

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/difftrain/difftrain/compute"
)

// blasImpl is a row-major single-precision GEMM library.
type blasImpl interface {
	kind() string     // "openblas" or "gonum"
	describe() string // for Name
	// useThreads sets the library's (process-wide) thread count to n
	// unless it already is n.
	useThreads(n int)
	getThreads() int
	// sgemm is C = alpha*op(A)*op(B) + beta*C, row-major, arguments checked.
	sgemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int,
		b []float32, ldb int, beta float32, c []float32, ldc int)
}

var (
	warnOnce    sync.Once // the gonum fallback warning
	infoOnce    sync.Once // the OpenBLAS info line
	coreWarnOne sync.Once // the OPENBLAS_CORETYPE warning
	gonumOnce   sync.Once // the gonum info line
)

// openBLAS picks the GEMM library for Options.BLAS and sets its thread count.
func openBLAS(choice string, threads int) (blasImpl, error) {
	return pickBLAS(choice, threads, loadOpenBLAS)
}

// pickBLAS is openBLAS with the loader as a parameter, for tests.
func pickBLAS(choice string, threads int, load func() (*openblas, error)) (blasImpl, error) {
	switch choice {
	case "", "auto", "openblas":
		ob, err := load()
		if err != nil {
			if choice == "openblas" {
				return nil, fmt.Errorf("%w (install it: apt-get install libopenblas0)", err)
			}
			warnOnce.Do(func() {
				slog.Warn("OpenBLAS not found; GEMM falls back to gonum, several times slower. Install it: apt-get install libopenblas0",
					"err", err)
			})
			return gonumBLAS{}, nil
		}
		infoOnce.Do(func() {
			slog.Info("BLAS", "lib", "openblas", "core", ob.core, "config", ob.config, "threads", threads)
			if ct, ok := os.LookupEnv("OPENBLAS_CORETYPE"); ok {
				coreWarnOne.Do(func() {
					slog.Warn("OPENBLAS_CORETYPE is set and overrides OpenBLAS's CPU detection; it may halve GEMM speed. Unset it unless you know the kernel is right",
						"OPENBLAS_CORETYPE", ct, "core", ob.core)
				})
			}
		})
		return ob, nil
	case "gonum":
		gonumOnce.Do(func() { slog.Info("BLAS", "lib", "gonum", "threads", "GOMAXPROCS") })
		return gonumBLAS{}, nil
	}
	return nil, fmt.Errorf("BLAS %q: want auto, openblas or gonum", choice)
}

// gonumBLAS is gonum's pure-Go Sgemm. It parallelises internally over
// GOMAXPROCS goroutines; the thread setting does not apply to it.
type gonumBLAS struct{}

func (gonumBLAS) kind() string     { return "gonum" }
func (gonumBLAS) describe() string { return "gonum" }
func (gonumBLAS) useThreads(int)   {}
func (gonumBLAS) getThreads() int  { return 1 }

func (gonumBLAS) sgemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	tA, tB := blas.NoTrans, blas.NoTrans
	if ta {
		tA = blas.Trans
	}
	if tb {
		tB = blas.Trans
	}
	gonum.Implementation{}.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// GemmGFLOPS measures single-GEMM throughput of b's BLAS: C[m,n] = A[m,k]·B[k,n]
// repeated reps times after one warm-up, in GFLOP/s (2mnk per product). It
// allocates its own buffers and frees them. It returns 0 when the backend has
// recorded an error.
func GemmGFLOPS(b *Backend, m, n, k, reps int) float64 {
	if m <= 0 || n <= 0 || k <= 0 || reps <= 0 {
		b.fail("GemmGFLOPS", "m, n, k, reps = %d, %d, %d, %d; all must be positive", m, n, k, reps)
		return 0
	}
	x, y, z := b.Alloc(compute.F32, m*k), b.Alloc(compute.F32, k*n), b.Alloc(compute.F32, m*n)
	defer func() { b.Free(x); b.Free(y); b.Free(z) }()
	if b.err != nil {
		return 0
	}
	for i, v := range [][]float32{b.F32(x), b.F32(y)} {
		for j := range v {
			v[j] = float32((j*7+i*3)%13) / 13
		}
	}
	g := compute.Gemm{M: m, N: n, K: k, Alpha: 1, A: x, B: y, C: z}
	b.Gemm(g)
	start := time.Now()
	for range reps {
		b.Gemm(g)
	}
	sec := time.Since(start).Seconds()
	if b.err != nil || sec <= 0 {
		return 0
	}
	return 2 * float64(m) * float64(n) * float64(k) * float64(reps) / sec / 1e9
}
