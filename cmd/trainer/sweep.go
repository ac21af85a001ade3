package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/difftrain/difftrain/compute/device"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/k8s"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/scaling"
	"github.com/difftrain/difftrain/shard"
	"github.com/difftrain/difftrain/sweep"
	"github.com/difftrain/difftrain/train"
)

var sweepCmd = &cobra.Command{
	Use:   "sweep",
	Short: "Plan and run a scaling-law grid (noise types × model sizes × compute budgets)",
}

type sweepPlanFlags struct {
	noises, shapes, budgets   string
	pmin, pmax                float64
	aspect, headDim           int
	data, laws, config        string
	vocab, seqLen, micro      int
	stepMult, warmupMax       int
	minSteps                  int
	lr, warmupFrac, dmMin     float64
	dmMax, tokensPerS         float64
	seed                      uint64
	dryRun                    bool
	measureSteps, measureRuns int
}

func init() {
	f := &sweepPlanFlags{}
	plan := &cobra.Command{
		Use:   "plan SWEEP_DIR",
		Short: "Plan a compute-optimal grid: one config per run and a sweep manifest",
		Long: `plan lays out every run of noise types × model shapes × compute budgets C
(gidd-spec §9): M, the non-embedding FLOPs per token (§9.1); D = C/M tokens; the
batch from the batch law B* ∝ D^0.82 (§9.3, per noise type), rounded to the
micro-batch; the steps that reach D; the base LR from η* ∝ B^0.34 (§9.4, per noise
type; CompleteP transfers it across widths); warmup; no cooldown (§9.6, as the
paper's sweeps). The laws default to the paper's and can be replaced per noise
type with --laws FILE (JSON or YAML: {"batch": {"masked": {"slope": .., "intercept": ..}}, "lr": {..}},
natural-log intercepts, B in tokens). Shapes are --shapes L2-d64-H1,... or every
shape of the paper's width/depth ladder (d = 64·L) with --params-min..--params-max
non-embedding parameters. It prints the grid with estimated hours (at --tokens-per-s,
or measured here with a few steps of each shape) and writes SWEEP_DIR/sweep.json and
SWEEP_DIR/runs/NAME/config.json. Runs with D/M outside --dm-min..--dm-max or too
few steps are flagged, not dropped.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runSweepPlan(cmd, f, args[0]) },
	}
	fs := plan.Flags()
	fs.StringVar(&f.noises, "noise", "masked,uniform", "noise types, comma-separated")
	fs.StringVar(&f.shapes, "shapes", "", "model shapes L<layers>-d<width>[-H<heads>], comma-separated")
	fs.Float64Var(&f.pmin, "params-min", 0, "without --shapes: smallest non-embedding parameter count on the ladder")
	fs.Float64Var(&f.pmax, "params-max", 0, "without --shapes: largest non-embedding parameter count on the ladder")
	fs.IntVar(&f.aspect, "aspect", 64, "ladder width per layer (d = aspect·L; the paper's 64)")
	fs.IntVar(&f.headDim, "head-dim", 64, "head dimension when a shape gives no heads")
	fs.StringVar(&f.budgets, "budgets", "", "compute budgets C in FLOPs, comma-separated (e.g. 1e14,3e14,1e15)")
	fs.StringVar(&f.data, "data", "", "dataset directory (vocabulary and sequence length; the runs train on it)")
	fs.IntVar(&f.vocab, "vocab", 0, "vocabulary size (default: the dataset's)")
	fs.IntVar(&f.seqLen, "seq-len", 0, "sequence length N (default: the dataset's)")
	fs.IntVar(&f.micro, "micro-batch", 4, "micro-batch in sequences; batches are multiples of it")
	fs.IntVar(&f.stepMult, "step-multiple", 1, "round steps up to a multiple of this")
	fs.StringVar(&f.laws, "laws", "", "planning laws file (JSON or YAML) replacing the paper's, per noise type")
	fs.StringVar(&f.config, "config", "", "base train config file for everything the plan does not set")
	fs.Float64Var(&f.lr, "lr", 0, "base LR for every run (0: the LR law)")
	fs.Float64Var(&f.warmupFrac, "warmup-frac", 0.05, "warmup as a share of the steps")
	fs.IntVar(&f.warmupMax, "warmup-max", 2000, "at most this many warmup steps (the paper's 2000)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of every run")
	fs.Float64Var(&f.dmMin, "dm-min", 0.5, "flag runs with D/M below this")
	fs.Float64Var(&f.dmMax, "dm-max", 500, "flag runs with D/M above this")
	fs.IntVar(&f.minSteps, "min-steps", 100, "flag runs with fewer steps")
	fs.Float64Var(&f.tokensPerS, "tokens-per-s", 0, "throughput for the time estimate (0: measure each shape here)")
	fs.IntVar(&f.measureSteps, "measure-steps", 3, "timed steps per shape when measuring")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the grid, write nothing")
	sweepCmd.AddCommand(plan)

	var ro sweep.RunOptions
	var threads int
	var k8sOn bool
	var k8sBase, k8sOut string
	run := &cobra.Command{
		Use:   "run SWEEP_DIR",
		Short: "Train every planned run of a sweep that is not finished, K at a time",
		Long: `run trains the sweep's runs as child processes (` + "`trainer train`" + ` in
SWEEP_DIR/runs/NAME, output in train.log there), -j at a time. A run that reached
its planned steps is never started again; one that was interrupted resumes from its
newest checkpoint. Ctrl-C stops every run cleanly (each checkpoints); run the same
command again to go on. A progress line is printed every --progress-every.

With --k8s it trains nothing here: it renders, for each run not done, a ConfigMap
with its config and a one-pod Indexed Job made from the trainer Job of --k8s-base,
into --k8s-out (default SWEEP_DIR/k8s) with a kustomization.yaml, for
` + "`kubectl apply -k`" + ` next to the base deployment (its volume and dataset). The
runs write under /data/sweeps/SWEEP/NAME there.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("sweep run: the trainer binary: %w", err)
			}
			if k8sOn {
				if k8sOut == "" {
					k8sOut = filepath.Join(args[0], "k8s")
				}
				files, err := sweep.RenderK8s(args[0], k8sBase, k8sOut)
				for _, f := range files {
					fmt.Fprintln(cmd.OutOrStdout(), f)
				}
				return err
			}
			ro.Bin, ro.Progress = bin, cmd.OutOrStdout()
			if threads > 0 {
				ro.Extra = append(ro.Extra, "--threads", fmt.Sprint(threads))
			}
			ctx, stop := signalContext()
			defer stop()
			return sweep.Run(ctx, args[0], ro)
		},
	}
	rf := run.Flags()
	rf.IntVarP(&ro.Jobs, "jobs", "j", 1, "runs at a time")
	rf.StringVar(&ro.Data, "data", "", "dataset directory (default: the one planned with)")
	rf.IntVar(&ro.CheckpointEvery, "checkpoint-every", 100, "checkpoint each run every K steps")
	rf.IntVar(&threads, "threads", 0, "CPU threads per run (0: all cores; with -j K, cores/K is sensible)")
	rf.DurationVar(&ro.Every, "progress-every", 30*time.Second, "interval of the progress line")
	rf.BoolVar(&k8sOn, "k8s", false, "render Kubernetes Jobs for the runs instead of training here")
	rf.StringVar(&k8sBase, "k8s-base", filepath.Join(k8s.Dir(), "overlays", "cpu"), "kustomization whose trainer Job the runs' Jobs copy")
	rf.StringVar(&k8sOut, "k8s-out", "", "directory for the rendered manifests (default SWEEP_DIR/k8s)")
	sweepCmd.AddCommand(run)

	var eo sweep.EvalOptions
	var evalData string
	var evalThreads int
	ev := &cobra.Command{
		Use:   "eval SWEEP_DIR",
		Short: "Evaluate each finished run's final checkpoint on held-out data, for `fit --loss val`",
		Long: `eval measures every finished run of a sweep on the same held-out sequences:
the training ELBO estimator (gidd-spec §2.6, as ` + "`trainer eval`" + ` prints it) of its
final checkpoint over --sequences sequences of --split (0: all of them), with the
noise draws of --seed, so every run sees the same tokens and the same noise. It
writes SWEEP_DIR/runs/NAME/eval.json; runs that already have one for the same
split, sequences, seed and final step are not evaluated again (--force does).
` + "`trainer fit --loss val`" + ` then fits these losses instead of the last EMA of the
training ELBO, whose batch-to-batch noise at small batches is as large as the
differences between sizes on an iso-FLOP curve.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if eo.Spec.Sequences < 0 || evalThreads < 0 {
				return fmt.Errorf("sweep eval: --sequences %d and --threads %d must be >= 0", eo.Spec.Sequences, evalThreads)
			}
			data := evalData
			if data == "" {
				m, err := sweep.Load(args[0])
				if err != nil {
					return err
				}
				data = m.Data
			}
			if data == "" {
				return fmt.Errorf("sweep eval %s: no dataset (give --data)", args[0])
			}
			eo.Eval = func(ctx context.Context, runDir string, sp sweep.EvalSpec) (sweep.EvalResult, error) {
				return evalRun(runDir, data, sp, evalThreads)
			}
			ctx, stop := signalContext()
			defer stop()
			n, pending, err := sweep.Eval(ctx, args[0], eo)
			fmt.Fprintf(cmd.OutOrStdout(), "sweep eval: %d runs evaluated, %d not finished\n", n, pending)
			return err
		},
	}
	ef := ev.Flags()
	ef.StringVar(&evalData, "data", "", "dataset directory (default: the one planned with)")
	ef.StringVar(&eo.Spec.Split, "split", "val", "dataset split")
	ef.Int64Var(&eo.Spec.Sequences, "sequences", 0, "sequences to evaluate (0: the whole split)")
	ef.Uint64Var(&eo.Spec.Seed, "seed", 1, "seed of the sequence order")
	ef.IntVarP(&eo.Jobs, "jobs", "j", 1, "runs at a time")
	ef.IntVar(&evalThreads, "threads", 1, "CPU threads per evaluation (0: all cores)")
	ef.BoolVar(&eo.Force, "force", false, "evaluate runs again that already have a result")
	sweepCmd.AddCommand(ev)
	root.AddCommand(sweepCmd)
}

// evalRun is the training-ELBO estimate of ` + "`trainer eval`" + ` for the newest
// checkpoint of a run directory: sequences [0, n) of the split, noised as
// positions far from any training step.
func evalRun(runDir, data string, sp sweep.EvalSpec, threads int) (sweep.EvalResult, error) {
	res := sweep.EvalResult{EvalSpec: sp}
	st, err := loadCheckpoint(filepath.Join(runDir, "checkpoints"))
	if err != nil {
		return res, err
	}
	var cfg train.Config
	if err := json.Unmarshal(st.Config, &cfg); err != nil {
		return res, fmt.Errorf("checkpoint %s: config: %w", st.Dir, err)
	}
	b, err := device.Open("auto", "fp32", threads)
	if err != nil {
		return res, err
	}
	defer b.Close()
	src, err := dataset.Open(context.Background(), dataset.Options{Dir: data, Split: sp.Split, Seed: sp.Seed})
	if err != nil {
		return res, err
	}
	defer src.Close()
	cfg.Batch, cfg.MicroBatch = 32, 32
	tr, err := train.New(b, cfg)
	if err != nil {
		return res, err
	}
	defer tr.Close()
	if err := setParams(tr.Model, st); err != nil {
		return res, err
	}
	n := src.Len()
	if sp.Sequences > 0 {
		if sp.Sequences > n {
			return res, fmt.Errorf("sweep eval: --sequences %d, the %s split of %s has %d", sp.Sequences, sp.Split, data, n)
		}
		n = sp.Sequences
	}
	const far = 1 << 40
	mt, err := tr.Evaluate(offsetSource{src, far}, far, far+n)
	if err != nil {
		return res, err
	}
	res.Step, res.Elbo = st.Step, mt.Summary(1).Elbo
	return res, nil
}

func runSweepPlan(cmd *cobra.Command, f *sweepPlanFlags, dir string) error {
	p := scaling.PlanSpec{SeqLen: f.seqLen, MicroBatch: f.micro, StepMultiple: f.stepMult, LR: f.lr,
		WarmupFrac: f.warmupFrac, WarmupMax: f.warmupMax, Seed: f.seed, DMMin: f.dmMin, DMMax: f.dmMax, MinSteps: f.minSteps}
	vocab := f.vocab
	if f.data != "" {
		man, err := shard.ReadManifest(f.data)
		if err != nil {
			return fmt.Errorf("sweep plan --data: %w", err)
		}
		vocab = orData(vocab, man.Vocab)
		p.SeqLen = orData(p.SeqLen, man.SeqLen)
	}
	if vocab <= 0 || p.SeqLen <= 0 {
		return fmt.Errorf("sweep plan: need the vocabulary and sequence length: --data DIR, or --vocab and --seq-len")
	}
	for _, n := range strings.Split(f.noises, ",") {
		if n = strings.TrimSpace(n); n != "" {
			p.Noises = append(p.Noises, n)
		}
	}
	var err error
	if p.Budgets, err = scaling.ParseFLOPs(f.budgets); err != nil {
		return fmt.Errorf("--budgets: %w", err)
	}
	if p.Shapes, err = planShapes(f); err != nil {
		return err
	}
	p.Laws = scaling.PaperLaws()
	if f.laws != "" {
		if p.Laws, err = scaling.LoadLaws(f.laws); err != nil {
			return err
		}
	}
	base := train.Default(model.Default(0, 1, 2, 1, 0))
	base.Model.Vocab = 0 // the plan's shape, and the model defaults, unless --config brings others
	if f.config != "" {
		raw, err := os.ReadFile(f.config)
		if err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &base); err != nil {
			return fmt.Errorf("--config %s: %w", f.config, err)
		}
		base.Model.Vocab = max(base.Model.Vocab, 1)
	}
	runs, err := scaling.Plan(p)
	if err != nil {
		return err
	}
	data := f.data
	if data != "" {
		if data, err = filepath.Abs(data); err != nil {
			return fmt.Errorf("sweep plan --data: %w", err)
		}
	}
	m := &sweep.Manifest{Created: time.Now().UTC(), Data: data, Vocab: vocab, SeqLen: p.SeqLen, Laws: p.Laws, Runs: runs,
		TokensPerS: map[string]float64{}}
	for _, s := range p.Shapes {
		tps := f.tokensPerS
		if tps == 0 {
			if tps, err = measureTokensPerS(cmd.Context(), s, vocab, p.SeqLen, f.micro, f.measureSteps); err != nil {
				return fmt.Errorf("sweep plan: measuring %s: %w", s, err)
			}
		}
		m.TokensPerS[s.String()] = tps
	}
	m.PrintTable(cmd.OutOrStdout())
	if f.dryRun {
		return nil
	}
	if err := sweep.Create(dir, m, base); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "planned %s; run it with `trainer sweep run %s`\n", dir, dir)
	return nil
}

// orData is the flag's value when set, else the dataset's.
func orData(flag, data int) int {
	if flag > 0 {
		return flag
	}
	return data
}

func planShapes(f *sweepPlanFlags) ([]scaling.Shape, error) {
	if f.shapes == "" {
		if f.pmax <= 0 {
			return nil, fmt.Errorf("sweep plan: give --shapes or a parameter range --params-min/--params-max")
		}
		return scaling.Ladder(int64(f.pmin), int64(f.pmax), f.aspect, f.headDim)
	}
	var out []scaling.Shape
	for _, s := range strings.Split(f.shapes, ",") {
		sh, err := scaling.ParseShape(s, f.headDim)
		if err != nil {
			return nil, fmt.Errorf("--shapes: %w", err)
		}
		out = append(out, sh)
	}
	return out, nil
}

// measureTokensPerS times a few training steps of one micro-batch of the
// shape on random tokens, as `bench step` does.
func measureTokensPerS(ctx context.Context, s scaling.Shape, vocab, seq, micro, steps int) (float64, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	b, err := device.Open("auto", "fp32", 0)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	c := train.Default(model.Default(vocab, s.Layers, s.Dim, s.Heads, seq))
	c.Batch, c.MicroBatch, c.Steps, c.Warmup = micro, micro, steps+2, 1
	tr, err := train.New(b, c)
	if err != nil {
		return 0, err
	}
	defer tr.Close()
	src := dataset.Random{Seq: seq, Vocabulary: vocab}
	var start time.Time
	for i := range steps + 1 {
		if i == 1 {
			start = time.Now() // the first step touches every buffer
		}
		if _, err := tr.Step(ctx, src, int64(i), 0, 1, nil); err != nil {
			return 0, err
		}
	}
	return float64(steps*micro*seq) / time.Since(start).Seconds(), nil
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
