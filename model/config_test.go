package model

import (
	"strings"
	"testing"
)

func TestFLOPsAndParamCounts(t *testing.T) {
	for _, tc := range []struct {
		name          string
		cfg           Config
		flops         float64
		nonEmb, total int64
	}{
		// gidd-spec §9.1 and §4.5.
		{"L8-D512-H8 N2048", Default(131072, 8, 512, 8, 2048), 252837888, 25223680, 159441408},
		// gidd-spec §10.3.
		{"L2-d64-H1 N128", Default(260, 2, 64, 1, 128), 788736, 100160, 0},
		{"L2-d64-H2 N128", Default(260, 2, 64, 2, 128), 791040, 100160, 0},
		{"L4-d128-H2 N256", Default(260, 4, 128, 2, 256), 6309888, 793728, 0},
		{"L20-D1536 N2048", Default(131072, 20, 1536, 12, 2048), 0, 566662656, 969315840},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.flops != 0 {
				if got := tc.cfg.FLOPsPerToken(false); got != tc.flops {
					t.Errorf("FLOPs/token = %v, want %v", got, tc.flops)
				}
			}
			if got := tc.cfg.NonEmbeddingParams(); got != tc.nonEmb {
				t.Errorf("non-embedding params = %d, want %d", got, tc.nonEmb)
			}
			if tc.total != 0 {
				if got := tc.cfg.NonEmbeddingParams() + 2*int64(tc.cfg.Vocab*tc.cfg.Dim); got != tc.total {
					t.Errorf("total params = %d, want %d", got, tc.total)
				}
			}
		})
	}
	// §9.1: L12-D768 at N=2048 is 7.388e8 (printed to 4 digits).
	if got := Default(131072, 12, 768, 12, 2048).FLOPsPerToken(false); got < 7.3875e8 || got >= 7.3885e8 {
		t.Errorf("L12-D768 FLOPs/token = %v, want 7.388e8", got)
	}
}

func TestLayoutCountsEveryParameter(t *testing.T) {
	c := Default(260, 3, 64, 2, 16)
	ts := Layout(c)
	if len(ts) != 3*perLayer+3 {
		t.Fatalf("%d tensors, want %d", len(ts), 3*perLayer+3)
	}
	d, f := 64, 256
	want := 260*d + 3*(4*d*d+2*d*f+d /*attn norm*/ +2*d /*qk norm*/ +2*d /*sink*/ +d /*mlp norm*/ +f+d /*biases*/) + d + d*260
	if got := NumParams(c); got != want {
		t.Errorf("NumParams = %d, want %d", got, want)
	}
	off := 0
	for _, tn := range ts {
		if tn.Offset != off {
			t.Fatalf("%s at offset %d, want %d (tensors must tile the buffer)", tn.Name, tn.Offset, off)
		}
		off += tn.Size
	}
}

func TestValidateNamesTheField(t *testing.T) {
	base := Default(260, 2, 64, 2, 16)
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"num_heads", func(c *Config) { c.Heads = 3 }},
		{"RoPE", func(c *Config) { c.Dim, c.Heads = 66, 2 }}, // head dim 33
		{"mask_token_id", func(c *Config) { c.MaskID = 260 }},
		{"mask_token_id", func(c *Config) { c.MaskID = -1 }},
		{"max_seq_len", func(c *Config) { c.SeqLen = 0 }},
		{"num_layers", func(c *Config) { c.Layers = 0 }},
		{"hidden_size", func(c *Config) { c.Dim = -4 }},
		{"vocab_size", func(c *Config) { c.Vocab = 0 }},
		{"init_scale", func(c *Config) { c.InitScale = -0.1 }},
		{"resid_scale", func(c *Config) { c.ResidScale = -1 }},
		{"norm_eps", func(c *Config) { c.NormEps = -1e-6 }},
	} {
		c := base
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err = %v, want an error naming %q", tc.field, err, tc.field)
		}
	}
	if err := base.Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
}
