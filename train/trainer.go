package train

import (
	"context"
	"fmt"
	"time"

	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/optim"
)

// GradSync sums gradients over the members of a ring. Trainer.Step calls
// Start before the backward pass of its last micro-batch, Ready as backward
// finishes each range [lo, hi) of grads (from the end of the buffer to the
// start), and Wait before the optimizer; after Wait, grads holds the sum over
// the ring and Wait returns the ring's summed metrics. grads is host memory
// that stays valid until Wait returns. An error from any call abandons the
// step before the optimizer runs, so the replica is unchanged.
type GradSync interface {
	Start(ctx context.Context, step int64, grads []float32) error
	Ready(lo, hi int)
	Wait(local diffusion.Metrics) (diffusion.Metrics, error)
}

// Trainer holds a model, its optimizer state and the per-step buffers.
type Trainer struct {
	Cfg   Config
	B     compute.Backend
	Model *model.Model

	diff    diffusion.Config
	rng     diffusion.RNG
	opt     *optim.Optimizer
	params  []optim.Param
	M, V    compute.Buffer // optimizer moments, flat, same layout as Model.Params
	divisor float64

	// per-step buffers, reused
	batch    diffusion.Batch
	clean    []int32
	index    []uint64
	labels   compute.Buffer
	noisy    compute.Buffer
	lparams  compute.Buffer
	lout     compute.Buffer
	outHost  []float32
	gradHost []float32 // host mirror of the gradients for non-host backends
}

// New builds a trainer with freshly initialised parameters (seed from cfg).
func New(b compute.Backend, cfg Config) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dc, _ := cfg.Diffusion()
	oc, _ := cfg.Optim()
	opt, err := optim.New(oc)
	if err != nil {
		return nil, err
	}
	div, err := dc.Divisor(cfg.MicroBatches(), 0)
	if err != nil {
		return nil, err
	}
	m, err := model.New(b, cfg.Model, cfg.MicroBatch)
	if err != nil {
		return nil, err
	}
	if err := m.Init(cfg.Seed); err != nil {
		return nil, err
	}
	t := &Trainer{Cfg: cfg, B: b, Model: m, diff: dc, rng: diffusion.RNG{Seed: cfg.Seed}, opt: opt, divisor: div}
	n := m.Params.Len()
	t.M, t.V = b.Alloc(compute.F32, n), b.Alloc(compute.F32, n)
	for _, tn := range m.Tensors {
		t.params = append(t.params, optim.Param{
			Name: tn.Name, Shape: tn.Shape,
			P: b.View(m.Params, tn.Offset, tn.Size), G: b.View(m.Grads, tn.Offset, tn.Size),
			M: b.View(t.M, tn.Offset, tn.Size), V: b.View(t.V, tn.Offset, tn.Size),
		})
	}
	T := cfg.MicroBatch * cfg.Model.SeqLen
	t.labels, t.noisy = b.Alloc(compute.I32, T), b.Alloc(compute.I32, T)
	t.lparams = b.Alloc(compute.F32, T*compute.LossParamStride)
	t.lout = b.Alloc(compute.F32, T*compute.LossOutStride)
	t.outHost = make([]float32, T*compute.LossOutStride)
	t.clean = make([]int32, T)
	t.index = make([]uint64, cfg.MicroBatch)
	if _, ok := b.(compute.Host); !ok {
		t.gradHost = make([]float32, n)
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	return t, nil
}

// Close frees the trainer's buffers.
func (t *Trainer) Close() {
	t.Model.Close()
	for _, buf := range []compute.Buffer{t.M, t.V, t.labels, t.noisy, t.lparams, t.lout} {
		t.B.Free(buf)
	}
}

