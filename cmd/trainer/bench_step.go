package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/compute/cpu"
	"github.com/difftrain/difftrain/compute/device"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

// benchModel is what the step benchmarks share: the device and the model.
type benchModel struct {
	device, precision, blas   string
	vocab, layers, dim, heads int
	seq                       int
	noise                     string
}

func (m *benchModel) register(fs *pflag.FlagSet) {
	fs.StringVar(&m.device, "device", "cpu", "compute device: "+device.Kinds)
	fs.StringVar(&m.precision, "precision", "fp32", "GEMM precision: "+device.Precisions)
	fs.StringVar(&m.blas, "blas", "auto", "CPU BLAS: auto, openblas or gonum")
	fs.IntVar(&m.vocab, "vocab", 260, "vocabulary size")
	fs.IntVar(&m.layers, "layers", 4, "layers")
	fs.IntVar(&m.dim, "dim", 128, "hidden size")
	fs.IntVar(&m.heads, "heads", 4, "attention heads")
	fs.IntVar(&m.seq, "seq", 128, "sequence length")
	fs.StringVar(&m.noise, "noise", "masked", "noise type")
}

type benchStepFlags struct {
	benchModel
	threads       int
	batch, micro  int
	steps, warmup int
	json          bool
	peakTFLOPS    float64
}

