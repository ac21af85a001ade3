package main

// `trainer bench overlap`: the share of the communication of a training step
// that the bucketed allreduce hides behind the backward pass. World-size
// separate processes on 127.0.0.1 run the same full training steps three
// ways: without communication (compute), with the allreduce started after
// backward (serial) and with buckets reduced as backward produces them
// (overlap). The hidden worker is bench overlap-worker
// (train/overlapbench).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/train/overlapbench"
)

type benchOverlapFlags struct {
	benchModel
	world           int
	threads         int
	batch, micro    int
	steps, warmup   int
	codec           string
	psgdRank        int
	bucketMiB       float64
	deadline        time.Duration
	json            bool
	linkRate, delay string
}

func init() {
	f := &benchOverlapFlags{}
	cmd := &cobra.Command{
		Use:   "overlap",
		Short: "Measure how much of the gradient allreduce the overlap with backward hides",
		Long: `overlap runs --world separate processes on 127.0.0.1 (or, with --link-rate, in network
namespaces joined by links shaped with tc), each a ring member over gRPC
with its share of the CPU (--threads, default NumCPU/world, sets the backend's
kernel and BLAS threads and GOMAXPROCS together), and times full training steps
(noising, forward, loss, backward, allreduce, LaProp update) on random tokens in
three modes, all members running the same mode at once:

  compute  no communication: gradients stay local
  serial   the allreduce starts only once backward has finished
  overlap  each bucket (--bucket-mib) is reduced as soon as backward has
           produced it, as in training

A step's time is the max over members of the step after a barrier; each mode
reports the median of --steps steps after --warmup untimed rounds, the modes
taking turns step by step. From the medians: comm total = serial - compute,
comm exposed = overlap - compute, hidden share = 1 - exposed/total. The share is
withheld when comm total is within twice its standard error. --batch is the
global batch, split over the members.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBenchOverlap(cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&f.world, "world", 2, "ring members (separate processes)")
	f.register(fs)
	fs.IntVar(&f.threads, "threads", 0, "CPU threads and GOMAXPROCS per member (0: max(1, NumCPU/world))")
	fs.IntVar(&f.batch, "batch", 16, "global batch in sequences, split over the members")
	fs.IntVar(&f.micro, "micro-batch", 0, "micro-batch size (0: a member's whole share)")
	fs.IntVar(&f.steps, "steps", 10, "timed steps per mode")
	fs.IntVar(&f.warmup, "warmup", 2, "untimed rounds of all three modes first")
	fs.StringVar(&f.codec, "codec", allreduce.CodecNone, "gradient codec: "+strings.Join(allreduce.Codecs, ", "))
	fs.IntVar(&f.psgdRank, "powersgd-rank", 4, "rank of --codec powersgd")
	fs.Float64Var(&f.bucketMiB, "bucket-mib", 25, "allreduce bucket size in MiB of fp32 (0: one bucket for the whole gradient)")
	fs.DurationVar(&f.deadline, "deadline", 60*time.Second, "allreduce deadline for a silent peer")
	fs.BoolVar(&f.json, "json", false, "print one JSON object instead of the table")
	fs.StringVar(&f.linkRate, "link-rate", "", "run the members in network namespaces with links shaped to this tc rate (e.g. 1gbit); needs root")
	fs.StringVar(&f.delay, "delay", "", "with --link-rate: one-way delay per link (e.g. 0.2ms; needs the netem qdisc)")
	benchCmd.AddCommand(cmd)

	worker := &cobra.Command{
		Use: "overlap-worker", Hidden: true, Args: cobra.NoArgs,
		Short: "one member of `bench overlap` (reads its plan on stdin)",
	}
	listen := worker.Flags().String("listen", "127.0.0.1:0", "address to listen on")
	worker.RunE = func(cmd *cobra.Command, args []string) error {
		open := func(p overlapbench.Plan) (compute.Backend, error) {
			return openBench(p.Device, p.Precision, p.BLAS, p.Threads)
		}
		return overlapbench.Worker(*listen, open, os.Stdin, os.Stdout)
	}
	benchCmd.AddCommand(worker)
}

// overlapMode is one mode's row: times in milliseconds, medians over the
// timed steps of the max over members.
type overlapMode struct {
	Mode      string    `json:"mode"`
	MedianMS  float64   `json:"median_ms"`
	SEMS      float64   `json:"se_ms"`      // standard error of the median, from the spread
	ComputeMS float64   `json:"compute_ms"` // forward, loss, backward, optimizer
	WaitMS    float64   `json:"wait_ms"`    // waiting for the gradient sum after backward
	WireMiB   float64   `json:"wire_mib"`   // gradient bytes a member sent per step (mean over members)
	StepsMS   []float64 `json:"steps_ms"`
}

type benchOverlapResult struct {
	World      int           `json:"world"`
	Network    string        `json:"network"`
	Backend    string        `json:"backend"`
	Threads    int           `json:"threads"`
	GOMAXPROCS int           `json:"gomaxprocs"`
	Config     string        `json:"config"`
	Codec      string        `json:"codec"`
	PSGDRank   int           `json:"powersgd_rank,omitempty"`
	BucketMiB  float64       `json:"bucket_mib"`
	Buckets    int           `json:"buckets"`
	GradMiB    float64       `json:"grad_mib"`
	Steps      int           `json:"steps"`
	Warmup     int           `json:"warmup"`
	Modes      []overlapMode `json:"modes"`
	TotalMS    float64       `json:"comm_total_ms"` // serial - compute
	TotalSEMS  float64       `json:"comm_total_se_ms"`
	ExposedMS  float64       `json:"comm_exposed_ms"` // overlap - compute
	ExposedSE  float64       `json:"comm_exposed_se_ms"`
	SlowdownMS float64       `json:"overlap_compute_slowdown_ms"` // overlap's compute_ms - compute's: backward slowed by the communication beside it
	Hidden     *float64      `json:"hidden_share"`                // 1 - exposed/total clamped to [0, 1]; null within noise
	HiddenRaw  float64       `json:"hidden_share_raw"`            // unclamped
	Note       string        `json:"note,omitempty"`
}

func (f *benchOverlapFlags) validate() error {
	switch {
	case f.world < 2 || f.world > 64:
		return fmt.Errorf("--world %d: need 2 to 64 members (one process each)", f.world)
	case !slices.Contains(allreduce.Codecs, f.codec):
		return fmt.Errorf("--codec %q: unknown codec (want one of %s)", f.codec, strings.Join(allreduce.Codecs, ", "))
	case f.psgdRank < 1:
		return fmt.Errorf("--powersgd-rank %d: want at least 1", f.psgdRank)
	case f.steps < 1:
		return fmt.Errorf("--steps %d: need at least 1 timed step", f.steps)
	case f.warmup < 0:
		return fmt.Errorf("--warmup %d: must not be negative", f.warmup)
	case f.threads < 0:
		return fmt.Errorf("--threads %d: must not be negative", f.threads)
	case f.bucketMiB < 0 || math.IsNaN(f.bucketMiB) || math.IsInf(f.bucketMiB, 0):
		return fmt.Errorf("--bucket-mib %v: must be 0 (one bucket) or positive", f.bucketMiB)
	case f.bucketMiB > 0 && f.bucketMiB*(1<<20) < 4:
		return fmt.Errorf("--bucket-mib %v: smaller than one float32", f.bucketMiB)
	case f.deadline <= 0:
		return fmt.Errorf("--deadline %v: must be positive", f.deadline)
	case f.blas != "auto" && f.blas != "openblas" && f.blas != "gonum":
		return fmt.Errorf("--blas %q: want auto, openblas or gonum", f.blas)
	case f.delay != "" && f.linkRate == "":
		return errors.New("--delay needs --link-rate")
	}
	return nil
}

func runBenchOverlap(stdout, stderr io.Writer, f *benchOverlapFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	tc, err := overlapbench.Config(f.vocab, f.layers, f.dim, f.heads, f.seq, f.batch, f.micro, f.world, f.noise)
	if err != nil {
		return fmt.Errorf("bench overlap: %w", err)
	}
	threads := f.threads
	if threads == 0 {
		threads = max(1, runtime.NumCPU()/f.world)
	}
	if ct, ok := os.LookupEnv("OPENBLAS_CORETYPE"); ok {
		fmt.Fprintf(stderr, "warning: OPENBLAS_CORETYPE=%s is set; OpenBLAS may run at half speed\n", ct)
	}
	if f.world*threads > runtime.NumCPU() {
		fmt.Fprintf(stderr, "warning: %d members x %d threads exceed the %d CPUs; the members will preempt each other\n",
			f.world, threads, runtime.NumCPU())
	}
	e, done, err := benchEnv("dtov", f.world, f.linkRate, f.delay)
	if err != nil {
		return fmt.Errorf("bench overlap: %w", err)
	}
	defer done()
	plan := overlapbench.Plan{
		Device: f.device, Precision: f.precision, BLAS: f.blas, Threads: threads,
		Train: tc, Steps: f.steps, Warmup: f.warmup, Codec: f.codec,
		Bucket: int(f.bucketMiB * (1 << 20)), Deadline: f.deadline, PowerSGDRank: f.psgdRank,
	}
	reps, err := runOverlapWorkers(e, f.world, threads, plan)
	if err != nil {
		return fmt.Errorf("bench overlap: %w", err)
	}
	r, err := summarizeOverlap(f, tc.MicroBatch, reps)
	if err != nil {
		return fmt.Errorf("bench overlap: %w", err)
	}
	r.Network = "127.0.0.1"
	if e.lab != nil {
		r.Network = fmt.Sprintf("network namespaces, links shaped to %s", f.linkRate)
		if f.delay != "" {
			r.Network += ", delay " + f.delay
		}
	}
	if f.json {
		return json.NewEncoder(stdout).Encode(r)
	}
	printOverlap(stdout, r)
	return nil
}

// runOverlapWorkers starts the members, hands them the plan and collects
// their reports.
func runOverlapWorkers(e env, world, threads int, plan overlapbench.Plan) ([]overlapbench.Report, error) {
	procs, members, err := startMembers(world, func(i int) *exec.Cmd {
		cmd := e.command(i, "--log-level", logLevel, "bench", "overlap-worker", "--listen", e.host(i)+":0")
		cmd.Env = overlapWorkerEnv(threads)
		return cmd
	})
	if err != nil {
		return nil, err
	}
	defer stopAll(procs)
	plan.Members = members
	for i, p := range procs {
		plan.Rank = i
		b, err := json.Marshal(plan)
		if err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		if _, err := fmt.Fprintf(p.in, "%s\n", b); err != nil {
			return nil, fmt.Errorf("worker %d: send plan: %w", i, err)
		}
	}
	// The first error ends the run: the other members would otherwise wait
	// for it in a barrier until the deadline.
	reps := make([]overlapbench.Report, world)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for i, p := range procs {
		wg.Go(func() {
			l, err := p.line()
			if err == nil {
				err = json.Unmarshal([]byte(l), &reps[i])
			}
			if err == nil && reps[i].Err != "" {
				err = errors.New(reps[i].Err)
			}
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if first == nil {
				first = fmt.Errorf("worker %d: %w", i, err)
				for _, q := range procs {
					q.cmd.Process.Kill()
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return reps, nil
}

// overlapWorkerEnv is the members' environment: GOMAXPROCS sized with the
// backend's threads, and no inherited OPENBLAS_NUM_THREADS, which would make
// OpenBLAS start threads of its own beyond the member's share (without it
// the backend grows OpenBLAS's pool to exactly its threads).
func overlapWorkerEnv(threads int) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "GOMAXPROCS=") || strings.HasPrefix(kv, "OPENBLAS_NUM_THREADS=")
	})
	return append(env, "GOMAXPROCS="+strconv.Itoa(threads))
}

// summarizeOverlap takes the max over members of each step and the medians.
func summarizeOverlap(f *benchOverlapFlags, micro int, reps []overlapbench.Report) (benchOverlapResult, error) {
	r0 := reps[0]
	r := benchOverlapResult{
		World: f.world, Backend: r0.Backend, Threads: r0.Threads, GOMAXPROCS: r0.GOMAXPROCS,
		Config: fmt.Sprintf("vocab %d L%d-d%d-H%d seq %d, global batch %d (%d per member, micro-batch %d)",
			f.vocab, f.layers, f.dim, f.heads, f.seq, f.batch, f.batch/f.world, micro),
		Codec: f.codec, BucketMiB: f.bucketMiB, Buckets: r0.Buckets,
		GradMiB: float64(r0.Params) * 4 / (1 << 20), Steps: f.steps, Warmup: f.warmup,
	}
	if f.codec == allreduce.CodecPowerSGD {
		r.PSGDRank = f.psgdRank
	}
	med := map[string]overlapMode{}
	for k, m := range overlapbench.Modes {
		row := overlapMode{Mode: m}
		var step, comp, wait []float64
		for i, rep := range reps {
			if rep.Params != r0.Params || rep.Buckets != r0.Buckets || len(rep.Modes) != len(overlapbench.Modes) {
				return r, fmt.Errorf("worker %d disagrees with worker 0 on the gradient or the modes", i)
			}
			res := rep.Modes[k]
			if res.Mode != m || len(res.Step) != f.steps || len(res.Compute) != f.steps || len(res.Wait) != f.steps {
				return r, fmt.Errorf("worker %d: mode %q with %d steps, want %q with %d", i, res.Mode, len(res.Step), m, f.steps)
			}
			step = maxInto(step, res.Step)
			comp = maxInto(comp, res.Compute)
			wait = maxInto(wait, res.Wait)
			row.WireMiB += float64(res.Wire) / (1 << 20) / float64(len(reps))
		}
		for _, s := range step {
			row.StepsMS = append(row.StepsMS, s*1e3)
		}
		row.MedianMS = median(row.StepsMS)
		row.SEMS = seMedian(row.StepsMS)
		row.ComputeMS = median(comp) * 1e3
		row.WaitMS = median(wait) * 1e3
		med[m] = row
		r.Modes = append(r.Modes, row)
	}
	c, s, o := med[overlapbench.ModeCompute], med[overlapbench.ModeSerial], med[overlapbench.ModeOverlap]
	r.TotalMS, r.TotalSEMS = s.MedianMS-c.MedianMS, math.Hypot(s.SEMS, c.SEMS)
	r.ExposedMS, r.ExposedSE = o.MedianMS-c.MedianMS, math.Hypot(o.SEMS, c.SEMS)
	r.SlowdownMS = o.ComputeMS - c.ComputeMS
	r.HiddenRaw = 1 - r.ExposedMS/r.TotalMS
	switch {
	case r.TotalMS <= 2*r.TotalSEMS:
		r.Note = fmt.Sprintf("comm total %.2f ms is within noise (2 x se = %.2f ms): no hidden share", r.TotalMS, 2*r.TotalSEMS)
	default:
		h := min(1, max(0, r.HiddenRaw))
		r.Hidden = &h
		if h != r.HiddenRaw {
			r.Note = fmt.Sprintf("hidden share %.3f clamped to [0, 1]", r.HiddenRaw)
		}
	}
	if r.Buckets == 1 {
		if r.Note != "" {
			r.Note += "; "
		}
		r.Note += "one bucket: it is ready only when backward ends, so nothing can overlap (lower --bucket-mib)"
	}
	return r, nil
}

// maxInto returns the elementwise max of acc and v (v itself when acc is empty).
func maxInto(acc, v []float64) []float64 {
	if acc == nil {
		return slices.Clone(v)
	}
	for i := range acc {
		acc[i] = max(acc[i], v[i])
	}
	return acc
}

// seMedian estimates the standard error of the median of v: 1.2533 σ/√n
// (normal data), with σ estimated robustly as IQR/1.349. It is 0 for fewer
// than two values.
func seMedian(v []float64) float64 {
	if len(v) < 2 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	iqr := quantile(s, 0.75) - quantile(s, 0.25)
	return 1.2533 * iqr / 1.349 / math.Sqrt(float64(len(s)))
}

// quantile of sorted s, linearly interpolated.
func quantile(s []float64, q float64) float64 {
	x := q * float64(len(s)-1)
	i := int(x)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (x-float64(i))*(s[i+1]-s[i])
}

func printOverlap(w io.Writer, r benchOverlapResult) {
	bucket := fmt.Sprintf("%.4g MiB buckets", r.BucketMiB)
	if r.BucketMiB == 0 {
		bucket = "one bucket"
	}
	fmt.Fprintf(w, "# %d members (%s), each %s, GOMAXPROCS %d\n", r.World, r.Network, r.Backend, r.GOMAXPROCS)
	fmt.Fprintf(w, "# model %s\n", r.Config)
	codec := r.Codec
	if r.PSGDRank > 0 {
		codec = fmt.Sprintf("%s rank %d", codec, r.PSGDRank)
	}
	fmt.Fprintf(w, "# gradient %.2f MiB fp32 in %d buckets (%s), codec %s\n", r.GradMiB, r.Buckets, bucket, codec)
	fmt.Fprintf(w, "# step = max over members of one training step after a barrier; median of %d steps after %d warm-up rounds;\n", r.Steps, r.Warmup)
	fmt.Fprintf(w, "# modes take turns; compute/wait = medians of the trainer's compute time and wait for the sum after backward\n")
	fmt.Fprintf(w, "%-8s %10s %8s %11s %9s %9s\n", "mode", "median_ms", "se_ms", "compute_ms", "wait_ms", "wire_MiB")
	for _, m := range r.Modes {
		fmt.Fprintf(w, "%-8s %10.2f %8.2f %11.2f %9.2f %9.2f\n", m.Mode, m.MedianMS, m.SEMS, m.ComputeMS, m.WaitMS, m.WireMiB)
	}
	if ideal := r.GradMiB * 2 * float64(r.World-1) / float64(r.World); ideal > 0 && len(r.Modes) > 0 {
		last := r.Modes[len(r.Modes)-1]
		fmt.Fprintf(w, "# bytes on the wire per member per step: %.2f MiB, %.3f of fp32's %.2f MiB\n", last.WireMiB, last.WireMiB/ideal, ideal)
	}
	fmt.Fprintf(w, "comm total   (serial - compute)  %8.2f ms  (se %.2f)\n", r.TotalMS, r.TotalSEMS)
	fmt.Fprintf(w, "comm exposed (overlap - compute) %8.2f ms  (se %.2f)\n", r.ExposedMS, r.ExposedSE)
	fmt.Fprintf(w, "compute slowdown under overlap   %8.2f ms  (compute_ms: overlap - compute)\n", r.SlowdownMS)
	if r.Hidden != nil {
		fmt.Fprintf(w, "hidden share (1 - exposed/total) %7.1f %%\n", 100**r.Hidden)
	} else {
		fmt.Fprintf(w, "hidden share (1 - exposed/total)      n/a\n")
	}
	if r.Note != "" {
		fmt.Fprintf(w, "note: %s\n", r.Note)
	}
}
