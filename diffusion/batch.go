package diffusion

import (
	"fmt"
	"math"
	"sort"

	"github.com/difftrain/difftrain/compute"
)

// CleanLogSNR is the λ given to conditioning (noise-free) tokens. It is the
// literal 10 of the reference; those tokens never enter the loss.
const CleanLogSNR = 10

// Batch is one prepared (micro-)batch of B sequences of N tokens: the model
// input, the loss targets and the per-token loss parameters. Its slices are
// reused across calls to Prepare.
type Batch struct {
	B, N      int
	Index     []uint64  // [B] global sample index of each sequence
	Labels    []int32   // [B*N] clean tokens after empty-token insertion (the targets)
	Noisy     []int32   // [B*N] z: the model input
	LogSNR    []float32 // [B*N] λ; CleanLogSNR on conditioning tokens
	NoiseMask []int32   // [B*N] 1: noised, in the loss; 0: conditioning token
	// Attn is the attention flag of compute.Attn.Noise: 1 noisy, 0 prompt.
	// It differs from NoiseMask on infilling tokens, which the reference
	// leaves out of the attention mask. Pass Config.CausalPrompt as
	// compute.Attn.CausalPrompt.
	Attn []int32
	// Params is the compute.Loss.Params block, [B*N, compute.LossParamStride]:
	// α, a, w_tr, w_el, gradScale per token.
	Params []float32
}

func (b *Batch) resize(B, N int) {
	b.B, b.N = B, N
	T := B * N
	b.Index = grow(b.Index, B)
	b.Labels = grow(b.Labels, T)
	b.Noisy = grow(b.Noisy, T)
	b.LogSNR = grow(b.LogSNR, T)
	b.NoiseMask = grow(b.NoiseMask, T)
	b.Attn = grow(b.Attn, T)
	b.Params = grow(b.Params, T*compute.LossParamStride)
}

