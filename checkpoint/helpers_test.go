package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// testModelConfig is a model.Config-shaped JSON object (the package does not
// import model).
func testModelConfig(layers int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"vocab_size":64,"mask_token_id":3,"num_layers":%d,"hidden_size":16,"num_heads":2,`+
		`"max_seq_len":32,"mlp_multiplier":4,"norm_eps":1e-6,"rope_theta":10000,"attn_soft_cap":30,"use_qk_norm":true,`+
		`"attention_sink":true,"mlp_bias":true,"resid_scale":4,"head_scale":512,"init_scale":0.4,"aux_init_scale":0.02,"zero_head_init":true}`, layers))
}

// testState returns a state whose tensors hold seeded random values and the
// awkward ones a bitwise comparison must preserve (NaN payloads, -0, Inf,
// subnormals).
func testState(seed uint64, step int64) *State {
	r := rand.New(rand.NewPCG(seed, uint64(step)))
	fill := func(n int) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(r.NormFloat64())
		}
		return d
	}
	special := []float32{math.Float32frombits(0x7fc00001), math.Float32frombits(0xffa00000), float32(math.Copysign(0, -1)),
		float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(1), math.MaxFloat32}
	emb := fill(64 * 16)
	copy(emb, special)
	model := []Tensor{
		{Name: "model.embed_tokens.weight", Shape: []int{64, 16}, Data: emb},
		{Name: "model.layers.0.attn_norm.weight", Shape: []int{16}, Data: fill(16)},
		{Name: "model.layers.0.self_attn.q_proj.kernel", Shape: []int{16, 16}, Data: fill(256)},
		{Name: "lm_head.kernel", Shape: []int{16, 64}, Data: fill(16 * 64)},
	}
	var optim []Tensor
	for _, t := range model {
		optim = append(optim, Tensor{Name: t.Name + ".m", Shape: t.Shape, Data: fill(len(t.Data))})
		optim = append(optim, Tensor{Name: t.Name + ".v", Shape: t.Shape, Data: fill(len(t.Data))})
	}
	return &State{
		Step: step, Seed: seed, Run: fmt.Sprintf("run-%d", seed), Cursor: step * 8, Epoch: step / 10,
		Schedule:    Schedule{Step: step, LR: 3e-4 * float64(step+1) / 7},
		Model:       model,
		Optim:       optim,
		Residuals:   fill(100),
		ModelConfig: testModelConfig(1),
		ModelHash:   "abcdef0123456789",
		Config:      json.RawMessage(`{"model":{"num_layers":1},"lr":0.0003,"steps":1000,"hybrid_mixing_shift":0,"hybrid_mixing_scale":1,"seed":18446744073709551615}`),
		Tokenizer:   "bytes-v1",
		DatasetID:   "tiny-" + fmt.Sprint(seed),
		Version:     "test",
		Extra:       json.RawMessage(`{"generation":7}`),
	}
}

// equalStates fails t unless got equals want field by field, tensors bitwise.
func equalStates(t *testing.T, got, want *State) {
	t.Helper()
	g, w := *got, *want
	if w.Run == "" {
		w.Run = runID(w.Seed)
	}
	w.ModelConfig, w.Config, w.Extra = compact(w.ModelConfig), compact(w.Config), compact(w.Extra)
	if w.ConfigHash == "" {
		w.ConfigHash, _ = HashConfig(w.Config)
	}
	for _, grp := range []struct {
		name string
		a, b []Tensor
	}{{"model", g.Model, w.Model}, {"optim", g.Optim, w.Optim}, {"residuals", residualTensors(g.Residuals), residualTensors(w.Residuals)}} {
		if len(grp.a) != len(grp.b) {
			t.Fatalf("%s: %d tensors, want %d", grp.name, len(grp.a), len(grp.b))
		}
		for i := range grp.a {
			a, b := grp.a[i], grp.b[i]
			if a.Name != b.Name || !slices.Equal(a.Shape, b.Shape) || len(a.Data) != len(b.Data) {
				t.Fatalf("%s tensor %d: %s %v (%d) want %s %v (%d)", grp.name, i, a.Name, a.Shape, len(a.Data), b.Name, b.Shape, len(b.Data))
			}
			for j := range a.Data {
				if math.Float32bits(a.Data[j]) != math.Float32bits(b.Data[j]) {
					t.Fatalf("%s %s[%d] = %#x, want %#x", grp.name, a.Name, j, math.Float32bits(a.Data[j]), math.Float32bits(b.Data[j]))
				}
			}
		}
	}
	g.Model, g.Optim, g.Residuals, w.Model, w.Optim, w.Residuals = nil, nil, nil, nil, nil, nil
	g.Dir, w.Dir = "", ""
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("state fields differ:\n got %s\nwant %s", gb, wb)
	}
}

// save writes st into dir with a fresh writer and waits for it.
func save(t *testing.T, dir string, st *State, opt Options) {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	w, err := NewWriter(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(st); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// logBuffer is a slog.Logger writing into a buffer safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLog() (*slog.Logger, *logBuffer) {
	var lb logBuffer
	return slog.New(slog.NewTextHandler(&lb, &slog.HandlerOptions{Level: slog.LevelDebug})), &lb
}

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// leftovers lists temporary and trash directories in dir.
func leftovers(t *testing.T, dir string) []string {
	var out []string
	for _, n := range entries(t, dir) {
		if strings.HasPrefix(n, tmpPrefix) || strings.HasPrefix(n, trashPrefix) {
			out = append(out, n)
		}
	}
	return out
}

func stepPath(dir string, step int64) string { return filepath.Join(dir, StepDir(step)) }
