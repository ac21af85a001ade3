package train

import (
	"encoding/json"
	"strings"
	"testing"
)

// A config file that names a few fields keeps every other field at its
// default (a file once zeroed lr, betas, eps, warmup, seed, ...).
func TestParseConfigKeepsDefaults(t *testing.T) {
	base := Defaults()
	c, err := ParseConfig([]byte("lr: 0.25\nmodel:\n  num_layers: 2\nbatch_size: 32\n"), base)
	if err != nil {
		t.Fatal(err)
	}
	want := base
	want.LR, want.Model.Layers, want.Batch = 0.25, 2, 32
	if c != want {
		t.Fatalf("decoded\n%+v\nwant\n%+v", c, want)
	}
	if c.Beta1 == 0 || c.Beta2 == 0 || c.AdamEps == 0 || c.Seed == 0 || c.BetaIS == 0 || c.AuxLRFactor == 0 || c.PPrompt == 0 {
		t.Fatalf("defaults lost: %+v", c)
	}
}

func TestParseConfigRefusesUnknownFields(t *testing.T) {
	for _, raw := range []string{"learning_rate: 0.1\n", "model:\n  layers: 2\n", `{"lr": 0.1, "bogus": 1}`} {
		if _, err := ParseConfig([]byte(raw), Defaults()); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("%q: err %v, want an unknown-field error", raw, err)
		}
	}
}

// The JSON a run writes (RUN_DIR/config.json, checkpoints) reads back to
// the same config through ParseConfig.
func TestConfigJSONRoundTrip(t *testing.T) {
	c := Defaults()
	c.Model.Vocab, c.Model.SeqLen, c.LR, c.Cooldown = 260, 64, 0.125, 0.3
	c.Resolve()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseConfig(b, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got != c {
		t.Fatalf("round trip\n%+v\nwant\n%+v", got, c)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	c := Defaults()
	c.Steps = 50
	c.Resolve()
	if c.MicroBatch != c.Batch || c.Warmup != 40 {
		t.Fatalf("resolved micro %d warmup %d, want %d and 40 (50 steps, 20%% cooldown)", c.MicroBatch, c.Warmup, c.Batch)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("lr: 0.25\nmodel:\n  num_layers: 2\n"))
	f.Add([]byte(`{"batch_size": 32, "noise": "balanced"}`))
	f.Add([]byte("model: null\nseed: 18446744073709551615\n"))
	f.Add([]byte("unknown: 1\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		base := Defaults()
		c, err := ParseConfig(raw, base)
		if err != nil {
			if c != base {
				t.Fatalf("a failed parse changed the config: %+v", c)
			}
			return
		}
		b, err := json.Marshal(c)
		if err != nil {
			return // a non-finite number cannot be written back; Validate refuses it
		}
		again, err := ParseConfig(b, Config{})
		if err != nil || again != c {
			t.Fatalf("round trip of %s: %+v, %v", b, again, err)
		}
	})
}
