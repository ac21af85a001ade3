// Package overlapbench is the worker side of `trainer bench overlap`: one
// ring member, in its own process, that times full training steps
// (train.Trainer.Step) under three gradient syncs, so that the coordinator
// can tell how much of the communication the bucketed overlap hides:
//
//   - compute: no communication at all (gradients stay local);
//   - serial: the real allreduce, but started only once backward is
//     complete, so none of it overlaps the backward pass;
//   - overlap: the real allreduce, each bucket reduced as soon as backward
//     declares it ready (what `trainer train` does).
//
// All members run the same mode at the same time, after a barrier, so that
// every mode sees the same CPU share; the modes take turns step by step, so
// that a change in the machine's load touches all three alike.
package overlapbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"time"

	"google.golang.org/grpc"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

// The modes, in the order reports list them.
const (
	ModeCompute = "compute"
	ModeSerial  = "serial"
	ModeOverlap = "overlap"
)

// Modes lists every mode.
var Modes = []string{ModeCompute, ModeSerial, ModeOverlap}

// Plan is what the coordinator sends each worker, as one JSON line.
type Plan struct {
	Members []allreduce.Peer // ring order; both rings of a member share its address
	Rank    int

	Device, Precision, BLAS string
	Threads                 int // CPU kernel and BLAS threads, and GOMAXPROCS

	Train    train.Config // Batch is the global batch, split over the members
	Steps    int          // timed steps per mode
	Warmup   int          // untimed rounds first
	Codec    string
	Bucket   int           // gradient bucket in fp32 bytes (0: the whole gradient)
	Deadline time.Duration // longest wait for a silent peer
	// PowerSGDRank is the rank of codec powersgd, which gets the model's
	// tensor shapes.
	PowerSGDRank int
}

// Config returns the train configuration of a benchmark model, as
// `trainer bench step` builds it: random tokens, a global batch split over
// world members, micro-batch micro (0: one micro-batch per member).
func Config(vocab, layers, dim, heads, seq, batch, micro, world int, noise string) (train.Config, error) {
	if vocab < 5 {
		return train.Config{}, fmt.Errorf("vocabulary %d: need at least 5 (4 special tokens and one more)", vocab)
	}
	if world < 1 || batch%world != 0 {
		return train.Config{}, fmt.Errorf("global batch %d is not a multiple of the world size %d", batch, world)
	}
	c := train.Default(model.Default(vocab, layers, dim, heads, seq))
	c.Noise, c.Batch, c.MicroBatch = noise, batch, micro
	if c.MicroBatch == 0 {
		c.MicroBatch = batch / world
	}
	if c.MicroBatch > 0 && (batch/world)%c.MicroBatch != 0 {
		return train.Config{}, fmt.Errorf("micro-batch %d does not divide the %d sequences per member", c.MicroBatch, batch/world)
	}
	c.Warmup = 1
	if err := c.Validate(); err != nil {
		return train.Config{}, err
	}
	return c, nil
}

// Report is a worker's one JSON line, written when every mode has run.
type Report struct {
	Backend    string
	Threads    int // backend threads
	GOMAXPROCS int
	Params     int      // gradient length in float32s
	Buckets    int      // gradient buckets per step
	Modes      []Result // in the order of Modes
	Err        string
}

// Result is one mode's timed steps on one worker, in seconds.
type Result struct {
	Mode    string
	Step    []float64 // the whole of Trainer.Step
	Compute []float64 // forward, loss, backward and optimizer (train.Result.Compute)
	Wait    []float64 // waiting for the sum after backward (train.Result.Comm)
	Wire    uint64    // gradient message bytes this member sent per step (last step)
}

// Worker is one ring member: it listens on listen, writes "addr ADDR" to
// out, reads its Plan from in, opens its backend with open, runs the plan
// and writes one Report line. It ends with a barrier, so that no member
// leaves while another still reads from it.
func Worker(listen string, open func(Plan) (compute.Backend, error), in io.Reader, out io.Writer) error {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("overlap worker: listen %s: %w", listen, err)
	}
	addr := lis.Addr().String()
	srv := grpc.NewServer(allreduce.ServerOptions()...)
	gradT := allreduce.NewGRPCService(addr, "Grad")
	statsT := allreduce.NewGRPCService(addr, "Stats")
	gradT.Register(srv)
	statsT.Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	defer statsT.Close()
	defer gradT.Close()

	fmt.Fprintf(out, "addr %s\n", addr)
	line, err := bufio.NewReader(in).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("overlap worker: read plan: %w", err)
	}
	var plan Plan
	if err := json.Unmarshal(line, &plan); err != nil {
		return fmt.Errorf("overlap worker: plan: %w", err)
	}
	rep, err := run(plan, open, gradT, statsT)
	if err != nil {
		rep.Err = err.Error()
	}
	if e := json.NewEncoder(out).Encode(rep); e != nil && err == nil {
		err = fmt.Errorf("overlap worker: write report: %w", e)
	}
	return err
}

