// Package train is one process's part of a training step: take this rank's
// slice of the global batch, noise it, run forward, loss and backward on the
// backend in micro-batches, hand gradients to a GradSync (the allreduce) as
// backward produces them, and apply the optimizer. It also wraps the model
// for sampling and likelihood evaluation. The node package runs it in a ring;
// `trainer train` with one node runs it alone.
package train

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"

	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/optim"
)

// Config is everything that defines a run's trajectory. Its JSON is stored in
// checkpoints and read from `--config` files; field names follow the
// reference implementation's CLI where one exists.
type Config struct {
	Model model.Config `json:"model"`

	// Noise and objective (gidd-spec §1–3).
	Noise               string  `json:"noise"` // masked, low-uniform, balanced, high-uniform, uniform, or a shift
	MinLogSNR           float64 `json:"min_log_snr"`
	MaxLogSNR           float64 `json:"max_log_snr"`
	PIndependent        float64 `json:"noise_p_independent"`
	PLinear             float64 `json:"noise_p_linear"`
	PPrompt             float64 `json:"noise_mask_p_prompt"`
	MaxCondFrac         float64 `json:"noise_mask_max_cond_frac"`
	PInfill             float64 `json:"noise_mask_p_infilling"`
	CausalPrompt        bool    `json:"causal_prompt_attention"`
	MaxEmptyFrac        float64 `json:"max_empty_token_frac"`
	UniformIncludesMask bool    `json:"uniform_noise_includes_mask"`
	BetaIS              float64 `json:"beta_is_div"`
	LossAggregation     string  `json:"loss_aggregation"` // sum or mean
	LossScale           float64 `json:"loss_scale"`

	// Optimizer and schedule (gidd-spec §5.3, §6).
	Optimizer   string  `json:"optimizer"` // laprop or adamw
	LR          float64 `json:"lr"`
	AuxLRFactor float64 `json:"aux_lr_factor"`
	WeightDecay float64 `json:"weight_decay"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	AdamEps     float64 `json:"adam_eps"`
	ClipGrad    float64 `json:"clip_grad"` // 0: off (as run)
	Warmup      int     `json:"warmup_steps"`
	Cooldown    float64 `json:"cooldown_steps"` // fraction (< 1) or count

	Steps      int    `json:"max_training_steps"`
	Batch      int    `json:"batch_size"`       // global batch, sequences
	MicroBatch int    `json:"micro_batch_size"` // sequences per forward/backward
	Seed       uint64 `json:"seed"`
}

// Default returns the spec's defaults around a model shape.
func Default(m model.Config) Config {
	return Config{
		Model: m, Noise: "masked", MinLogSNR: -9, MaxLogSNR: 9,
		PIndependent: 0.2, PPrompt: 0.2, MaxCondFrac: 1, BetaIS: 1, LossAggregation: "sum", LossScale: 1,
		Optimizer: "laprop", LR: 0.5, AuxLRFactor: 0.02, Beta1: 0.9, Beta2: 0.99, AdamEps: 1e-8,
		Warmup: 2000, Steps: 10000, Batch: 8, MicroBatch: 8, Seed: 1,
	}
}

// Defaults is the one default configuration of a run: the flags of
// `trainer train` take their defaults from it, and --config files (the
// Kubernetes ConfigMap among them) decode on top of it. It is Default around
// the CLI's model shape, with a schedule sized for a short run. Vocabulary
// and sequence length 0 mean the dataset's; micro_batch_size 0 means the
// global batch (see Resolve).
func Defaults() Config {
	c := Default(model.Default(0, 4, 128, 4, 0))
	c.Warmup, c.Cooldown, c.Steps = 100, 0.2, 1000
	c.Batch, c.MicroBatch = 16, 0
	return c
}

// ParseConfig decodes a YAML or JSON config (the JSON names of Config) on
// top of base: the fields the file names replace base's, all others keep
// base's values. Unknown fields are errors.
func ParseConfig(raw []byte, base Config) (Config, error) {
	c := base
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return base, fmt.Errorf("train config: %w", err)
	}
	return c, nil
}

// Resolve fills in what a configuration leaves to the run: a
// micro_batch_size of 0 becomes the global batch, and a warmup longer than
// the steps before the cooldown shrinks to fit (short runs with the default
// warmup).
func (c *Config) Resolve() {
	if c.MicroBatch == 0 {
		c.MicroBatch = c.Batch
	}
	cool := int(c.Cooldown)
	if c.Cooldown < 1 {
		cool = int(c.Cooldown * float64(c.Steps))
	}
	c.Warmup = max(0, min(c.Warmup, c.Steps-cool))
}

// Diffusion returns the noising configuration.
func (c Config) Diffusion() (diffusion.Config, error) {
	n, err := diffusion.NewNoise(c.Noise, c.Model.Vocab, c.Model.MaskID)
	if err != nil {
		return diffusion.Config{}, err
	}
	n.UniformIncludesMask = c.UniformIncludesMask
	agg, err := diffusion.ParseAggregation(c.LossAggregation)
	if err != nil {
		return diffusion.Config{}, err
	}
	d := diffusion.DefaultConfig(n)
	d.Schedule = diffusion.Schedule{Min: c.MinLogSNR, Max: c.MaxLogSNR}
	d.PIndependent, d.PLinear, d.PPrompt = c.PIndependent, c.PLinear, c.PPrompt
	d.MaxCondFrac, d.PInfill, d.CausalPrompt = c.MaxCondFrac, c.PInfill, c.CausalPrompt
	d.MaxEmptyFrac, d.BetaIS, d.Aggregation, d.LossScale = c.MaxEmptyFrac, c.BetaIS, agg, c.LossScale
	return d, d.Validate()
}

// Optim returns the optimizer configuration.
func (c Config) Optim() (optim.Config, error) {
	kind, err := optim.ParseKind(c.Optimizer)
	if err != nil {
		return optim.Config{}, err
	}
	o := optim.Default(c.LR, c.Model.Dim, c.Model.Layers, c.Steps)
	o.Kind, o.AuxLRFactor, o.WeightDecay = kind, c.AuxLRFactor, c.WeightDecay
	o.Beta1, o.Beta2, o.AdamEps, o.ClipNorm = c.Beta1, c.Beta2, c.AdamEps, c.ClipGrad
	o.Schedule = optim.WSD{Steps: c.Steps, Warmup: c.Warmup, Cooldown: c.Cooldown}
	return o, o.Validate()
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	if _, err := c.Diffusion(); err != nil {
		return err
	}
	if _, err := c.Optim(); err != nil {
		return err
	}
	switch {
	case c.Batch <= 0:
		return fmt.Errorf("train config: batch_size = %d, must be positive", c.Batch)
	case c.MicroBatch <= 0:
		return fmt.Errorf("train config: micro_batch_size = %d, must be positive", c.MicroBatch)
	case c.Batch%c.MicroBatch != 0:
		return fmt.Errorf("train config: batch_size %d is not a multiple of micro_batch_size %d", c.Batch, c.MicroBatch)
	}
	return nil
}

// MicroBatches is the number of micro-batches of one global batch in the
// reference configuration; the gradient is averaged over them (spec §2.5)
// whatever the world size.
func (c Config) MicroBatches() int { return c.Batch / c.MicroBatch }

// Hash identifies the trajectory-defining configuration.
func (c Config) Hash() string {
	b, _ := json.Marshal(c)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}
