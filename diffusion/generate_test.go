package diffusion

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// oracle is a Denoiser that knows the clean sequence of every row: its
// logits put Confidence on the target token (0 everywhere when Confidence
// is 0, a uniform model).
type oracle struct {
	target     [][]int32 // per row, length seqLen
	V          int
	confidence float32
	calls      int
	seen       [][]int32 // tokens of every call
	fail       error
	short      bool
}

func (o *oracle) Logits(tokens, noise []int32, batch, seqLen int) ([]float32, error) {
	o.calls++
	o.seen = append(o.seen, append([]int32(nil), tokens...))
	if o.fail != nil {
		return nil, o.fail
	}
	out := make([]float32, batch*seqLen*o.V)
	if o.short {
		return out[1:], nil
	}
	for r := 0; r < batch; r++ {
		for j := 0; j < seqLen; j++ {
			if o.target != nil {
				out[(r*seqLen+j)*o.V+int(o.target[r%len(o.target)][j])] = o.confidence
			}
		}
	}
	return out, nil
}

func TestGenerateOracle(t *testing.T) {
	const V, N, C = 9, 12, 6
	s := DefaultSchedule()
	targets := [][]int32{{1, 2, 4, 5, 6, 7, 8, 0, 1, 2, 4, 5}, {8, 7, 6, 5, 4, 2, 1, 0, 8, 7, 6, 5}}
	prompts := [][]int32{targets[0][:4], targets[1][:2]} // kept whole: N−C = 6 ≥ len
	tests := []struct {
		name    string
		shift   float64
		sampler SamplerKind
		steps   int
		exact   bool
	}{
		{"masked adaptive", -1000, SamplerAdaptive, C, true},
		{"uniform adaptive", 1000, SamplerAdaptive, 2 * C, true},
		{"balanced adaptive", 0, SamplerAdaptive, 2 * C, true},
		{"masked ancestral", -1000, SamplerAncestral, 64, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := Noise{Shift: tt.shift, Scale: 1, MaskID: 3, Vocab: V}
			cfg := DefaultGenConfig(N)
			cfg.Steps, cfg.Sampler, cfg.Completion = tt.steps, tt.sampler, C
			o := &oracle{target: targets, V: V, confidence: 20}
			out, err := Generate(o, n, s, cfg, RNG{Seed: 1}, 100, prompts)
			if err != nil {
				t.Fatal(err)
			}
			wrong := 0
			for r := range out {
				want := targets[r][len(prompts[r]) : len(prompts[r])+C]
				for j := range want {
					if out[r][j] != want[j] {
						wrong++
						if tt.shift == -1000 && out[r][j] != 3 {
							t.Errorf("row %d: masked noise produced %d, want %d or the mask", r, out[r][j], want[j])
						}
					}
				}
			}
			if tt.exact && wrong > 0 || wrong > 2 {
				t.Errorf("%d wrong tokens: %v", wrong, out)
			}
			// Prompt positions never change; the tail keeps its prior tokens.
			for _, seen := range o.seen {
				for r, p := range prompts {
					row := seen[r*N : (r+1)*N]
					if !reflect.DeepEqual(row[:len(p)], p) {
						t.Fatalf("prompt %d changed: %v", r, row)
					}
					if !reflect.DeepEqual(row[len(p)+C:], o.seen[0][r*N+len(p)+C:(r+1)*N]) {
						t.Fatalf("tail of row %d changed", r)
					}
				}
			}
		})
	}
}

func TestGenerateCachesLogits(t *testing.T) {
	const V, N, C = 9, 8, 5
	n := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: V}
	cfg := DefaultGenConfig(N)
	cfg.Steps, cfg.Completion = C+6, C
	o := &oracle{target: [][]int32{{1, 2, 4, 5, 6, 7, 8, 0}}, V: V, confidence: 20}
	if _, err := Generate(o, n, DefaultSchedule(), cfg, RNG{Seed: 1}, 0, [][]int32{{1, 2, 4}}); err != nil {
		t.Fatal(err)
	}
	// One call per step that follows a change: the first C steps each
	// unmask one token, the step after them changes nothing.
	if o.calls != C+1 {
		t.Errorf("%d denoiser calls, want %d", o.calls, C+1)
	}
}