func grow[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// Divisor returns the gradient normalisation of a global batch, the number
// that Prepare divides every token's gradient scale by. It makes the summed
// gradient of a global batch independent of how its sequences are split into
// micro-batches and over ranks (the allreduce SUMS the ranks' gradients, and
// the backend accumulates micro-batches by summing):
//
//   - AggSum: divisor = microBatches, the number of micro-batches of the
//     reference configuration in one global batch (global batch size /
//     micro_batch_size). The reference averages per-micro-batch token sums
//     over its micro-batches, so its gradient is Σ_tokens ∇loss / microBatches;
//     this reproduces it exactly, whatever the world size. microBatches is a
//     hyper-parameter: derive it from the configured sizes, not from the
//     number of ranks.
//   - AggMean: divisor = max(globalNoised, 1), the number of noised tokens in
//     the whole global batch (see CountNoised). The reference's mean of
//     per-micro-batch means equals this when the micro-batches hold equally
//     many noised tokens; dividing by the global count is the split-invariant
//     form of it. With one micro-batch it is exactly the spec's
//     Σ/max(Σ noise_mask, 1), including the all-clean case.
func (c Config) Divisor(microBatches, globalNoised int) (float64, error) {
	switch c.Aggregation {
	case AggSum:
		if microBatches <= 0 {
			return 0, fmt.Errorf("gradient divisor: %d micro-batches, must be positive", microBatches)
		}
		return float64(microBatches), nil
	case AggMean:
		if globalNoised < 0 {
			return 0, fmt.Errorf("gradient divisor: %d noised tokens, must be non-negative", globalNoised)
		}
		return float64(max(globalNoised, 1)), nil
	}
	return 0, fmt.Errorf("gradient divisor: unknown aggregation %v", c.Aggregation)
}

// Prepare noises clean sequences (spec §3): clean is [len(index)*n] tokens,
// index the global sample index of each sequence. It fills out (reusing its
// memory) in the spec's order: empty tokens, conditioning masks, λ, λ ← 10 on
// clean tokens, z ~ q_λ(·|x), z ← x on clean tokens, and the loss parameters
// with gradScale = LossScale·noise_mask/divisor (see Divisor).
//
// Every draw depends only on (rng.Seed, index[b], purpose, position), so the
// same sample is noised identically in any batch, on any rank.
func (c Config) Prepare(rng RNG, index []uint64, clean []int32, n int, divisor float64, out *Batch) error {
	B := len(index)
	if n <= 0 {
		return fmt.Errorf("prepare batch: sequence length %d, must be positive", n)
	}
	if len(clean) != B*n {
		return fmt.Errorf("prepare batch: %d tokens for %d sequences of %d", len(clean), B, n)
	}
	if !(divisor > 0) || math.IsInf(divisor, 0) {
		return fmt.Errorf("prepare batch: gradient divisor %g, must be finite and positive", divisor)
	}
	for i, x := range clean {
		if x < 0 || int(x) >= c.Noise.Vocab {
			return fmt.Errorf("prepare batch: sample %d position %d: token %d outside the vocabulary [0, %d)", index[i/n], i%n, x, c.Noise.Vocab)
		}
		if int(x) == c.Noise.MaskID {
			return fmt.Errorf("prepare batch: sample %d position %d: clean token is the mask id %d", index[i/n], i%n, x)
		}
	}
	out.resize(B, n)
	copy(out.Index, index)
	for b := 0; b < B; b++ {
		lo, hi := b*n, (b+1)*n
		c.emptyTokens(rng, index[b], clean[lo:hi], out.Labels[lo:hi])
		c.noiseMask(rng, index[b], out.NoiseMask[lo:hi], out.Attn[lo:hi])
		c.logSNR(rng, index[b], out.LogSNR[lo:hi])
		for i := lo; i < hi; i++ {
			x := out.Labels[i]
			if out.NoiseMask[i] == 0 {
				out.LogSNR[i] = CleanLogSNR
				out.Noisy[i] = x
				continue
			}
			l := float64(out.LogSNR[i])
			out.Noisy[i] = c.Noise.sampleMarginal(rng, index[b], PurposeKeep, i-lo, x, c.Schedule.Alpha(l), c.Noise.A(l))
		}
	}
	for i := range out.Labels {
		c.Params(out.Params[i*compute.LossParamStride:(i+1)*compute.LossParamStride],
			float64(out.LogSNR[i]), int(out.Noisy[i]), int(out.Labels[i]), out.NoiseMask[i], divisor)
	}
	return nil
}

// Params fills one row of compute.Loss.Params for a token: α(λ), a(λ),
// w_tr, w_el, gradScale = LossScale·noiseMask/divisor and 1−α(λ).
func (c Config) Params(dst []float32, l float64, z, x int, noiseMask int32, divisor float64) {
	l = float64(float32(l))
	_, _, wTr, wEl := c.Noise.Weights(l, z, x)
	dst[compute.LPAlpha] = float32(c.Schedule.Alpha(l))
	dst[compute.LPUniform] = float32(c.Noise.A(l))
	dst[compute.LPWTrain] = float32(wTr)
	dst[compute.LPWElbo] = float32(wEl)
	dst[compute.LPGradScale] = float32(c.LossScale * float64(noiseMask) / divisor)
	dst[compute.LPNoiseRate] = float32(c.Schedule.NoiseRate(l))
}

// sampleMarginal draws z ~ q_λ(·|x) = α·e_x + (1−α)·π_λ as the reference does
// (spec §1.4): keep ~ Bernoulli(α), else uniform noise ~ Bernoulli(a), else
// the mask. It uses counters 2·pos and 2·pos+1 of purpose p.
func (n Noise) sampleMarginal(r RNG, sample uint64, p Purpose, pos int, x int32, alpha, a float64) int32 {
	uKeep, uUnif := r.Uniforms(sample, p, uint32(2*pos))
	if uKeep < alpha {
		return x
	}
	if uUnif < a {
		w, _ := r.Block(sample, p, uint32(2*pos+1))
		return n.uniformToken(w)
	}
	return int32(n.MaskID)
}

// PromptFraction maps r ∈ [0,1) to f = arccos(1−2r)/π·cMax, whose density
// on [0,1] (cMax = 1) is (π/2)·sin(πf).
func PromptFraction(r, cMax float64) float64 {
	return math.Acos(clip(1-2*r, -1, 1)) / math.Pi * cMax
}

// PromptLen is the number of prompt positions for fraction f: positions
// i ≤ f·(N−1), i.e. ⌊f(N−1)⌋ + 1, at most N.
func PromptLen(f float64, n int) int {
	return min(int(math.Floor(f*float64(n-1)))+1, n)
}

// noiseMask samples prompt and infilling conditioning for one sequence
// (spec §3.3). attn gets the prompt mask only.
func (c Config) noiseMask(r RNG, sample uint64, nm, attn []int32) {
	n := len(nm)
	for i := range nm {
		nm[i] = 1
	}
	uHas, uF := r.Uniforms(sample, PurposePrompt, 0)
	if uHas < c.PPrompt {
		k := PromptLen(PromptFraction(uF, c.MaxCondFrac), n)
		for i := 0; i < k; i++ {
			nm[i] = 0
		}
	}
	copy(attn, nm)
	uHas, uF = r.Uniforms(sample, PurposeInfill, 0)
	if uHas < c.PInfill {
		f := PromptFraction(uF, c.MaxCondFrac)
		for i := range nm {
			if u, _ := r.Uniforms(sample, PurposeInfill, uint32(i+1)); u < f {
				nm[i] = 0
			}
		}
	}
}

// noised counts the noised tokens of one sequence without its tokens.
func (c Config) noised(r RNG, sample uint64, nm, attn []int32) int {
	c.noiseMask(r, sample, nm, attn)
	k := 0
	for _, v := range nm {
		k += int(v)
	}
	return k
}

// CountNoised returns the number of noised tokens (Σ noise_mask) of the
// sequences with the given global indices and length n: the AggMean divisor
// of a global batch. The conditioning masks depend only on the seed, the
// sample index and n, so every rank can compute the global count without
// seeing other ranks' data.
func (c Config) CountNoised(rng RNG, index []uint64, n int) int {
	if c.PPrompt == 0 && c.PInfill == 0 {
		return len(index) * n
	}
	nm := make([]int32, n)
	attn := make([]int32, n)
	k := 0
	for _, s := range index {
		k += c.noised(rng, s, nm, attn)
	}
	return k
}

// logSNR samples the per-token λ of one sequence (spec §3.1–3.2), rounded
// to float32.
func (c Config) logSNR(r RNG, sample uint64, dst []float32) {
	n := len(dst)
	rb, _ := r.Uniforms(sample, PurposeSeqNoise, 0)
	indep := c.PIndependent > 0 && rb < c.PIndependent
	linear := !indep && rb < c.PIndependent+c.PLinear
	switch {
	case indep:
		for i := range dst {
			u, _ := r.Uniforms(sample, PurposeLogSNR, uint32(i))
			dst[i] = float32(c.Schedule.Sample(u))
		}
	case linear:
		for i := range dst {
			dst[i] = float32(c.Schedule.LogSNR(float64(i+1) / float64(n+1)))
		}
	default:
		u, _ := r.Uniforms(sample, PurposeLogSNR, 0)
		l := float32(c.Schedule.Sample(u))
		for i := range dst {
			dst[i] = l
		}
	}
}

// emptyTokens copies src to dst, inserting empty tokens when MaxEmptyFrac > 0
// (spec §3.4): e ~ U(0, F), count = min(⌈N·e/(1−e)⌉, N) positions chosen
// uniformly among [0, N) become EmptyID, the original tokens fill the other
// slots in order and the overflow is dropped.
func (c Config) emptyTokens(r RNG, sample uint64, src, dst []int32) {
	if c.MaxEmptyFrac == 0 {
		copy(dst, src)
		return
	}
	n := len(src)
	u, _ := r.Uniforms(sample, PurposeEmpty, 0)
	e := u * c.MaxEmptyFrac
	count := min(int(math.Ceil(float64(n)*e/(1-e))), n)
	if count == 0 {
		copy(dst, src)
		return
	}
	type key struct {
		k   uint64
		pos int
	}
	keys := make([]key, n)
	for i := range keys {
		w, _ := r.Block(sample, PurposeEmpty, uint32(i+1))
		keys[i] = key{w, i}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].k != keys[j].k {
			return keys[i].k < keys[j].k
		}
		return keys[i].pos < keys[j].pos
	})
	for i := range dst {
		dst[i] = -1
	}
	for _, k := range keys[:count] {
		dst[k.pos] = int32(c.EmptyID)
	}
	next := 0
	for i := range dst {
		if dst[i] == -1 {
			dst[i] = src[next]
			next++
		}
	}
}
