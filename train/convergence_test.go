package train

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/compute/cpu"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/model"
)

// ringSync is a GradSync over an in-memory allreduce.Reducer: the gradient
// sum of one member of a ring in this process.
type ringSync struct {
	r   *allreduce.Reducer
	gen allreduce.Generation
}

func (s *ringSync) Start(ctx context.Context, step int64, grads []float32) error {
	return s.r.Begin(ctx, s.gen, uint64(step), grads)
}
func (s *ringSync) Ready(lo, hi int) { s.r.Ready(lo, hi) }
func (s *ringSync) Wait(local diffusion.Metrics) (diffusion.Metrics, error) {
	return local, s.r.Wait()
}

// ringRun is one data-parallel run of a ring of members in this process.
type ringRun struct {
	Codec string
	Rank  int    // PowerSGD rank
	Start uint64 // PowerSGD start step
	// Embeddings: PowerSGD compresses the embedding and the head too.
	Embeddings bool
}

// trainRing trains cfg for cfg.Steps steps on a ring of world members in
// this process (in-memory transport, one CPU thread each) and returns the
// global ELBO of every step and the gradient bytes member 0 sent.
func trainRing(t *testing.T, cfg Config, src dataset.Source, world int, rr ringRun) ([]float64, uint64) {
	t.Helper()
	net := allreduce.NewInmemNetwork()
	peers := make([]allreduce.Peer, world)
	for i := range peers {
		peers[i] = allreduce.Peer{Name: fmt.Sprint("m", i), Addr: fmt.Sprint("m", i)}
	}
	trs := make([]*Trainer, world)
	syncs := make([]*ringSync, world)
	for i := range world {
		b, err := cpu.New(cpu.Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		tr, err := New(b, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tr.Close)
		trs[i] = tr
		tp, err := net.Transport(peers[i].Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		// A member of a loaded machine may wait long for the other.
		ac := allreduce.Config{Codec: rr.Codec, PowerSGDRank: rr.Rank, PowerSGDStart: rr.Start, Seed: cfg.Seed, Deadline: 10 * time.Minute}
		ac.Tensors = PowerSGDTensors(tr.Model.Tensors, rr.Embeddings)
		r, err := allreduce.New(tp, tr.Model.Params.Len(), ac)
		if err != nil {
			t.Fatal(err)
		}
		syncs[i] = &ringSync{r: r, gen: allreduce.Generation{ID: 1, Members: peers, Rank: i}}
	}
	elbo := make([]float64, cfg.Steps)
	res := make([]Result, world)
	errs := make([]error, world)
	for s := range cfg.Steps {
		var wg sync.WaitGroup
		for i := range world {
			wg.Go(func() { res[i], errs[i] = trs[i].Step(context.Background(), src, int64(s), i, world, syncs[i]) })
		}
		wg.Wait()
		var m diffusion.Metrics
		for i := range world {
			if errs[i] != nil {
				t.Fatalf("%s: step %d, member %d: %v", rr.Codec, s, i, errs[i])
			}
			m.Merge(res[i].Metrics)
		}
		elbo[s] = m.Summary(trs[0].Divisor()).Elbo
	}
	return elbo, syncs[0].r.Stats().SentBytes
}

// goCorpus prepares the first mb MiB of the default corpus (the Go standard
// library source) as sequences of seqLen tokens and opens its train split.
func goCorpus(t *testing.T, mb float64, seqLen int, seed uint64) dataset.Source {
	t.Helper()
	dir, ext, skip, err := dataset.DefaultCorpus()
	if err != nil {
		t.Skip(err)
	}
	out := filepath.Join(t.TempDir(), "data")
	if _, err := dataset.Prepare(context.Background(), dataset.PrepareOptions{
		Inputs: []string{dir}, Out: out, SeqLen: seqLen, MaxMB: mb, Ext: ext, SkipDirs: skip,
	}); err != nil {
		t.Fatal(err)
	}
	src, err := dataset.Open(context.Background(), dataset.Options{Dir: out, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func meanOf(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// TestCodecsConverge is issue 15's convergence check: training with
// PowerSGD rank 4 reaches an ELBO within 3% of codec none at equal steps,
// and int8 within 1%. (The ELBO here is the loss the runs minimise.)
//
// The demo model (scripts/demo.sh: 4 layers, d 128, 4 heads; LR 0.5, warmup
// 30, masked noise, the default 20% cooldown, 600 steps, the default corpus
// of Go source) trains on a ring of two in-memory members, the same seed
// and data order, once per codec: none, int8, and powersgd at rank 4 with
// the default --powersgd-start (PowerSGDStartFor(-1, ...): 10% of the
// steps, 60, after the warmup) and the embedding and the head summed
// uncompressed, as `trainer train` does by default (PowerSGDTensors). The
// ELBO compared is the mean training ELBO of the last 50 steps, which every
// codec takes on the same batches and noise draws.
//
// To fit make test, the global batch is 8 sequences of 64 tokens instead of
// the demo's 24 of 128: about 6x less compute; the three runs take about 7
// CPU-minutes (4 minutes on 2 idle cores). CONVERGENCE_DEMO_BATCH=1 runs
// the demo's batch (about 6 times that). CONVERGENCE_SEED=N changes the
// seed (data order, noise draws, initial weights); CONVERGENCE_CHAOS=1 adds
// a run of none on one member, whose gap to none on two is float32
// rounding amplified by the trajectory: the noise floor of the comparison.
// CONVERGENCE_PSGD_RANK and CONVERGENCE_PSGD_START change powersgd's rank
// and start step; CONVERGENCE_PSGD_ALSO=150,300 adds powersgd runs from those
// steps, reported and not checked; CONVERGENCE_PSGD_EMBEDDINGS=1 compresses
// the embedding and the head too (--powersgd-embeddings).
//
// "Within" is read as the issue means it, no worse: the ELBO is a loss, and
// a codec that ends below none passes.
//
// Measured with the reduced batch (seed 1): none 3.5258, int8 -1.37%,
// powersgd -0.33% (+0.49% with the embedding and the head compressed too, and
// +3.4% when that compresses from step 0). At the demo's full batch (24 of 128,
// CONVERGENCE_DEMO_BATCH=1), against none:
//
//	seed  none    int8 (blocks  int8 (blocks  powersgd rank 4
//	              of 64)        of 256)       (the default)
//	1     2.7664  -2.83%        +1.31%        -0.44%
//	2     2.8280  +0.81%        +2.63%        +1.19%
//	3     2.8641  +0.95%        +2.92%        +1.22%
//
// and powersgd with the embedding and the head compressed too
// (CONVERGENCE_PSGD_EMBEDDINGS=1), by the step it starts compressing from:
//
//	seed  rank 4: 60  150     200     250     rank 8: 60
//	1     +4.91%      +2.85%  +3.82%  +3.35%  -1.89%
//	2     +5.42%      +3.06%                  +2.62%
//	3     +3.75%      +3.64%                  -0.49%
//
// int8 meets its bound on every seed since its block shrank from 256 to 64
// elements (allreduce.Int8Block); with 256 it did on none. PowerSGD at rank 4
// meets its bound on every seed since it leaves the embedding and the head
// uncompressed. With them compressed (as PyTorch's hook does every matrix)
// it met it on no seed from the default start, and on one of three from
// step 150: leaving those two tensors (rows per token, not low-rank)
// uncompressed closes the gap, starting later does not. It grew with the batch (+0.49% at 8 of 64, +2.16% at 24 of 64, +4.91%
// at 24 of 128, seed 1), as a rank-4 approximation loses more of a less
// noisy gradient. MiB sent by a member over the run: none 1966, int8 522,
// powersgd rank 4 422 (with the embedding and the head compressed: 291, and
// 373 at rank 8).
//
// How much of a gap is the codec: CONVERGENCE_CHAOS=1 at the reduced batch
// puts none on one member -0.66% (seed 1) and -1.48% (seed 2) from none on
// two, the same batches, noise draws and update rule, different only in
// float32 rounding: single trajectories at LR 0.5 scatter by a percent or
// two, which is why the table has three seeds.
func TestCodecsConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("three 600-step runs of the demo model")
	}
	batch, seq := 8, 64
	if os.Getenv("CONVERGENCE_DEMO_BATCH") != "" {
		batch, seq = 24, 128
	}
	c := Default(model.Default(260, 4, 128, 4, seq))
	c.Batch, c.MicroBatch = batch, batch/2
	c.LR, c.Warmup, c.Cooldown, c.Steps, c.Seed = 0.5, 30, 0.2, 600, 1
	if v := os.Getenv("CONVERGENCE_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CONVERGENCE_SEED=%q: %v", v, err)
		}
		c.Seed = seed
	}
	c.Resolve()
	src := goCorpus(t, 24, seq, c.Seed)
	start := allreduce.PowerSGDStartFor(-1, c.Steps, c.Warmup)
	envInt := func(name string, def int) int {
		e := os.Getenv(name)
		if e == "" {
			return def
		}
		n, err := strconv.Atoi(e)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive integer", name, e)
		}
		return n
	}
	rank := envInt("CONVERGENCE_PSGD_RANK", 4)
	emb := os.Getenv("CONVERGENCE_PSGD_EMBEDDINGS") != ""
	start = uint64(envInt("CONVERGENCE_PSGD_START", int(start)))
	const last = 50
	final := map[string]float64{}
	sent := map[string]uint64{}
	for _, rr := range []ringRun{{Codec: "none"}, {Codec: "int8"}, {Codec: "powersgd", Rank: rank, Start: start, Embeddings: emb}} {
		e, b := trainRing(t, c, src, 2, rr)
		final[rr.Codec], sent[rr.Codec] = meanOf(e[len(e)-last:]), b
		t.Logf("%-8s ELBO of the last %d steps %.4f (first step %.4f), %.1f MiB sent by a member", rr.Codec, last, final[rr.Codec], e[0], float64(b)/(1<<20))
	}
	if os.Getenv("CONVERGENCE_CHAOS") != "" {
		// The same run on one member: its gradient sums differ from the
		// pair's only in float32 rounding, so this gap is what chaos alone
		// does to the trajectory, the floor under any codec's.
		e, _ := trainRing(t, c, src, 1, ringRun{Codec: "none"})
		t.Logf("none on one member: ELBO %.4f, %+.2f%% against none on two (float32 rounding alone)", meanOf(e[len(e)-last:]), 100*(meanOf(e[len(e)-last:])/final["none"]-1))
	}
	if v := os.Getenv("CONVERGENCE_PSGD_ALSO"); v != "" {
		// More start steps for powersgd, reported, not checked.
		for f := range strings.SplitSeq(v, ",") {
			s, err := strconv.Atoi(f)
			if err != nil || s < 0 {
				t.Fatalf("CONVERGENCE_PSGD_ALSO=%q: want start steps, comma-separated", v)
			}
			e, b := trainRing(t, c, src, 2, ringRun{Codec: "powersgd", Rank: rank, Start: uint64(s), Embeddings: emb})
			got := meanOf(e[len(e)-last:])
			t.Logf("powersgd rank %d from step %d: ELBO %.4f, %+.2f%% against none, %.1f MiB sent by a member", rank, s, got, 100*(got/final["none"]-1), float64(b)/(1<<20))
		}
	}
	for _, k := range []struct {
		codec string
		tol   float64
	}{{"int8", 0.01}, {"powersgd", 0.03}} {
		r := final[k.codec]/final["none"] - 1
		t.Logf("%s: %+.2f%% against none (bound +%.0f%%)", k.codec, 100*r, 100*k.tol)
		if r > k.tol {
			t.Errorf("%s ends at ELBO %.4f, %+.2f%% from none's %.4f: worse by more than %.0f%%", k.codec, final[k.codec], 100*r, final["none"], 100*k.tol)
		}
	}
	// PowerSGD compressed (after its plain steps): far fewer bytes.
	if 4*sent["powersgd"] > sent["none"] {
		t.Errorf("powersgd sent %d bytes, none %d: it did not compress", sent["powersgd"], sent["none"])
	}
}