// Result describes one rank's part of a step.
type Result struct {
	Lo, Hi  int64             // global sample positions this rank processed
	Metrics diffusion.Metrics // sums over this rank's noised tokens
	Global  diffusion.Metrics // sums over the whole ring (Metrics alone without a GradSync)
	Opt     optim.Stats
	LR      float64       // base LR × schedule at this update
	Data    time.Duration // reading and noising samples
	Compute time.Duration // forward, loss, backward, optimizer (excluding Comm)
	Comm    time.Duration // waiting for the gradient sum after backward
}

// Divisor is the gradient normalisation of a global batch (see
// diffusion.Config.Divisor); Summary(divisor) of global metrics gives the
// logged objective.
func (t *Trainer) Divisor() float64 { return t.divisor }

// Step runs update number step+1 (step = number of previous updates) on this
// rank's part of global step `step` of src, as member rank of a ring of world
// members; sync sums the gradients over the ring (nil for a single process).
// On error the parameters and optimizer state are unchanged, so the step can
// be retried with another ring. A loss or summed gradient that is not finite
// is a *NonFiniteError, returned before the optimizer runs.
func (t *Trainer) Step(ctx context.Context, src dataset.Source, step int64, rank, world int, sync GradSync) (Result, error) {
	c := t.Cfg
	var r Result
	lo, hi, err := dataset.Split(step, c.Batch, rank, world)
	if err != nil {
		return r, err
	}
	if src.SeqLen() != c.Model.SeqLen {
		return r, fmt.Errorf("train step: data has sequences of %d tokens, the model %d", src.SeqLen(), c.Model.SeqLen)
	}
	if src.Vocab() > c.Model.Vocab {
		return r, fmt.Errorf("train step: data vocabulary %d exceeds the model's %d", src.Vocab(), c.Model.Vocab)
	}
	r.Lo, r.Hi = lo, hi
	if err := t.setDivisor(step); err != nil {
		return r, err
	}
	t.Model.ZeroGrad()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.Model.Cancel = ctx.Err // checked between layers
	defer func() { t.Model.Cancel = nil }()
	for a := lo; a < hi; a += int64(c.MicroBatch) {
		if err := ctx.Err(); err != nil {
			return r, fmt.Errorf("train step %d: abandoned between micro-batches: %w", step, err)
		}
		n := int(min(int64(c.MicroBatch), hi-a))
		last := a+int64(n) >= hi
		t0 := time.Now()
		if err := t.prepare(src, a, n); err != nil {
			return r, err
		}
		t1 := time.Now()
		r.Data += t1.Sub(t0)
		if err := t.loss(n, &r.Metrics, true); err != nil {
			return r, err
		}
		var ready func(lo, hi int)
		if last && sync != nil {
			grads := t.hostGrads()
			if err := sync.Start(ctx, step, grads); err != nil {
				return r, fmt.Errorf("train step %d: gradient sync: %w", step, err)
			}
			ready = func(lo, hi int) {
				if t.gradHost != nil {
					t.B.DownloadF32(grads[lo:hi], t.B.View(t.Model.Grads, lo, hi-lo))
				}
				sync.Ready(lo, hi)
			}
		}
		if err := t.Model.Backward(ready); err != nil {
			if ready != nil {
				cancel() // end the started gradient sum, as a failed peer would
				sync.Wait(r.Metrics)
			}
			return r, err
		}
		r.Compute += time.Since(t1)
	}
	if sync != nil {
		t0 := time.Now()
		g, err := sync.Wait(r.Metrics)
		if err != nil {
			return r, fmt.Errorf("train step %d: gradient sync: %w", step, err)
		}
		r.Global = g
		if t.gradHost != nil {
			t.B.UploadF32(t.Model.Grads, t.gradHost)
		}
		r.Comm = time.Since(t0)
	} else {
		r.Global = r.Metrics
	}
	if err := t.checkFinite(step, r); err != nil {
		return r, err
	}
	t0 := time.Now()
	st, err := t.opt.Step(t.B, t.params, int(step))
	if err != nil {
		return r, err
	}
	if err := t.B.Sync(); err != nil {
		return r, fmt.Errorf("train step %d: %w", step, err)
	}
	r.Compute += time.Since(t0)
	r.Opt = st
	r.LR = c.LR * st.Schedule
	return r, nil
}

