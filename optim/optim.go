// Package optim is the optimizer of gidd-spec §5.3 and §6: LaProp (and
// AdamW) with the CompleteP parameter groups and their learning rates,
// decay and ε, the warmup–stable–decay schedule, and optional global-norm
// gradient clipping. The update itself runs on a compute.Backend
// (Backend.Update, one call per tensor); Ref is a float64 reference used in
// tests.
package optim

import (
	"fmt"
	"math"
	"strings"

	"github.com/difftrain/difftrain/compute"
)

// Config holds the optimizer hyper-parameters. Names in errors are the CLI
// names of the spec.
type Config struct {
	Kind        compute.OptKind `json:"optimizer"`     // LaProp (default) or AdamW
	LR          float64         `json:"lr"`            // base learning rate η (lr)
	AuxLRFactor float64         `json:"aux_lr_factor"` // aux_lr_factor: LR of ln, bias, emb_unemb = AuxLRFactor·η (0.02)
	WeightDecay float64         `json:"weight_decay"`  // weight_decay: bulk decay = WeightDecay·Dim (0)
	LNWD        float64         `json:"ln_wd"`         // ln_wd (0)
	BiasWD      float64         `json:"bias_wd"`       // bias_wd (0)
	Beta1       float64         `json:"beta1"`         // 0.9
	Beta2       float64         `json:"beta2"`         // 0.99 (as run 0.98 for batches ≥ 256, see DefaultBeta2)
	AdamEps     float64         `json:"adam_eps"`      // adam_eps: ε = AdamEps/(Dim·Layers) (1e-8)
	ClipNorm    float64         `json:"clip_grad"`     // global gradient-norm clip; 0 disables (the as-run behaviour)
	Dim         int             `json:"hidden_size"`   // model width d
	Layers      int             `json:"num_layers"`    // model depth L
	Schedule    WSD             `json:"schedule"`
}

// Default returns the spec's defaults for a model of width dim and depth
// layers trained for steps updates with base LR lr.
func Default(lr float64, dim, layers, steps int) Config {
	return Config{
		Kind: compute.LaProp, LR: lr, AuxLRFactor: 0.02, Beta1: 0.9, Beta2: 0.99, AdamEps: 1e-8,
		Dim: dim, Layers: layers, Schedule: WSD{Steps: steps, Warmup: min(2000, steps)},
	}
}

// DefaultBeta2 is the as-run β2 for a global batch of the given number of
// sequences: 0.99 up to 128, 0.98 from 256 (0.98 in between as well).
func DefaultBeta2(batch int) float64 {
	if batch <= 128 {
		return 0.99
	}
	return 0.98
}

// ParseKind reads "laprop" or "adamw".
func ParseKind(s string) (compute.OptKind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "laprop":
		return compute.LaProp, nil
	case "adamw":
		return compute.AdamW, nil
	}
	return 0, fmt.Errorf("optimizer %q: want laprop or adamw", s)
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Kind != compute.LaProp && c.Kind != compute.AdamW {
		return fmt.Errorf("optimizer: unknown kind %d", c.Kind)
	}
	nonneg := []struct {
		name string
		v    float64
	}{{"lr", c.LR}, {"aux_lr_factor", c.AuxLRFactor}, {"weight_decay", c.WeightDecay},
		{"ln_wd", c.LNWD}, {"bias_wd", c.BiasWD}, {"adam_eps", c.AdamEps}, {"clip_grad", c.ClipNorm}}
	for _, p := range nonneg {
		if !(p.v >= 0) || math.IsInf(p.v, 0) {
			return fmt.Errorf("optimizer: %s = %g, must be finite and non-negative", p.name, p.v)
		}
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"beta1", c.Beta1}, {"beta2", c.Beta2}} {
		if !(p.v >= 0 && p.v < 1) {
			return fmt.Errorf("optimizer: %s = %g, must be in [0, 1)", p.name, p.v)
		}
	}
	if c.Dim <= 0 {
		return fmt.Errorf("optimizer: hidden_size = %d, must be positive", c.Dim)
	}
	if c.Layers <= 0 {
		return fmt.Errorf("optimizer: num_layers = %d, must be positive", c.Layers)
	}
	if err := c.Schedule.Validate(); err != nil {
		return fmt.Errorf("optimizer: %w", err)
	}
	return nil
}

// Eps is ε = AdamEps/(Dim·Layers), shared by every group.
func (c Config) Eps() float64 { return c.AdamEps / float64(c.Dim*c.Layers) }

// GroupLR is the learning rate of a group before the schedule: η/d for Bulk,
// AuxLRFactor·η otherwise.
func (c Config) GroupLR(g Group) float64 {
	if g == Bulk {
		return c.LR / float64(c.Dim)
	}
	return c.AuxLRFactor * c.LR
}

// GroupWD is the decoupled weight decay of a group: WeightDecay·d for Bulk,
// LNWD for LN, BiasWD for Bias, 0 for EmbUnemb.
func (c Config) GroupWD(g Group) float64 {
	switch g {
	case Bulk:
		return c.WeightDecay * float64(c.Dim)
	case LN:
		return c.LNWD
	case Bias:
		return c.BiasWD
	}
	return 0
}

// Hyper returns the backend update of a tensor of group g at update k (k
// previous updates): LR = GroupLR·schedule(k), Step = k+1.
func (c Config) Hyper(g Group, k int) compute.OptStep {
	return compute.OptStep{
		Kind:  c.Kind,
		LR:    float32(c.GroupLR(g) * c.Schedule.At(k)),
		WD:    float32(c.GroupWD(g)),
		Beta1: float32(c.Beta1),
		Beta2: float32(c.Beta2),
		Eps:   float32(c.Eps()),
		Step:  k + 1,
	}
}
