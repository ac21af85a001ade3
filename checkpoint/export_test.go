package checkpoint

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExport(t *testing.T) {
	dir := t.TempDir()
	st := testState(8, 4)
	save(t, dir, st, Options{})
	out := filepath.Join(t.TempDir(), "export")
	if err := Export(stepPath(dir, 4), out, false); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(filepath.Join(out, ExportWeights))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	ts, meta, err := readSafetensors(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" || meta["step"] != "4" {
		t.Errorf("metadata %v", meta)
	}
	if len(ts) != len(st.Model) {
		t.Fatalf("%d tensors, want %d", len(ts), len(st.Model))
	}
	for i, w := range st.Model {
		if ts[i].Name != w.Name || len(ts[i].Data) != len(w.Data) {
			t.Fatalf("tensor %d is %s, want %s", i, ts[i].Name, w.Name)
		}
		for j := range w.Data {
			if math.Float32bits(ts[i].Data[j]) != math.Float32bits(w.Data[j]) {
				t.Fatalf("%s[%d] differs", w.Name, j)
			}
		}
	}

	b, err := os.ReadFile(filepath.Join(out, ExportConfig))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"num_layers": 1.0, "hidden_size": 16.0, "num_heads": 2.0, "vocab_size": 64.0, "norm_eps": 1e-6,
		"resid_scale": 4.0, "head_scale": 512.0, "head_dim": 8.0, "intermediate_size": 64.0,
		"noise_type": "balanced", "hybrid_mixing_shift": 0.0, "hybrid_mixing_scale": 1.0,
		"model_type": "gidd", "torch_dtype": "float32",
	}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("config.json %s = %v, want %v", k, cfg[k], v)
		}
	}
	id, _ := cfg["difftrain"].(map[string]any)
	if id["step"] != 4.0 || id["model_hash"] != st.ModelHash || id["tokenizer"] != st.Tokenizer {
		t.Errorf("config.json difftrain = %v", id)
	}
	if !strings.Contains(string(b), "18446744073709551615") {
		t.Error("the training config lost precision of a large integer")
	}

	if err := Export(stepPath(dir, 4), out, false); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second export without force: err = %v", err)
	}
	if err := Export(stepPath(dir, 4), out, true); err != nil {
		t.Errorf("export with force: %v", err)
	}
	if names := entries(t, out); len(names) != 2 {
		t.Errorf("export dir holds %v", names)
	}
}

func TestExportRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	save(t, dir, testState(8, 4), Options{})
	os.Truncate(filepath.Join(stepPath(dir, 4), ModelFile), 100)
	out := filepath.Join(t.TempDir(), "export")
	err := Export(stepPath(dir, 4), out, false)
	if err == nil || !strings.Contains(err.Error(), ModelFile) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("a failed export created its output directory")
	}
}

func TestDeriveNoise(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]any // after a JSON round trip
	}{
		{`{"noise":"masked"}`, map[string]any{"noise_type": "masked", "hybrid_mixing_shift": -1000.0, "hybrid_mixing_scale": 1.0}},
		{`{"noise":" Uniform "}`, map[string]any{"noise_type": "uniform", "hybrid_mixing_shift": 1000.0, "hybrid_mixing_scale": 1.0}},
		{`{"noise":"0.5"}`, map[string]any{"noise_type": "hybrid", "hybrid_mixing_shift": 0.5, "hybrid_mixing_scale": 1.0}},
		{`{"hybrid_mixing_shift":2,"hybrid_mixing_scale":0.5}`, map[string]any{"noise_type": "high-uniform", "hybrid_mixing_shift": 2.0, "hybrid_mixing_scale": 0.5}},
		{`{"noise":"fancy"}`, map[string]any{"noise_type": "fancy"}},
		{`{"lr":1}`, map[string]any{"lr": 1.0}},
	}
	for _, tt := range tests {
		c, err := decodeObject(json.RawMessage(tt.in))
		if err != nil {
			t.Fatal(err)
		}
		deriveNoise(c)
		b, _ := json.Marshal(c)
		var got map[string]any
		json.Unmarshal(b, &got)
		if len(got) != len(tt.want) {
			t.Errorf("%s: got %v, want %v", tt.in, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", tt.in, k, got[k], v)
			}
		}
	}
}

func TestNoiseLabel(t *testing.T) {
	for shift, want := range map[float64]string{-1000: "masked", -2: "low-uniform", 0: "balanced", 2: "high-uniform", 1000: "uniform", 0.5: "hybrid"} {
		if got := noiseLabel(shift); got != want {
			t.Errorf("noiseLabel(%v) = %q, want %q", shift, got, want)
		}
	}
}