func TestGenerateDeterminism(t *testing.T) {
	const V, N = 9, 10
	n := Noise{Shift: 0, Scale: 1, MaskID: 3, Vocab: V}
	cfg := DefaultGenConfig(N)
	cfg.Steps, cfg.Completion, cfg.Temperature, cfg.TopK = 8, 6, 1, 2
	run := func(seed uint64, first uint64) [][]int32 {
		out, err := Generate(&oracle{V: V}, n, DefaultSchedule(), cfg, RNG{Seed: seed}, first, [][]int32{{1}, {2}, {4}})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := run(1, 0), run(1, 0)
	if !reflect.DeepEqual(a, b) {
		t.Error("same seed, different samples")
	}
	if reflect.DeepEqual(a, run(2, 0)) {
		t.Error("different seeds, same samples")
	}
	// A row's sample depends on its global index, not on its batch.
	single, err := Generate(&oracle{V: V}, n, DefaultSchedule(), cfg, RNG{Seed: 1}, 1, [][]int32{{2}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(single[0], a[1]) {
		t.Errorf("row 1 alone %v, in a batch %v", single[0], a[1])
	}
}

func TestGenerateErrors(t *testing.T) {
	n := Noise{Shift: 0, Scale: 1, MaskID: 3, Vocab: 9}
	s := DefaultSchedule()
	good := DefaultGenConfig(8)
	good.Completion, good.Steps = 4, 3
	bad := []struct {
		mod  func(*GenConfig)
		want string
	}{
		{func(c *GenConfig) { c.Steps = 0 }, "steps"},
		{func(c *GenConfig) { c.Completion = 9 }, "completion"},
		{func(c *GenConfig) { c.TopK = 0 }, "top_k"},
		{func(c *GenConfig) { c.Temperature = -1 }, "temperature"},
		{func(c *GenConfig) { c.SeqLen = 0 }, "seq_len"},
	}
	for _, b := range bad {
		c := good
		b.mod(&c)
		if _, err := Generate(&oracle{V: 9}, n, s, c, RNG{}, 0, [][]int32{{1}}); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: got %v", b.want, err)
		}
	}
	if _, err := Generate(&oracle{V: 9}, n, s, good, RNG{}, 0, [][]int32{{1, 12}}); err == nil || !strings.Contains(err.Error(), "position 1") {
		t.Errorf("bad prompt token: %v", err)
	}
	boom := errors.New("boom")
	if _, err := Generate(&oracle{V: 9, fail: boom}, n, s, good, RNG{}, 0, [][]int32{{1}}); !errors.Is(err, boom) {
		t.Errorf("denoiser error: %v", err)
	}
	if _, err := Generate(&oracle{V: 9, short: true}, n, s, good, RNG{}, 0, [][]int32{{1}}); err == nil || !strings.Contains(err.Error(), "logits") {
		t.Errorf("short logits: %v", err)
	}
	for _, name := range []string{"adaptive", "ancestral"} {
		if k, err := ParseSampler(name); err != nil || k.String() != name {
			t.Errorf("ParseSampler(%q) = %v, %v", name, k, err)
		}
	}
	for _, name := range []string{"hybrid", "mask", "uniform"} {
		if p, err := ParsePrior(name); err != nil || p.String() != name {
			t.Errorf("ParsePrior(%q) = %v, %v", name, p, err)
		}
	}
	if _, err := ParseSampler("greedy"); err == nil {
		t.Error("ParseSampler accepted greedy")
	}
	if _, err := ParsePrior("zeros"); err == nil {
		t.Error("ParsePrior accepted zeros")
	}
}

func TestLikelihood(t *testing.T) {
	const V, N = 9, 90
	s := DefaultSchedule()
	masked := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: V}
	prompt := []int32{1, 2, 4, 5, 6, 7, 8, 0, 1, 2, 4, 5, 6, 7, 8, 0, 1, 2}
	completion := make([]int32, 64)
	for i := range completion {
		completion[i] = []int32{0, 1, 2, 4, 5, 6, 7, 8}[(i*5)%8]
	}
	cfg := DefaultEvalConfig(N)
	cfg.Steps = 64
	// A uniform model over the V−1 non-mask tokens: E[elbo_tok] = log(V−1)
	// per token, since P(z = m) = 1−α cancels the weight 1/(1−α).
	cfg.EffectiveSNR = false
	uni := &oracle{V: V}
	res, err := Evaluate(uni, masked, s, cfg, RNG{Seed: 1}, 0, prompt, completion)
	if err != nil {
		t.Fatal(err)
	}
	if want := math.Log(V - 1); math.Abs(res.Avg-want) > 0.15*want {
		t.Errorf("uniform model: avg NLL %g, want ≈ %g", res.Avg, want)
	}
	if res.Tokens != 64 || !near(res.PPL, math.Exp(res.Avg), 1e-12) || len(res.PerToken) != 64 {
		t.Errorf("result %+v", res)
	}
	// With the effective SNR every sample that masks some token contributes
	// exactly C·log(V−1); samples that mask none contribute 0.
	cfg.EffectiveSNR = true
	res, err = Evaluate(uni, masked, s, cfg, RNG{Seed: 1}, 0, prompt, completion)
	if err != nil {
		t.Fatal(err)
	}
	if want := math.Log(V - 1); res.Avg > want*1.0001 || res.Avg < 0.6*want {
		t.Errorf("uniform model, effective SNR: avg NLL %g, want in [0.6, 1]·%g", res.Avg, want)
	}
	// A model that knows the text: near-zero NLL.
	target := append(append([]int32{}, prompt...), completion...)
	target = append(target, make([]int32, N-len(target))...) // the prior tail
	perfect := &oracle{target: [][]int32{target}, V: V, confidence: 25}
	res, err = Evaluate(perfect, masked, s, cfg, RNG{Seed: 1}, 0, prompt, completion)
	if err != nil {
		t.Fatal(err)
	}
	if res.Avg > 1e-3 || res.Avg < -1e-6 { // IS may dip by its 1e−12 offset
		t.Errorf("perfect model: avg NLL %g", res.Avg)
	}
	// Batching the grid does not change the estimate.
	cfg.Batch = 5
	res2, err := Evaluate(perfect, masked, s, cfg, RNG{Seed: 1}, 0, prompt, completion)
	if err != nil || !near(res2.NLL, res.NLL, 1e-12) {
		t.Errorf("batched NLL %g, unbatched %g (%v)", res2.NLL, res.NLL, err)
	}
	// A prompt longer than the window keeps its last SeqLen−C tokens.
	long := append(append([]int32{}, prompt...), prompt...)
	short := long[len(long)-(N-len(completion)):]
	r1, err1 := Evaluate(uni, masked, s, cfg, RNG{Seed: 3}, 0, long, completion)
	r2, err2 := Evaluate(uni, masked, s, cfg, RNG{Seed: 3}, 0, short, completion)
	if err1 != nil || err2 != nil || r1.NLL != r2.NLL {
		t.Errorf("truncated prompt: %g vs %g (%v, %v)", r1.NLL, r2.NLL, err1, err2)
	}
	// Every noise type gives a finite estimate.
	for _, b := range []float64{-2, 0, 2, 1000} {
		n := Noise{Shift: b, Scale: 1, MaskID: 3, Vocab: V}
		r, err := Evaluate(uni, n, s, cfg, RNG{Seed: 2}, 7, prompt, completion)
		if err != nil || math.IsNaN(r.Avg) || math.IsInf(r.Avg, 0) || r.Avg <= 0 {
			t.Errorf("shift %g: %+v %v", b, r.Avg, err)
		}
	}
	// Errors.
	if _, err := Evaluate(uni, masked, s, cfg, RNG{}, 0, prompt, nil); err == nil {
		t.Error("empty completion accepted")
	}
	if _, err := Evaluate(uni, masked, s, cfg, RNG{}, 0, prompt, []int32{1, 99}); err == nil {
		t.Error("out-of-vocabulary completion accepted")
	}
	bad := cfg
	bad.Steps = 0
	if _, err := Evaluate(uni, masked, s, bad, RNG{}, 0, prompt, completion); err == nil {
		t.Error("0 steps accepted")
	}
}
