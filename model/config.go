// Package model is the GIDD transformer of gidd-spec §4–5: a bidirectional
// pre-norm encoder with full-width QK-norm, RoPE, a learned key/value sink,
// soft-capped attention, a squared-ReLU MLP and a zero-initialised output head,
// parameterised CompleteP-style. Forward and backward are written out layer by
// layer over one flat parameter buffer and one activation layout, and every
// operation runs on a compute.Backend.
package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Config is the architecture and parameterisation. JSON names are stable: they
// appear in checkpoints and exported config.json files.
type Config struct {
	Vocab   int `json:"vocab_size"`
	MaskID  int `json:"mask_token_id"`
	Layers  int `json:"num_layers"`
	Dim     int `json:"hidden_size"`
	Heads   int `json:"num_heads"`
	SeqLen  int `json:"max_seq_len"`
	MLPMult int `json:"mlp_multiplier"` // intermediate size = MLPMult·Dim (4)

	NormEps      float64 `json:"norm_eps"`       // 1e-6
	RopeTheta    float64 `json:"rope_theta"`     // 10000
	SoftCap      float64 `json:"attn_soft_cap"`  // 30; 0 disables
	QKNorm       bool    `json:"use_qk_norm"`    // true
	Sink         bool    `json:"attention_sink"` // true: learned k/v sink
	MLPBias      bool    `json:"mlp_bias"`       // true
	ResidScale   float64 `json:"resid_scale"`    // 4: branch multiplier resid_scale/L
	HeadScale    float64 `json:"head_scale"`     // 512: head multiplier head_scale/d
	InitScale    float64 `json:"init_scale"`     // 0.4: hidden init std init_scale/sqrt(d)
	AuxInitScale float64 `json:"aux_init_scale"` // 0.02: embedding init std
	ZeroHeadInit bool    `json:"zero_head_init"` // true
}

// Default returns the spec's defaults for the given shape.
func Default(vocab, layers, dim, heads, seqLen int) Config {
	return Config{
		Vocab: vocab, MaskID: 3, Layers: layers, Dim: dim, Heads: heads, SeqLen: seqLen, MLPMult: 4,
		NormEps: 1e-6, RopeTheta: 10000, SoftCap: 30, QKNorm: true, Sink: true, MLPBias: true,
		ResidScale: 4, HeadScale: 512, InitScale: 0.4, AuxInitScale: 0.02, ZeroHeadInit: true,
	}
}

// Validate reports the first invalid field by its JSON name.
func (c Config) Validate() error {
	pos := []struct {
		name string
		v    int
	}{{"vocab_size", c.Vocab}, {"num_layers", c.Layers}, {"hidden_size", c.Dim}, {"num_heads", c.Heads},
		{"max_seq_len", c.SeqLen}, {"mlp_multiplier", c.MLPMult}}
	for _, p := range pos {
		if p.v <= 0 {
			return fmt.Errorf("model config: %s = %d, must be positive", p.name, p.v)
		}
	}
	if c.Dim%c.Heads != 0 {
		return fmt.Errorf("model config: hidden_size %d is not divisible by num_heads %d", c.Dim, c.Heads)
	}
	if (c.Dim/c.Heads)%2 != 0 {
		return fmt.Errorf("model config: head dimension %d (hidden_size/num_heads) must be even for RoPE", c.Dim/c.Heads)
	}
	if c.MaskID < 0 || c.MaskID >= c.Vocab {
		return fmt.Errorf("model config: mask_token_id %d outside the vocabulary [0, %d)", c.MaskID, c.Vocab)
	}
	if c.Vocab < 2 {
		return fmt.Errorf("model config: vocab_size %d, need at least 2 (a mask and one token)", c.Vocab)
	}
	nonneg := []struct {
		name string
		v    float64
	}{{"norm_eps", c.NormEps}, {"rope_theta", c.RopeTheta}, {"attn_soft_cap", c.SoftCap}, {"resid_scale", c.ResidScale},
		{"head_scale", c.HeadScale}, {"init_scale", c.InitScale}, {"aux_init_scale", c.AuxInitScale}}
	for _, p := range nonneg {
		if p.v < 0 || p.v != p.v {
			return fmt.Errorf("model config: %s = %g, must be non-negative", p.name, p.v)
		}
	}
	if c.RopeTheta == 0 {
		return fmt.Errorf("model config: rope_theta must be positive")
	}
	return nil
}

// HeadDim is Dim/Heads.
func (c Config) HeadDim() int { return c.Dim / c.Heads }

// Hash identifies the architecture: two configs with the same hash have the
// same parameter layout and forward function.
func (c Config) Hash() string {
	b, _ := json.Marshal(c)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// FLOPsPerToken is M of gidd-spec §9.1: 3·L·(24d² + 4dN + 3HN), forward plus
// backward, non-embedding. With emb, the 2Vd embedding and 2Vd unembedding
// forward FLOPs (times 3) are added.
func (c Config) FLOPsPerToken(emb bool) float64 {
	d, n, h, l := float64(c.Dim), float64(c.SeqLen), float64(c.Heads), float64(c.Layers)
	m := 3 * l * (24*d*d + 4*d*n + 3*h*n)
	if emb {
		m += 3 * 4 * float64(c.Vocab) * d
	}
	return m
}

// NonEmbeddingParams is P_nonemb of gidd-spec §4.5, L·(12d² + 14d) + d (the
// paper's formula, kept as-is so counts match it).
func (c Config) NonEmbeddingParams() int64 {
	d, l := int64(c.Dim), int64(c.Layers)
	return l*(12*d*d+14*d) + d
}