func run(plan Plan, open func(Plan) (compute.Backend, error), gradT, statsT allreduce.Transport) (Report, error) {
	var rep Report
	if plan.Threads > 0 {
		// The Go kernels and the BLAS share the same cores: size the
		// scheduler to the backend's threads, so that the members split the
		// machine evenly.
		runtime.GOMAXPROCS(plan.Threads)
	}
	rep.GOMAXPROCS = runtime.GOMAXPROCS(0)
	world := len(plan.Members)
	if world < 2 || plan.Rank < 0 || plan.Rank >= world {
		return rep, fmt.Errorf("overlap worker: rank %d of %d members (need at least 2)", plan.Rank, world)
	}
	if plan.Steps < 1 || plan.Warmup < 0 {
		return rep, fmt.Errorf("overlap worker: %d steps after %d warm-up rounds", plan.Steps, plan.Warmup)
	}
	b, err := open(plan)
	if err != nil {
		return rep, fmt.Errorf("overlap worker: open backend: %w", err)
	}
	defer b.Close()
	rep.Backend = b.Name()
	rep.Threads = plan.Threads
	if t, ok := b.(interface{ Threads() int }); ok {
		rep.Threads = t.Threads()
	}
	c := plan.Train
	c.Steps = len(Modes)*(plan.Warmup+plan.Steps) + 1
	tr, err := train.New(b, c)
	if err != nil {
		return rep, fmt.Errorf("overlap worker: %w", err)
	}
	defer tr.Close()
	n := tr.Model.Params.Len()
	rep.Params = n

	bucket := plan.Bucket
	if bucket <= 0 {
		bucket = 4 * max(n, 1)
	}
	acfg := allreduce.Config{Codec: plan.Codec, BucketBytes: bucket, Deadline: plan.Deadline,
		PowerSGDRank: plan.PowerSGDRank, Seed: plan.Train.Seed}
	acfg.Tensors = train.PowerSGDTensors(tr.Model.Tensors, false)
	grad, err := allreduce.New(gradT, n, acfg)
	if err != nil {
		return rep, fmt.Errorf("overlap worker: gradient ring: %w", err)
	}
	rep.Buckets = len(grad.Buckets())
	stats, err := allreduce.New(statsT, nMetrics, allreduce.Config{Deadline: plan.Deadline})
	if err != nil {
		return rep, fmt.Errorf("overlap worker: stats ring: %w", err)
	}
	gen := allreduce.Generation{ID: 1, Members: plan.Members, Rank: plan.Rank}
	ctx := context.Background()
	ring := &statsRing{r: stats, gen: gen}
	syncs := map[string]syncer{
		ModeCompute: &localSync{},
		ModeSerial:  &serialSync{ringSync: ringSync{grad: grad, stats: ring, gen: gen}},
		ModeOverlap: &ringSync{grad: grad, stats: ring, gen: gen},
	}
	res := map[string]*Result{}
	for _, m := range Modes {
		res[m] = &Result{Mode: m}
	}
	src := dataset.Random{Seq: c.Model.SeqLen, Vocabulary: c.Model.Vocab}
	var step int64
	for round := range plan.Warmup + plan.Steps {
		for j := range Modes {
			// Rotate the order every round, so that no mode always runs
			// first.
			mode := Modes[(round+j)%len(Modes)]
			s := syncs[mode]
			if err := ring.barrier(ctx); err != nil {
				return rep, fmt.Errorf("overlap worker: barrier before %s step %d: %w", mode, step, err)
			}
			w0 := s.wire()
			t0 := time.Now()
			r, err := tr.Step(ctx, src, step, plan.Rank, world, s)
			dt := time.Since(t0)
			if err != nil {
				return rep, fmt.Errorf("overlap worker: %s step %d: %w", mode, step, err)
			}
			step++
			if round < plan.Warmup {
				continue
			}
			out := res[mode]
			out.Step = append(out.Step, dt.Seconds())
			out.Compute = append(out.Compute, r.Compute.Seconds())
			out.Wait = append(out.Wait, r.Comm.Seconds())
			out.Wire = s.wire() - w0
		}
	}
	for _, m := range Modes {
		rep.Modes = append(rep.Modes, *res[m])
	}
	// Leave together: no member exits while another still reads from it.
	if err := ring.barrier(ctx); err != nil {
		return rep, fmt.Errorf("overlap worker: final barrier: %w", err)
	}
	return rep, nil
}

