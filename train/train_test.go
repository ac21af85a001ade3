package train

import (
	"context"
	"math"
	"testing"

	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/compute/cpu"
	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/model"
)

// fixed is a Source that serves the same few sequences over and over:
// global position k is sequence k mod len(seqs).
type fixed struct {
	seqs  [][]int32
	vocab int
}

func (f *fixed) SeqLen() int { return len(f.seqs[0]) }
func (f *fixed) Vocab() int  { return f.vocab }
func (f *fixed) Sample(k int64, dst []int32) error {
	copy(dst, f.seqs[k%int64(len(f.seqs))])
	return nil
}

// textLike makes sequences with structure a small model can learn: byte
// tokens (ids 4..259) of a repeating phrase with a per-sequence offset.
func textLike(n, seqLen int) *fixed {
	phrase := []byte("the quick brown fox jumps over the lazy dog. ")
	f := &fixed{vocab: 260}
	for i := 0; i < n; i++ {
		s := make([]int32, seqLen)
		for j := range s {
			s[j] = int32(phrase[(i*7+j)%len(phrase)]) + 4
		}
		f.seqs = append(f.seqs, s)
	}
	return f
}

func newCPU(t testing.TB) compute.Backend {
	t.Helper()
	b, err := cpu.New(cpu.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func tinyCfg(noise string) Config {
	c := Default(model.Default(260, 2, 64, 2, 32))
	c.Noise = noise
	c.Batch, c.MicroBatch = 8, 8
	c.LR, c.Warmup, c.Steps = 0.5, 10, 300
	c.Seed = 7
	return c
}

func run(t *testing.T, b compute.Backend, c Config, src *fixed, steps int) []float64 {
	t.Helper()
	tr, err := New(b, c)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var losses []float64
	for s := 0; s < steps; s++ {
		r, err := tr.Step(context.Background(), src, int64(s), 0, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, r.Metrics.Summary(tr.Divisor()).Loss)
	}
	return losses
}

func TestSameSeedIsBitwiseIdentical(t *testing.T) {
	c := tinyCfg("balanced")
	src := textLike(16, 32)
	a := run(t, newCPU(t), c, src, 20)
	b := run(t, newCPU(t), c, src, 20)
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			t.Fatalf("step %d: loss %v vs %v; same seed must give identical runs", i, a[i], b[i])
		}
	}
}

func TestMicroBatchSplitDoesNotChangeTheCurve(t *testing.T) {
	src := textLike(16, 32)
	var ref []float64
	for _, micro := range []int{8, 4, 2} {
		c := tinyCfg("balanced")
		c.MicroBatch = micro
		// The objective is Σ loss_tok / (Batch/MicroBatch) (spec §2.5);
		// compare the token sums, which must not depend on the split.
		l := run(t, newCPU(t), c, src, 10)
		for i := range l {
			l[i] *= float64(c.MicroBatches())
		}
		if ref == nil {
			ref = l
			continue
		}
		for i := range l {
			if d := math.Abs(l[i]-ref[i]) / math.Abs(ref[i]); d > 1e-5 {
				t.Errorf("micro-batch %d, step %d: loss %.8g vs %.8g with one micro-batch (rel %.2g)", micro, i, l[i], ref[i], d)
			}
		}
	}
}

// The batch is 16 copies of one sequence, each with its own noise: with
// several distinct sequences the best achievable ELBO stays well above 0,
// because at high noise the model cannot tell which sequence it sees. The
// ELBO is measured before and after on 256 fresh noise draws (positions far
// beyond the training range), not on the noisy per-step estimates.
func TestOverfitsOneBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("300 training steps per noise type")
	}
	for _, noise := range []string{"masked", "balanced", "uniform"} {
		t.Run(noise, func(t *testing.T) {
			c := tinyCfg(noise)
			c.Batch, c.MicroBatch = 16, 16
			src := textLike(1, 32)
			tr, err := New(newCPU(t), c)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			const probe = 1 << 30
			before, err := tr.Evaluate(src, probe, probe+256)
			if err != nil {
				t.Fatal(err)
			}
			for s := 0; s < 300; s++ {
				if _, err := tr.Step(context.Background(), src, int64(s), 0, 1, nil); err != nil {
					t.Fatal(err)
				}
			}
			after, err := tr.Evaluate(src, probe, probe+256)
			if err != nil {
				t.Fatal(err)
			}
			first, last := before.Summary(1).Elbo, after.Summary(1).Elbo
			t.Logf("%s: ELBO %.4f -> %.4f (%.1f%% lower)", noise, first, last, 100*(1-last/first))
			if last > 0.1*first {
				t.Errorf("%s: ELBO fell from %.4f to %.4f, want at least 90%% lower", noise, first, last)
			}
		})
	}
}

// At initialisation the logits are 0, so x̂ is uniform over the non-mask
// tokens and every token's loss has a closed form (diffusion.RefLoss).
func TestInitialLossIsAnalytic(t *testing.T) {
	for _, noise := range []string{"masked", "balanced", "uniform"} {
		c := tinyCfg(noise)
		b := newCPU(t)
		tr, err := New(b, c)
		if err != nil {
			t.Fatal(err)
		}
		src := textLike(8, 32)
		if err := tr.prepare(src, 0, c.MicroBatch); err != nil {
			t.Fatal(err)
		}
		var mt diffusion.Metrics
		if err := tr.loss(c.MicroBatch, &mt, true); err != nil {
			t.Fatal(err)
		}
		dc, _ := c.Diffusion()
		zero := make([]float64, c.Model.Vocab)
		var want diffusion.Metrics
		bt := &tr.batch
		for i := range bt.Labels {
			if bt.NoiseMask[i] == 0 {
				continue
			}
			tl := diffusion.RefLoss(zero, int(bt.Labels[i]), int(bt.Noisy[i]), float64(bt.LogSNR[i]), dc.Noise, dc.Schedule, dc.BetaIS)
			want.Tokens++
			want.Loss += tl.Loss
			want.Elbo += tl.Elbo
		}
		if want.Tokens != mt.Tokens || math.Abs(mt.Loss-want.Loss) > 1e-4*math.Abs(want.Loss) || math.Abs(mt.Elbo-want.Elbo) > 1e-4*math.Abs(want.Elbo) {
			t.Errorf("%s: initial loss %.6g elbo %.6g over %v tokens, analytic %.6g / %.6g over %v", noise, mt.Loss, mt.Elbo, mt.Tokens, want.Loss, want.Elbo, want.Tokens)
		}
		tr.Close()
	}
}
