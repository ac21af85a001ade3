package diffusion

import (
	"fmt"
	"math"
	"strings"
)

// Aggregation is how per-token losses form the objective (spec §2.5).
type Aggregation uint8

const (
	// AggSum: objective = Σ noise_mask·loss_tok (the as-run default).
	AggSum Aggregation = iota
	// AggMean: objective = Σ noise_mask·loss_tok / max(Σ noise_mask, 1).
	AggMean
)

func (a Aggregation) String() string {
	switch a {
	case AggSum:
		return "sum"
	case AggMean:
		return "mean"
	}
	return fmt.Sprintf("aggregation(%d)", uint8(a))
}

// MarshalText writes the aggregation's name.
func (a Aggregation) MarshalText() ([]byte, error) {
	if a != AggSum && a != AggMean {
		return nil, fmt.Errorf("loss aggregation %d unknown", uint8(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText reads "sum" or "mean".
func (a *Aggregation) UnmarshalText(b []byte) error {
	v, err := ParseAggregation(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// ParseAggregation reads "sum" or "mean".
func ParseAggregation(s string) (Aggregation, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "sum":
		return AggSum, nil
	case "mean":
		return AggMean, nil
	}
	return 0, fmt.Errorf("loss aggregation %q: want sum or mean", s)
}

// Config is the training-time noising and objective of spec §2–3. The zero
// value is not useful; start from DefaultConfig.
type Config struct {
	Schedule Schedule `json:"schedule"`
	Noise    Noise    `json:"noise"`

	PIndependent float64 `json:"noise_p_independent"`      // noise_p_independent: share of sequences with per-token λ (as run 0.2)
	PLinear      float64 `json:"noise_p_linear"`           // noise_p_linear: share with λ linear in position (as run 0)
	PPrompt      float64 `json:"noise_mask_p_prompt"`      // noise_mask_p_prompt: share of sequences with a clean prompt (0.2)
	MaxCondFrac  float64 `json:"noise_mask_max_cond_frac"` // noise_mask_max_cond_frac: c_max of the prompt/infill fraction (1.0)
	PInfill      float64 `json:"noise_mask_p_infilling"`   // noise_mask_p_infilling: share with random clean tokens (0)
	CausalPrompt bool    `json:"causal_prompt_attention"`  // causal_prompt_attention: prompt queries see keys j ≤ i (false)
	MaxEmptyFrac float64 `json:"max_empty_token_frac"`     // max_empty_token_frac F ∈ [0,1): empty-token insertion (0: off, as run)
	EmptyID      int     `json:"empty_token_id"`           // the empty (padding) token id (2)

	BetaIS      float64     `json:"beta_is_div"`      // beta_is_div (1.0)
	Aggregation Aggregation `json:"loss_aggregation"` // loss_aggregation (sum)
	LossScale   float64     `json:"loss_scale"`       // loss_scale (1.0)
}

// DefaultConfig returns the as-run settings of the spec for a noise type.
func DefaultConfig(n Noise) Config {
	return Config{
		Schedule: DefaultSchedule(), Noise: n,
		PIndependent: 0.2, PPrompt: 0.2, MaxCondFrac: 1, EmptyID: 2,
		BetaIS: 1, Aggregation: AggSum, LossScale: 1,
	}
}

// Validate reports the first invalid field by its spec name.
func (c Config) Validate() error {
	if err := c.Schedule.Validate(); err != nil {
		return err
	}
	if err := c.Noise.Validate(); err != nil {
		return err
	}
	probs := []struct {
		name string
		v    float64
	}{{"noise_p_independent", c.PIndependent}, {"noise_p_linear", c.PLinear},
		{"noise_mask_p_prompt", c.PPrompt}, {"noise_mask_max_cond_frac", c.MaxCondFrac},
		{"noise_mask_p_infilling", c.PInfill}}
	for _, p := range probs {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("diffusion config: %s = %g, must be in [0, 1]", p.name, p.v)
		}
	}
	if c.PIndependent+c.PLinear > 1 {
		return fmt.Errorf("diffusion config: noise_p_independent + noise_p_linear = %g, must be at most 1", c.PIndependent+c.PLinear)
	}
	if !(c.MaxEmptyFrac >= 0 && c.MaxEmptyFrac < 1) {
		return fmt.Errorf("diffusion config: max_empty_token_frac = %g, must be in [0, 1)", c.MaxEmptyFrac)
	}
	if c.MaxEmptyFrac > 0 && (c.EmptyID < 0 || c.EmptyID >= c.Noise.Vocab || c.EmptyID == c.Noise.MaskID) {
		return fmt.Errorf("diffusion config: empty_token_id %d must be a non-mask token in [0, %d)", c.EmptyID, c.Noise.Vocab)
	}
	if !(c.BetaIS >= 0) || math.IsInf(c.BetaIS, 0) {
		return fmt.Errorf("diffusion config: beta_is_div = %g, must be finite and non-negative", c.BetaIS)
	}
	if !(c.LossScale > 0) || math.IsInf(c.LossScale, 0) {
		return fmt.Errorf("diffusion config: loss_scale = %g, must be finite and positive", c.LossScale)
	}
	if c.Aggregation != AggSum && c.Aggregation != AggMean {
		return fmt.Errorf("diffusion config: loss_aggregation %v unknown", c.Aggregation)
	}
	return nil
}