// nMetrics is the length of diffusion.Metrics.Vector.
var nMetrics = len(diffusion.Metrics{}.Vector())

// statsRing is the small second ring: barriers and metric sums. Every call
// takes the next step number, the same sequence on every member.
type statsRing struct {
	r   *allreduce.Reducer
	gen allreduce.Generation
	seq uint64
	vec []float32
}

func (s *statsRing) allreduce(ctx context.Context, v []float32) error {
	s.seq++
	return s.r.Allreduce(ctx, s.gen, s.seq, v)
}

// barrier returns once every member has called it.
func (s *statsRing) barrier(ctx context.Context) error {
	if len(s.vec) != nMetrics {
		s.vec = make([]float32, nMetrics)
	}
	clear(s.vec)
	return s.allreduce(ctx, s.vec)
}

// sumMetrics returns the metrics summed over the ring.
func (s *statsRing) sumMetrics(ctx context.Context, local diffusion.Metrics) (diffusion.Metrics, error) {
	v := make([]float32, nMetrics)
	for i, x := range local.Vector() {
		v[i] = float32(x)
	}
	if err := s.allreduce(ctx, v); err != nil {
		return diffusion.Metrics{}, err
	}
	f := make([]float64, nMetrics)
	for i := range f {
		f[i] = float64(v[i])
	}
	return diffusion.MetricsFromVector(f)
}

// syncer is a train.GradSync that counts the gradient bytes it sent.
type syncer interface {
	train.GradSync
	wire() uint64
}

// localSync is the compute-only mode: gradients stay as they are, the
// metrics are this member's own.
type localSync struct{}

func (localSync) Start(context.Context, int64, []float32) error { return nil }
func (localSync) Ready(int, int)                                {}
func (localSync) Wait(local diffusion.Metrics) (diffusion.Metrics, error) {
	return local, nil
}
func (localSync) wire() uint64 { return 0 }

// ringSync is the overlap mode, as a node runs it: the gradient Reducer
// started before backward and told of each range as backward finishes it,
// then the metrics summed on the second ring.
type ringSync struct {
	grad  *allreduce.Reducer
	stats *statsRing
	gen   allreduce.Generation
	ctx   context.Context
	step  uint64
}

func (s *ringSync) Start(ctx context.Context, step int64, grads []float32) error {
	s.ctx, s.step = ctx, uint64(step)+1 // the ring's steps start at 1
	return s.grad.Begin(ctx, s.gen, s.step, grads)
}

func (s *ringSync) Ready(lo, hi int) { s.grad.Ready(lo, hi) }

func (s *ringSync) Wait(local diffusion.Metrics) (diffusion.Metrics, error) {
	if err := s.grad.Wait(); err != nil {
		return diffusion.Metrics{}, err
	}
	return s.stats.sumMetrics(s.ctx, local)
}

func (s *ringSync) wire() uint64 { return s.grad.Stats().SentBytes }

// serialSync is the serial mode: the same Reducer, buckets and calls as
// ringSync, but Begin and the Ready ranges are held back until backward has
// finished, so no communication overlaps it.
type serialSync struct {
	ringSync
	grads  []float32
	ranges [][2]int
}

func (s *serialSync) Start(ctx context.Context, step int64, grads []float32) error {
	s.ctx, s.step, s.grads, s.ranges = ctx, uint64(step)+1, grads, s.ranges[:0]
	return nil
}

func (s *serialSync) Ready(lo, hi int) { s.ranges = append(s.ranges, [2]int{lo, hi}) }

func (s *serialSync) Wait(local diffusion.Metrics) (diffusion.Metrics, error) {
	if s.grads == nil {
		return diffusion.Metrics{}, errors.New("serial sync: Wait without Start")
	}
	if err := s.grad.Begin(s.ctx, s.gen, s.step, s.grads); err != nil {
		return diffusion.Metrics{}, err
	}
	for _, r := range s.ranges {
		s.grad.Ready(r[0], r[1])
	}
	s.grads = nil
	return s.ringSync.Wait(local)
}