func init() {
	f := &benchStepFlags{}
	cmd := &cobra.Command{
		Use:   "step",
		Short: "Measure training-step throughput (tokens/s, GFLOP/s) against single-GEMM throughput in the same run",
		Long: `bench step times full training steps (noising, forward, fused GIDD loss, backward,
LaProp update) of a model on random tokens, then times one large GEMM on the same
backend, and reports tokens/s, achieved GFLOP/s (FLOPs per token as gidd-spec §9.1:
3·L·(24d² + 4dN + 3HN), forward plus backward, without embeddings) and the ratio of
the two. On CUDA the ratio is the model-FLOPs utilisation against the GEMM peak
measured in the same run (or against --peak-tflops).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runBenchStep(f) },
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0: GOMAXPROCS)")
	fs.IntVar(&f.batch, "batch", 16, "batch size in sequences")
	fs.IntVar(&f.micro, "micro-batch", 0, "micro-batch size (0: the batch)")
	fs.IntVar(&f.steps, "steps", 10, "timed steps")
	fs.IntVar(&f.warmup, "warmup", 2, "untimed steps first (touches every buffer)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object instead of text")
	fs.Float64Var(&f.peakTFLOPS, "peak-tflops", 0, "peak for the utilisation figure (0: the GEMM measured in this run)")
	benchCmd.AddCommand(cmd)
}

// openBench opens the backend for a benchmark; the CPU BLAS can be forced.
func openBench(dev, precision, blas string, threads int) (compute.Backend, error) {
	if dev == "cpu" && blas != "auto" {
		return cpu.New(cpu.Options{Threads: threads, BLAS: blas})
	}
	return device.Open(dev, precision, threads)
}

type benchStepResult struct {
	Backend      string  `json:"backend"`
	Config       string  `json:"config"`
	Threads      int     `json:"threads"`
	TokensPerS   float64 `json:"tokens_per_s"`
	StepS        float64 `json:"step_s"`
	GFLOPS       float64 `json:"gflops"`          // spec §9.1 M (non-embedding) × tokens/s
	GFLOPSWithEm float64 `json:"gflops_with_emb"` // including embedding and head FLOPs
	GemmGFLOPS   float64 `json:"gemm_gflops"`     // one GEMM of the step's largest shape (CPU) or 8192³ (GPU)
	Ratio        float64 `json:"ratio"`           // GFLOPS / GemmGFLOPS (or / peak)
	MFU          float64 `json:"mfu"`             // same as Ratio; named for GPU reports
	Loss         float64 `json:"final_loss"`
}

func runBenchStep(f *benchStepFlags) error {
	if f.vocab < 5 {
		return fmt.Errorf("--vocab %d: need at least 5 (4 special tokens and one more)", f.vocab)
	}
	b, err := openBench(f.device, f.precision, f.blas, f.threads)
	if err != nil {
		return err
	}
	defer b.Close()
	mc := model.Default(f.vocab, f.layers, f.dim, f.heads, f.seq)
	c := train.Default(mc)
	c.Noise, c.Batch, c.MicroBatch = f.noise, f.batch, f.micro
	if c.MicroBatch == 0 {
		c.MicroBatch = f.batch
	}
	c.Steps, c.Warmup = f.steps+f.warmup+1, 1
	tr, err := train.New(b, c)
	if err != nil {
		return err
	}
	defer tr.Close()
	src := dataset.Random{Seq: f.seq, Vocabulary: f.vocab}
	ctx := context.Background()
	var res train.Result
	for s := 0; s < f.warmup; s++ {
		if res, err = tr.Step(ctx, src, int64(s), 0, 1, nil); err != nil {
			return err
		}
	}
	start := time.Now()
	for s := f.warmup; s < f.warmup+f.steps; s++ {
		if res, err = tr.Step(ctx, src, int64(s), 0, 1, nil); err != nil {
			return err
		}
	}
	sec := time.Since(start).Seconds() / float64(f.steps)
	tokens := float64(f.batch * f.seq)
	r := benchStepResult{
		Backend: b.Name(), Threads: f.threads,
		Config:     fmt.Sprintf("vocab %d L%d-d%d-H%d seq %d batch %d", f.vocab, f.layers, f.dim, f.heads, f.seq, f.batch),
		StepS:      sec,
		TokensPerS: tokens / sec,
		Loss:       res.Metrics.Summary(tr.Divisor()).Loss,
	}
	if r.Threads == 0 {
		r.Threads = runtime.GOMAXPROCS(0)
	}
	r.GFLOPS = mc.FLOPsPerToken(false) * r.TokensPerS / 1e9
	r.GFLOPSWithEm = mc.FLOPsPerToken(true) * r.TokensPerS / 1e9
	if f.device == "cpu" || strings.HasPrefix(b.Name(), "cpu") {
		// The step's largest GEMM: the MLP up projection, [T,d]·[d,4d].
		r.GemmGFLOPS = gemmGFLOPS(b, c.MicroBatch*f.seq, 4*f.dim, f.dim, 20)
	} else {
		r.GemmGFLOPS = gemmGFLOPS(b, 8192, 8192, 8192, 20)
	}
	peak := r.GemmGFLOPS
	if f.peakTFLOPS > 0 {
		peak = f.peakTFLOPS * 1e3
	}
	if peak > 0 {
		r.Ratio = r.GFLOPS / peak
		r.MFU = r.Ratio
	}
	if f.json {
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	fmt.Printf("backend      %s (%d threads)\n", r.Backend, r.Threads)
	fmt.Printf("model        %s\n", r.Config)
	fmt.Printf("step         %.4f s   %.0f tokens/s\n", r.StepS, r.TokensPerS)
	fmt.Printf("model FLOPs  %.2f GFLOP/s (spec §9.1 M), %.2f with embeddings\n", r.GFLOPS, r.GFLOPSWithEm)
	fmt.Printf("single GEMM  %.2f GFLOP/s\n", r.GemmGFLOPS)
	fmt.Printf("ratio        %.1f%% of the GEMM\n", 100*r.Ratio)
	return nil
}

// gemmGFLOPS times reps row-major GEMMs of m×k by k×n on any backend.
func gemmGFLOPS(b compute.Backend, m, n, k, reps int) float64 {
	x, y, z := b.Alloc(compute.F32, m*k), b.Alloc(compute.F32, k*n), b.Alloc(compute.F32, m*n)
	defer func() { b.Free(x); b.Free(y); b.Free(z) }()
	host := make([]float32, max(m*k, k*n))
	for i := range host {
		host[i] = float32(i%13) / 13
	}
	b.UploadF32(x, host[:m*k])
	b.UploadF32(y, host[:k*n])
	g := compute.Gemm{M: m, N: n, K: k, Alpha: 1, A: x, B: y, C: z}
	b.Gemm(g)
	if b.Sync() != nil {
		return 0
	}
	start := time.Now()
	for range reps {
		b.Gemm(g)
	}
	if b.Sync() != nil {
		return 0
	}
	return 2 * float64(m) * float64(n) * float64(k) * float64(reps) / time.Since(start).Seconds() / 1e9
}
