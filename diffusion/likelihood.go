package diffusion

import (
	"fmt"
	"math"
)

// EvalConfig configures Evaluate (spec §7.6).
type EvalConfig struct {
	Steps        int      // T SNR samples (128)
	Grid         GridKind // linear
	EffectiveSNR bool     // use the per-sequence effective λ̂ (true)
	SeqLen       int      // the window N the model sees
	Batch        int      // rows per Denoiser call (0: all T at once)
	Prior        Prior    // tokens after the completion (hybrid)
}

// DefaultEvalConfig returns the spec's defaults for a window of seqLen.
func DefaultEvalConfig(seqLen int) EvalConfig {
	return EvalConfig{Steps: 128, Grid: GridLinear, EffectiveSNR: true, SeqLen: seqLen, Batch: 16}
}

// Likelihood is the ELBO-based negative log-likelihood of a completion.
type Likelihood struct {
	NLL      float64   // Σ over completion tokens of the mean elbo_tok, nats
	Tokens   int       // completion length
	Avg      float64   // NLL / Tokens, nats/token
	PPL      float64   // exp(Avg)
	PerToken []float64 // mean elbo_tok of each completion token
}

// Evaluate estimates −log p(completion | prompt) by the deterministic ELBO
// quadrature of spec §7.6. The row is [prompt (noise_mask 0; its last
// SeqLen−len(completion) tokens) | completion | prior tokens]. For each grid
// point λ_i, i < T, the non-prompt positions are noised with q_{λ_i}; with
// EffectiveSNR the weights and marginals use λ̂ = clip(log(α̂/(1−α̂+1e−12)
// + 1e−12)), α̂ the fraction of completion tokens left unchanged. elbo_tok
// (w_el clipped at 1e6) is averaged over the T samples and summed over the
// completion. Draws depend only on (rng.Seed, sample, i, position).
func Evaluate(d Denoiser, n Noise, s Schedule, cfg EvalConfig, rng RNG, sample uint64, prompt, completion []int32) (Likelihood, error) {
	if err := n.Validate(); err != nil {
		return Likelihood{}, err
	}
	N, V, C := cfg.SeqLen, n.Vocab, len(completion)
	switch {
	case cfg.Steps <= 0:
		return Likelihood{}, fmt.Errorf("likelihood: steps = %d, must be positive", cfg.Steps)
	case C == 0 || C > N:
		return Likelihood{}, fmt.Errorf("likelihood: completion of %d tokens, need 1 to seq_len=%d", C, N)
	case cfg.Batch < 0:
		return Likelihood{}, fmt.Errorf("likelihood: batch = %d, must be non-negative", cfg.Batch)
	}
	grid, err := Grid(cfg.Grid, cfg.Steps, s)
	if err != nil {
		return Likelihood{}, err
	}
	if len(prompt) > N-C {
		prompt = prompt[len(prompt)-(N-C):]
	}
	P := len(prompt)
	x := make([]int32, N)
	nm := make([]int32, N)
	for j := range x {
		switch {
		case j < P:
			x[j] = prompt[j]
		case j < P+C:
			x[j] = completion[j-P]
			nm[j] = 1
		default:
			x[j] = priorToken(rng, sample, j, cfg.Prior, n, s)
			nm[j] = 1
		}
		if x[j] < 0 || int(x[j]) >= V {
			return Likelihood{}, fmt.Errorf("likelihood: position %d: token %d outside the vocabulary [0, %d)", j, x[j], V)
		}
	}
	rows := cfg.Batch
	if rows == 0 || rows > cfg.Steps {
		rows = cfg.Steps
	}
	z := make([]int32, rows*N)
	attn := make([]int32, rows*N)
	lam := make([]float64, rows)
	xhat, q, p := make([]float64, V), make([]float64, V), make([]float64, V)
	l64 := make([]float64, V)
	res := Likelihood{Tokens: C, PerToken: make([]float64, C)}
	for i0 := 0; i0 < cfg.Steps; i0 += rows {
		nb := min(rows, cfg.Steps-i0)
		for r := 0; r < nb; r++ {
			i := i0 + r
			li := grid[i]
			alpha, a := s.Alpha(li), n.A(li)
			row := z[r*N : (r+1)*N]
			kept := 0
			for j := range row {
				row[j] = x[j]
				attn[r*N+j] = nm[j]
				if nm[j] == 1 {
					row[j] = n.sampleMarginal(rng, sample, StepPurpose(PurposeEval, i), j, x[j], alpha, a)
				}
				if j >= P && j < P+C && row[j] == x[j] {
					kept++
				}
			}
			lam[r] = li
			if cfg.EffectiveSNR {
				ah := float64(kept) / float64(C)
				lam[r] = s.Clip(math.Log(ah/(1-ah+1e-12) + 1e-12))
			}
		}
		logits, err := d.Logits(z[:nb*N], attn[:nb*N], nb, N)
		if err != nil {
			return Likelihood{}, fmt.Errorf("likelihood: %w", err)
		}
		if len(logits) != nb*N*V {
			return Likelihood{}, fmt.Errorf("likelihood: denoiser returned %d logits, want %d", len(logits), nb*N*V)
		}
		for r := 0; r < nb; r++ {
			for j := P; j < P+C; j++ {
				t := r*N + j
				for v, f := range logits[t*V : (t+1)*V] {
					l64[v] = float64(f)
				}
				MaskedSoftmax64(l64, n.MaskID, xhat)
				tl := refLoss(xhat, int(x[j]), int(z[t]), lam[r], n, s, 1, q, p)
				res.PerToken[j-P] += tl.Elbo / float64(cfg.Steps)
			}
		}
	}
	for _, e := range res.PerToken {
		res.NLL += e
	}
	res.Avg = res.NLL / float64(C)
	res.PPL = math.Exp(res.Avg)
	return res, nil
}