// hostGrads returns host memory holding (or receiving) the gradients.
func (t *Trainer) hostGrads() []float32 {
	if h, ok := t.B.(compute.Host); ok {
		return h.F32(t.Model.Grads)
	}
	return t.gradHost
}

// prepare reads and noises samples [a, a+n).
func (t *Trainer) prepare(src dataset.Source, a int64, n int) error {
	N := t.Cfg.Model.SeqLen
	for i := 0; i < n; i++ {
		k := a + int64(i)
		if err := src.Sample(k, t.clean[i*N:(i+1)*N]); err != nil {
			return fmt.Errorf("train: sample %d: %w", k, err)
		}
		t.index[i] = uint64(k)
	}
	return t.diff.Prepare(t.rng, t.index[:n], t.clean[:n*N], N, t.divisor, &t.batch)
}

// loss runs forward and the fused loss on the prepared batch of n
// sequences; with grad it leaves d objective/d logits in the model's logits
// buffer for Backward.
func (t *Trainer) loss(n int, mt *diffusion.Metrics, grad bool) error {
	c, b := t.Cfg, t.B
	T := n * c.Model.SeqLen
	bt := &t.batch
	if err := t.Model.Forward(bt.Noisy, bt.Attn, n, c.CausalPrompt); err != nil {
		return err
	}
	labels, noisy := b.View(t.labels, 0, T), b.View(t.noisy, 0, T)
	lp, lo := b.View(t.lparams, 0, T*compute.LossParamStride), b.View(t.lout, 0, T*compute.LossOutStride)
	b.UploadI32(labels, bt.Labels)
	b.UploadI32(noisy, bt.Noisy)
	b.UploadF32(lp, bt.Params)
	b.GIDDLoss(compute.Loss{
		T: T, V: c.Model.Vocab, MaskID: c.Model.MaskID, BetaIS: float32(c.BetaIS),
		Logits: t.Model.Logits(), Labels: labels, Noisy: noisy, Params: lp, Out: lo, Grad: grad,
	})
	out := t.outHost[:T*compute.LossOutStride]
	b.DownloadF32(out, lo)
	if err := b.Err(); err != nil {
		return fmt.Errorf("train: loss: %w", err)
	}
	return mt.Add(bt.NoiseMask, out)
}

// setDivisor fixes the gradient normalisation of global step `step`: constant
// for sum aggregation, the global batch's noised-token count for mean.
func (t *Trainer) setDivisor(step int64) error {
	if t.diff.Aggregation != diffusion.AggMean {
		return nil
	}
	B := t.Cfg.Batch
	idx := make([]uint64, B)
	for i := range idx {
		idx[i] = uint64(step*int64(B) + int64(i))
	}
	d, err := t.diff.Divisor(t.Cfg.MicroBatches(), t.diff.CountNoised(t.rng, idx, t.Cfg.Model.SeqLen))
	t.divisor = d
	return err
}

// Evaluate runs forward and loss, without gradients or updates, on global
// positions [lo, hi) of src, and returns the metric sums. Noise for position
// k is drawn as in training, so it estimates the training objective; use
// positions outside the training range for fresh noise.
func (t *Trainer) Evaluate(src dataset.Source, lo, hi int64) (diffusion.Metrics, error) {
	var mt diffusion.Metrics
	for a := lo; a < hi; a += int64(t.Cfg.MicroBatch) {
		n := int(min(int64(t.Cfg.MicroBatch), hi-a))
		if err := t.prepare(src, a, n); err != nil {
			return mt, err
		}
		if err := t.loss(n, &mt, false); err != nil {
			return mt, err
		}
	}
	return mt, nil
}
