package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/difftrain/difftrain/compute/cpu"
)

// benchGemmCmd measures single-GEMM throughput of the CPU backend's BLAS.
var benchGemmCmd = &cobra.Command{
	Use:   "gemm",
	Short: "Measure GEMM GFLOP/s of OpenBLAS and gonum at given thread counts",
	Long: `gemm times C[m,n] = A[m,k]·B[k,n] on the CPU backend and prints GFLOP/s for each
BLAS library and thread count. The default shape is the largest GEMM of an L8-d512
training step (1024 tokens x 512 -> 2048). Unset OPENBLAS_CORETYPE for a fair figure.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runBenchGemm(cmd, benchGemm)
	},
}

// benchGemmOpts are the flags of `trainer bench gemm`.
type benchGemmOpts struct {
	threads []int
	blas    string
	m, n, k int
	reps    int
}

var benchGemm benchGemmOpts

func init() {
	f := benchGemmCmd.Flags()
	f.IntSliceVar(&benchGemm.threads, "threads", []int{2}, "thread counts to measure (comma-separated)")
	f.StringVar(&benchGemm.blas, "blas", "both", "BLAS to measure: auto, openblas, gonum or both")
	f.IntVar(&benchGemm.m, "m", 1024, "rows of A and C (tokens)")
	f.IntVar(&benchGemm.n, "n", 2048, "columns of B and C")
	f.IntVar(&benchGemm.k, "k", 512, "columns of A, rows of B")
	f.IntVar(&benchGemm.reps, "reps", 20, "timed repetitions per measurement")
	benchCmd.AddCommand(benchGemmCmd)
}

func runBenchGemm(cmd *cobra.Command, o benchGemmOpts) error {
	if o.m <= 0 || o.n <= 0 || o.k <= 0 || o.reps <= 0 {
		return fmt.Errorf("--m, --n, --k and --reps must be positive (got %d, %d, %d, %d)", o.m, o.n, o.k, o.reps)
	}
	var libs []string
	switch o.blas {
	case "both":
		libs = []string{"openblas", "gonum"}
	case "auto", "openblas", "gonum":
		libs = []string{o.blas}
	default:
		return fmt.Errorf("--blas %q: want auto, openblas, gonum or both", o.blas)
	}
	if len(o.threads) == 0 {
		return fmt.Errorf("--threads: give at least one thread count")
	}
	for _, t := range o.threads {
		if t <= 0 {
			return fmt.Errorf("--threads %d: must be positive", t)
		}
	}
	if ct, ok := os.LookupEnv("OPENBLAS_CORETYPE"); ok {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: OPENBLAS_CORETYPE=%s is set; OpenBLAS may run at half speed\n", ct)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "GEMM %d x %d x %d (M x N x K), %d reps, %.2f GFLOP per product\n",
		o.m, o.n, o.k, o.reps, 2*float64(o.m)*float64(o.n)*float64(o.k)/1e9)
	fmt.Fprintf(out, "%-54s %8s %10s\n", "blas", "threads", "GFLOP/s")
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	got := map[string]map[int]float64{}
	for _, lib := range libs {
		got[lib] = map[int]float64{}
		for _, t := range o.threads {
			// gonum splits work over GOMAXPROCS goroutines; pin it to t so
			// that its thread count means the same as OpenBLAS's.
			runtime.GOMAXPROCS(t)
			b, err := cpu.New(cpu.Options{Threads: t, BLAS: lib})
			if err != nil {
				return fmt.Errorf("bench gemm: %w", err)
			}
			g := cpu.GemmGFLOPS(b, o.m, o.n, o.k, o.reps)
			err = b.Err()
			name := b.Name()
			b.Close()
			if err != nil {
				return fmt.Errorf("bench gemm %s: %w", lib, err)
			}
			fmt.Fprintf(out, "%-54s %8d %10.1f\n", name, t, g)
			got[lib][t] = g
		}
	}
	if len(libs) == 2 {
		for _, t := range o.threads {
			if g := got["gonum"][t]; g > 0 {
				fmt.Fprintf(out, "openblas/gonum at %d threads: %.1fx\n", t, got["openblas"][t]/g)
			}
		}
	}
	return nil
}
