package diffusion

import (
	"fmt"
	"strings"
)

// Denoiser is the model as the samplers see it: logits [batch·seqLen·Vocab]
// for noisy tokens [batch·seqLen] and the attention flags of compute.Attn
// (noise: 1 noisy, 0 clean prompt).
type Denoiser interface {
	Logits(tokens []int32, noise []int32, batch, seqLen int) ([]float32, error)
}

// SamplerKind selects the update rule of Generate.
type SamplerKind uint8

const (
	SamplerAdaptive  SamplerKind = iota // greedy confidence-based (spec §7.3), the default
	SamplerAncestral                    // exact GIDD posterior (spec §7.2)
)

func (k SamplerKind) String() string {
	switch k {
	case SamplerAdaptive:
		return "adaptive"
	case SamplerAncestral:
		return "ancestral"
	}
	return fmt.Sprintf("sampler(%d)", uint8(k))
}

// ParseSampler reads "adaptive" or "ancestral".
func ParseSampler(s string) (SamplerKind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "adaptive":
		return SamplerAdaptive, nil
	case "ancestral":
		return SamplerAncestral, nil
	}
	return 0, fmt.Errorf("sampler %q: want adaptive or ancestral", s)
}

// Prior is the pure-noise distribution generation starts from (spec §1.5).
type Prior uint8

const (
	// PriorHybrid: a uniform noise token with probability a(λ_min), else the
	// mask (the released models' prior; all-mask for masked noise, uniform
	// for uniform noise).
	PriorHybrid  Prior = iota
	PriorMask          // every position is the mask
	PriorUniform       // every position is a uniform noise token
)

func (p Prior) String() string {
	switch p {
	case PriorHybrid:
		return "hybrid"
	case PriorMask:
		return "mask"
	case PriorUniform:
		return "uniform"
	}
	return fmt.Sprintf("prior(%d)", uint8(p))
}

// ParsePrior reads "hybrid", "mask" or "uniform".
func ParsePrior(s string) (Prior, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "hybrid":
		return PriorHybrid, nil
	case "mask", "masked":
		return PriorMask, nil
	case "uniform":
		return PriorUniform, nil
	}
	return 0, fmt.Errorf("prior %q: want hybrid, mask or uniform", s)
}

// priorToken draws the prior token of one position. Uniform tokens follow
// Noise.UniformIncludesMask.
func priorToken(r RNG, sample uint64, pos int, p Prior, n Noise, s Schedule) int32 {
	w0, w1 := r.Block(sample, PurposePrior, uint32(pos))
	switch p {
	case PriorMask:
		return int32(n.MaskID)
	case PriorUniform:
		return n.uniformToken(w1)
	}
	if Float64(w0) < n.A(s.Min) {
		return n.uniformToken(w1)
	}
	return int32(n.MaskID)
}

// GenConfig configures Generate (spec §7.4).
type GenConfig struct {
	Steps       int         // T denoising steps (128)
	Grid        GridKind    // λ grid (cosine)
	Sampler     SamplerKind // adaptive
	TopK        int         // adaptive: tokens updated per step (1)
	Temperature float64     // 0: argmax (adaptive) / plain softmax (ancestral)
	Prior       Prior       // hybrid
	SeqLen      int         // the window N the model sees
	Completion  int         // tokens to generate after the prompt (128)
}

// DefaultGenConfig returns the spec's defaults for a window of seqLen.
func DefaultGenConfig(seqLen int) GenConfig {
	return GenConfig{Steps: 128, Grid: GridCosine, Sampler: SamplerAdaptive, TopK: 1,
		Prior: PriorHybrid, SeqLen: seqLen, Completion: min(128, seqLen)}
}

// Validate reports the first invalid field.
func (g GenConfig) Validate() error {
	switch {
	case g.Steps <= 0:
		return fmt.Errorf("generate: steps = %d, must be positive", g.Steps)
	case g.SeqLen <= 0:
		return fmt.Errorf("generate: seq_len = %d, must be positive", g.SeqLen)
	case g.Completion <= 0 || g.Completion > g.SeqLen:
		return fmt.Errorf("generate: completion = %d, must be in [1, seq_len=%d]", g.Completion, g.SeqLen)
	case g.Sampler == SamplerAdaptive && g.TopK <= 0:
		return fmt.Errorf("generate: top_k = %d, must be positive", g.TopK)
	case !(g.Temperature >= 0):
		return fmt.Errorf("generate: temperature = %g, must be non-negative", g.Temperature)
	case g.Sampler > SamplerAncestral:
		return fmt.Errorf("generate: unknown sampler %v", g.Sampler)
	case g.Prior > PriorUniform:
		return fmt.Errorf("generate: unknown prior %v", g.Prior)
	case g.Grid > GridLinear:
		return fmt.Errorf("generate: unknown grid %v", g.Grid)
	}
	return nil
}

// Generate completes each prompt with cfg.Completion tokens (spec §7.4). Row
// r is sample first+r of the generator rng: its prior and every sampler draw
// depend only on (rng.Seed, first+r, step, position).
//
// Layout per row: [prompt (its last SeqLen−Completion tokens; noise_mask 0)
// | completion (noise_mask 1) | tail]. The tail keeps its prior tokens, is
// frozen (noise_mask 0) but is flagged noisy in the attention, as in the
// reference. Logits are recomputed only after a step changed a token.
// Prompt tokens are never changed; the adaptive sampler, which the reference
// lets pick any position once all scores are 0, only writes noised ones.
func Generate(d Denoiser, n Noise, s Schedule, cfg GenConfig, rng RNG, first uint64, prompts [][]int32) ([][]int32, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	B, N, V := len(prompts), cfg.SeqLen, n.Vocab
	if B == 0 {
		return nil, nil
	}
	grid, err := Grid(cfg.Grid, cfg.Steps, s)
	if err != nil {
		return nil, err
	}
	z := make([]int32, B*N)
	nm := make([]int32, B*N)
	attn := make([]int32, B*N)
	plen := make([]int, B)
	for r, p := range prompts {
		if len(p) > N-cfg.Completion {
			p = p[len(p)-(N-cfg.Completion):]
		}
		plen[r] = len(p)
		row := z[r*N : (r+1)*N]
		for j := range row {
			row[j] = priorToken(rng, first+uint64(r), j, cfg.Prior, n, s)
		}
		for j, t := range p {
			if t < 0 || int(t) >= V {
				return nil, fmt.Errorf("generate: prompt %d position %d: token %d outside the vocabulary [0, %d)", r, j, t, V)
			}
			row[j] = t
		}
		for j := range N {
			if j >= len(p) {
				attn[r*N+j] = 1
			}
			if j >= len(p) && j < len(p)+cfg.Completion {
				nm[r*N+j] = 1
			}
		}
	}
	var logits []float32
	probs := make([]float64, V)
	post := make([]float64, V)
	scores := make([]float64, N)
	dirty := true
	for i := 0; i < cfg.Steps; i++ {
		if dirty {
			if logits, err = d.Logits(z, attn, B, N); err != nil {
				return nil, fmt.Errorf("generate: step %d: %w", i, err)
			}
			if len(logits) != B*N*V {
				return nil, fmt.Errorf("generate: step %d: denoiser returned %d logits, want %d", i, len(logits), B*N*V)
			}
		}
		dirty = false
		p := StepPurpose(PurposeSampler, i)
		for r := 0; r < B; r++ {
			sample := first + uint64(r)
			for j := 0; j < N; j++ {
				t := r*N + j
				if nm[t] == 0 {
					scores[j] = 0
					continue
				}
				lg := logits[t*V : (t+1)*V]
				switch cfg.Sampler {
				case SamplerAdaptive:
					maskedSoftmax32(lg, n.MaskID, 1, probs)
					scores[j] = (probs[Argmax(probs)] - probs[z[t]]) * n.Pi(AdaptivePriorLogSNR, int(z[t]))
				case SamplerAncestral:
					maskedSoftmax32(lg, n.MaskID, cfg.Temperature, probs)
					Posterior(probs, int(z[t]), grid[i], grid[i+1], n, s, post)
					u, _ := rng.Uniforms(sample, p, uint32(j))
					if v := int32(InverseCDF(post, u)); v != z[t] {
						z[t] = v
						dirty = true
					}
				}
			}
			if cfg.Sampler != SamplerAdaptive {
				continue
			}
			for _, j := range TopK(scores, cfg.TopK) {
				t := r*N + j
				if nm[t] == 0 {
					continue
				}
				lg := logits[t*V : (t+1)*V]
				maskedSoftmax32(lg, n.MaskID, cfg.Temperature, probs)
				v := int32(Argmax(probs))
				if cfg.Temperature > 0 {
					u, _ := rng.Uniforms(sample, p, uint32(j))
					v = int32(InverseCDF(probs, u))
				}
				if v != z[t] {
					z[t] = v
					dirty = true
				}
			}
		}
	}
	out := make([][]int32, B)
	for r := range out {
		lo := r*N + plen[r]
		out[r] = append([]int32(nil), z[lo:lo+cfg.Completion]...)
	}
	return out, nil
}
