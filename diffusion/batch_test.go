package diffusion

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

func testConfig(shift float64, vocab int) Config {
	return DefaultConfig(Noise{Shift: shift, Scale: 1, MaskID: 3, Vocab: vocab})
}

// cleanTokens returns deterministic non-mask tokens.
func cleanTokens(B, N, V int) []int32 {
	out := make([]int32, B*N)
	for i := range out {
		v := int32((i*7 + i/N*3) % (V - 1))
		if v >= 3 {
			v++
		}
		out[i] = v
	}
	return out
}

func indices(first, n int) []uint64 {
	idx := make([]uint64, n)
	for i := range idx {
		idx[i] = uint64(first + i)
	}
	return idx
}

func TestPromptLenRule(t *testing.T) {
	tests := []struct {
		f    float64
		n    int
		want int
	}{{0, 10, 1}, {0.05, 10, 1}, {0.12, 10, 2}, {0.5, 10, 5}, {0.999, 11, 10}, {1, 10, 10}, {1, 1, 1}, {0.5, 2048, 1024}}
	for _, tt := range tests {
		if got := PromptLen(tt.f, tt.n); got != tt.want {
			t.Errorf("PromptLen(%g, %d) = %d, want %d", tt.f, tt.n, got, tt.want)
		}
	}
	for _, tt := range []struct{ r, c, want float64 }{{0, 1, 0}, {0.5, 1, 0.5}, {1, 1, 1}, {0.5, 0.4, 0.2}} {
		if got := PromptFraction(tt.r, tt.c); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("PromptFraction(%g, %g) = %g, want %g", tt.r, tt.c, got, tt.want)
		}
	}
	// f has CDF (1 − cos(πf))/2: P(f < 1/4) = 0.1464.
	const n = 100000
	below := 0
	r := RNG{Seed: 9}
	for i := 0; i < n; i++ {
		u, _ := r.Uniforms(uint64(i), PurposePrompt, 0)
		if PromptFraction(u, 1) < 0.25 {
			below++
		}
	}
	if got, want := float64(below)/n, (1-math.Cos(math.Pi/4))/2; math.Abs(got-want) > 0.005 {
		t.Errorf("P(f < 1/4) = %g, want %g", got, want)
	}
}

// allowed is compute.Attn's rule for one query/key pair.
func allowed(flag []int32, causal bool, i, j int) bool {
	if flag[i] == 1 {
		return true
	}
	if causal {
		return j <= i
	}
	return flag[j] == 0
}

func TestPromptAndBlockAttention(t *testing.T) {
	const B, N, V = 400, 12, 9
	for _, causal := range []bool{false, true} {
		c := testConfig(0, V)
		c.PPrompt = 0.5
		c.CausalPrompt = causal
		var b Batch
		rng := RNG{Seed: 5}
		if err := c.Prepare(rng, indices(0, B), cleanTokens(B, N, V), N, 1, &b); err != nil {
			t.Fatal(err)
		}
		prompts := 0
		for s := 0; s < B; s++ {
			nm := b.NoiseMask[s*N : (s+1)*N]
			flag := b.Attn[s*N : (s+1)*N]
			uHas, uF := rng.Uniforms(uint64(s), PurposePrompt, 0)
			k := 0
			if uHas < c.PPrompt {
				k = PromptLen(PromptFraction(uF, 1), N)
				prompts++
			}
			for i := 0; i < N; i++ {
				want := int32(1)
				if i < k {
					want = 0
				}
				if nm[i] != want || flag[i] != want {
					t.Fatalf("seq %d pos %d: noise_mask %d attn %d, want %d (prompt of %d)", s, i, nm[i], flag[i], want, k)
				}
			}
			// The reference pattern: attn[i,j] = nm[i] ≥ nm[j], or, causal,
			// noisy rows see all and prompt rows see j ≤ i.
			for i := 0; i < N; i++ {
				for j := 0; j < N; j++ {
					ref := nm[i] >= nm[j]
					if causal {
						ref = nm[i] == 1 || j <= i
					}
					if got := allowed(flag, causal, i, j); got != ref {
						t.Fatalf("causal=%v seq %d: attn[%d,%d] = %v, want %v", causal, s, i, j, got, ref)
					}
				}
			}
			for i := 0; i < N; i++ {
				if nm[i] == 0 && (b.LogSNR[s*N+i] != CleanLogSNR || b.Noisy[s*N+i] != b.Labels[s*N+i] ||
					b.Params[(s*N+i)*compute.LossParamStride+compute.LPGradScale] != 0) {
					t.Fatalf("seq %d pos %d: clean token with λ %g, z %d (x %d)", s, i, b.LogSNR[s*N+i], b.Noisy[s*N+i], b.Labels[s*N+i])
				}
			}
		}
		if f := float64(prompts) / B; math.Abs(f-0.5) > 0.1 {
			t.Errorf("prompt share %g, want 0.5", f)
		}
	}
}

func TestInfillingKeepsAttention(t *testing.T) {
	const B, N, V = 200, 16, 9
	c := testConfig(0, V)
	c.PPrompt = 0
	c.PInfill = 1
	var b Batch
	if err := c.Prepare(RNG{Seed: 1}, indices(0, B), cleanTokens(B, N, V), N, 1, &b); err != nil {
		t.Fatal(err)
	}
	clean := 0
	for i := range b.NoiseMask {
		if b.Attn[i] != 1 {
			t.Fatalf("infilling changed the attention flag at %d", i)
		}
		if b.NoiseMask[i] == 0 {
			clean++
			if b.Noisy[i] != b.Labels[i] || b.LogSNR[i] != CleanLogSNR {
				t.Fatalf("infilled token %d is noised", i)
			}
		}
	}
	// E[f] = 1/2 for c_max = 1.
	if f := float64(clean) / (B * N); math.Abs(f-0.5) > 0.06 {
		t.Errorf("infilled share %g, want ≈0.5", f)
	}
	if got := c.CountNoised(RNG{Seed: 1}, indices(0, B), N); got != B*N-clean {
		t.Errorf("CountNoised = %d, want %d", got, B*N-clean)
	}
}

func TestPrepareSplitInvariance(t *testing.T) {
	const B, N, V = 8, 10, 7
	c := testConfig(0, V)
	c.PPrompt = 0.5
	c.PInfill = 0.3
	c.MaxEmptyFrac = 0.3
	clean := cleanTokens(B, N, V)
	idx := indices(1000, B)
	rng := RNG{Seed: 77}
	var whole Batch
	if err := c.Prepare(rng, idx, clean, N, 4, &whole); err != nil {
		t.Fatal(err)
	}
	// The same sequences as micro-batches of 1, 2 and 4, prepared in
	// reverse order (as different ranks would), give identical rows.
	for _, mb := range []int{1, 2, 4} {
		var parts Batch
		got := Batch{Labels: make([]int32, B*N), Noisy: make([]int32, B*N), LogSNR: make([]float32, B*N),
			NoiseMask: make([]int32, B*N), Attn: make([]int32, B*N), Params: make([]float32, B*N*compute.LossParamStride)}
		for s := B - mb; s >= 0; s -= mb {
			if err := c.Prepare(rng, idx[s:s+mb], clean[s*N:(s+mb)*N], N, 4, &parts); err != nil {
				t.Fatal(err)
			}
			copy(got.Labels[s*N:], parts.Labels)
			copy(got.Noisy[s*N:], parts.Noisy)
			copy(got.LogSNR[s*N:], parts.LogSNR)
			copy(got.NoiseMask[s*N:], parts.NoiseMask)
			copy(got.Attn[s*N:], parts.Attn)
			copy(got.Params[s*N*compute.LossParamStride:], parts.Params)
		}
		if !reflect.DeepEqual(got.Labels, whole.Labels) || !reflect.DeepEqual(got.Noisy, whole.Noisy) ||
			!reflect.DeepEqual(got.LogSNR, whole.LogSNR) || !reflect.DeepEqual(got.NoiseMask, whole.NoiseMask) ||
			!reflect.DeepEqual(got.Attn, whole.Attn) || !reflect.DeepEqual(got.Params, whole.Params) {
			t.Errorf("micro-batches of %d differ from the whole batch", mb)
		}
	}
	var other Batch
	if err := c.Prepare(RNG{Seed: 78}, idx, clean, N, 4, &other); err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(other.Noisy, whole.Noisy) {
		t.Error("a different seed gave the same noise")
	}
}

func TestPrepareDistributions(t *testing.T) {
	const B, N, V = 3000, 16, 9
	c := testConfig(-1000, V)
	var b Batch
	if err := c.Prepare(RNG{Seed: 3}, indices(0, B), cleanTokens(B, N, V), N, 1, &b); err != nil {
		t.Fatal(err)
	}
	indep, prompts := 0, 0
	for s := 0; s < B; s++ {
		lam := b.LogSNR[s*N : (s+1)*N]
		nm := b.NoiseMask[s*N : (s+1)*N]
		if nm[0] == 0 {
			prompts++
		}
		first := float32(math.NaN())
		varies := false
		for i, l := range lam {
			if nm[i] == 0 {
				continue
			}
			if l < -9 || l > 9 {
				t.Fatalf("λ %g outside [-9, 9]", l)
			}
			if first != first {
				first = l
			} else if l != first {
				varies = true
			}
			x, z := b.Labels[s*N+i], b.Noisy[s*N+i]
			if z != x && z != 3 {
				t.Fatalf("masked noise produced token %d for %d", z, x)
			}
			var want [compute.LossParamStride]float32
			c.Params(want[:], float64(l), int(z), int(x), 1, 1)
			got := b.Params[(s*N+i)*compute.LossParamStride:][:compute.LossParamStride]
			if !reflect.DeepEqual(want[:], got) {
				t.Fatalf("params %v, want %v", got, want)
			}
		}
		if varies {
			indep++
		}
	}
	// As run: 20% of sequences get per-token λ, 20% have a prompt.
	if f := float64(indep) / B; math.Abs(f-0.2) > 0.03 {
		t.Errorf("per-token λ share %g, want 0.2", f)
	}
	if f := float64(prompts) / B; math.Abs(f-0.2) > 0.03 {
		t.Errorf("prompt share %g, want 0.2", f)
	}
	// Overall, a token is masked with probability E[1−α] = 1/2 (t uniform).
	masked, noised := 0, 0
	for i := range b.Noisy {
		if b.NoiseMask[i] == 1 {
			noised++
			if b.Noisy[i] == 3 {
				masked++
			}
		}
	}
	if f := float64(masked) / float64(noised); math.Abs(f-0.5) > 0.03 {
		t.Errorf("masked share %g, want 0.5", f)
	}
}

func TestLinearSNR(t *testing.T) {
	const N = 9
	c := testConfig(0, 7)
	c.PIndependent, c.PLinear, c.PPrompt = 0, 1, 0
	var b Batch
	if err := c.Prepare(RNG{Seed: 1}, indices(0, 2), cleanTokens(2, N, 7), N, 1, &b); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < N; i++ {
		want := float32(c.Schedule.LogSNR(float64(i+1) / (N + 1)))
		if b.LogSNR[i] != want || b.LogSNR[N+i] != want {
			t.Errorf("position %d: λ %g, want %g", i, b.LogSNR[i], want)
		}
	}
	if b.LogSNR[0] <= b.LogSNR[N-1] {
		t.Error("earlier tokens should be cleaner")
	}
}

func TestMarginalSampling(t *testing.T) {
	const V, n = 5, 200000
	s := DefaultSchedule()
	r := RNG{Seed: 11}
	for _, incl := range []bool{false, true} {
		nz := Noise{Shift: 0.5, Scale: 1, MaskID: 3, Vocab: V, UniformIncludesMask: incl}
		l := 0.3
		alpha, a := s.Alpha(l), nz.A(l)
		counts := make([]float64, V)
		for i := 0; i < n; i++ {
			counts[nz.sampleMarginal(r, uint64(i), PurposeKeep, 0, 1, alpha, a)]++
		}
		for v := 0; v < V; v++ {
			want := (1 - alpha) * nz.Pi(l, v)
			if v == 1 {
				want += alpha
			}
			if incl { // uniform noise over the full vocabulary
				want = (1 - alpha) * (1 - a)
				if v != 3 {
					want = 0
				}
				want += (1 - alpha) * a / V
				if v == 1 {
					want += alpha
				}
			}
			sd := math.Sqrt(want * (1 - want) / n)
			if got := counts[v] / n; math.Abs(got-want) > 5*sd {
				t.Errorf("includeMask=%v: P(z=%d) = %g, want %g", incl, v, got, want)
			}
		}
	}
	// λ = 10 keeps > 95% of tokens; λ = −10 under masked noise masks > 95%.
	masked := Noise{Shift: -1000, Scale: 1, MaskID: 3, Vocab: V}
	kept, mask := 0, 0
	for i := 0; i < 10000; i++ {
		if masked.sampleMarginal(r, uint64(i), PurposeKeep, 0, 1, s.Alpha(10), masked.A(10)) == 1 {
			kept++
		}
		if masked.sampleMarginal(r, uint64(i), PurposeKeep, 1, 1, s.Alpha(-10), masked.A(-10)) == 3 {
			mask++
		}
	}
	if kept < 9500 || mask < 9500 {
		t.Errorf("λ=10 kept %d/10000, λ=−10 masked %d/10000", kept, mask)
	}
}

func TestEmptyTokens(t *testing.T) {
	const B, N, V = 300, 20, 9
	c := testConfig(0, V)
	c.MaxEmptyFrac = 0.4
	clean := make([]int32, B*N)
	for i := range clean {
		clean[i] = []int32{0, 1, 4, 5, 6, 7, 8}[i%7] // no empty (2) or mask (3) ids
	}
	var b Batch
	if err := c.Prepare(RNG{Seed: 2}, indices(0, B), clean, N, 1, &b); err != nil {
		t.Fatal(err)
	}
	var frac float64
	for s := 0; s < B; s++ {
		labels := b.Labels[s*N : (s+1)*N]
		u, _ := RNG{Seed: 2}.Uniforms(uint64(s), PurposeEmpty, 0)
		e := u * c.MaxEmptyFrac
		count := min(int(math.Ceil(N*e/(1-e))), N)
		if got := countID(labels, int32(c.EmptyID)); got != count {
			t.Fatalf("seq %d: %d empty slots, want %d", s, got, count)
		}
		// The original tokens keep their order; the overflow is dropped.
		var rest []int32
		for _, x := range labels {
			if x != int32(c.EmptyID) {
				rest = append(rest, x)
			}
		}
		if !reflect.DeepEqual(rest, clean[s*N:s*N+N-count]) {
			t.Fatalf("seq %d: non-empty labels %v, want %v", s, rest, clean[s*N:s*N+N-count])
		}
		frac += float64(count) / N
	}
	// E[count/N] ≈ E[e/(1−e)] for e ~ U(0, 0.4) = 0.277.
	if frac/B < 0.22 || frac/B > 0.34 {
		t.Errorf("mean empty share %g, want ≈0.28", frac/B)
	}
}

func countID(xs []int32, id int32) int {
	k := 0
	for _, x := range xs {
		if x == id {
			k++
		}
	}
	return k
}

// TestAggregation checks that Σ gradScale·loss_tok is the spec's objective
// times loss_scale, for sum and mean, and the all-clean edge case.
func TestAggregation(t *testing.T) {
	const B, N, V = 6, 8, 7
	for _, agg := range []Aggregation{AggSum, AggMean} {
		c := testConfig(0, V)
		c.Aggregation = agg
		c.PPrompt = 0.5
		c.LossScale = 3
		rng := RNG{Seed: 4}
		idx := indices(0, B)
		noised := c.CountNoised(rng, idx, N)
		div, err := c.Divisor(1, noised)
		if err != nil {
			t.Fatal(err)
		}
		var b Batch
		if err := c.Prepare(rng, idx, cleanTokens(B, N, V), N, div, &b); err != nil {
			t.Fatal(err)
		}
		if sum := countID(b.NoiseMask, 1); sum != noised {
			t.Errorf("CountNoised %d, batch has %d", noised, sum)
		}
		logits := make([]float32, V)
		var objective, scaled float64
		var m Metrics
		out := make([]float32, B*N*compute.LossOutStride)
		for i := range b.Labels {
			for v := range logits {
				logits[v] = float32(math.Sin(float64(i*V + v)))
			}
			tl := RefLoss32(logits, int(b.Labels[i]), int(b.Noisy[i]), float64(b.LogSNR[i]), c.Noise, c.Schedule, c.BetaIS)
			objective += float64(b.NoiseMask[i]) * tl.Loss
			scaled += float64(b.Params[i*compute.LossParamStride+compute.LPGradScale]) * tl.Loss
			o := out[i*compute.LossOutStride:]
			o[compute.LOLoss], o[compute.LOKL], o[compute.LOIS], o[compute.LOElbo] = float32(tl.Loss), float32(tl.KLLoss), float32(tl.ISLoss), float32(tl.Elbo)
		}
		if agg == AggMean {
			objective /= math.Max(float64(noised), 1)
		}
		if !near(scaled, c.LossScale*objective, 1e-6) {
			t.Errorf("%v: Σ gradScale·loss = %g, want loss_scale·objective = %g", agg, scaled, c.LossScale*objective)
		}
		if err := m.Add(b.NoiseMask, out); err != nil {
			t.Fatal(err)
		}
		if s := m.Summary(div); !near(s.Loss, objective, 1e-5) || s.Tokens != float64(noised) {
			t.Errorf("%v: logged loss %g, want %g", agg, s.Loss, objective)
		}
	}
	// All clean: the mean divisor is max(0, 1) = 1, gradients and metrics are 0.
	c := testConfig(0, V)
	c.Aggregation = AggMean
	div, err := c.Divisor(1, 0)
	if err != nil || div != 1 {
		t.Fatalf("Divisor(all clean) = %g, %v", div, err)
	}
	row := make([]float32, compute.LossParamStride)
	c.Params(row, CleanLogSNR, 1, 1, 0, div)
	if row[compute.LPGradScale] != 0 {
		t.Errorf("clean token gradScale %g", row[compute.LPGradScale])
	}
	var m Metrics
	if err := m.Add([]int32{0, 0}, make([]float32, 2*compute.LossOutStride)); err != nil {
		t.Fatal(err)
	}
	if s := m.Summary(div); s.Loss != 0 || s.Elbo != 0 || s.KL != 0 || s.IS != 0 || s.PPL != 1 {
		t.Errorf("all-clean summary %+v", s)
	}
	if _, err := c.Divisor(1, -1); err == nil {
		t.Error("negative token count accepted")
	}
	c.Aggregation = AggSum
	if _, err := c.Divisor(0, 10); err == nil {
		t.Error("zero micro-batches accepted")
	}
}

// TestSumAggregationSplit: with AggSum and divisor = number of reference
// micro-batches, the summed gradient scale over a global batch equals the
// reference's mean over micro-batches of per-micro-batch token sums.
func TestSumAggregationSplit(t *testing.T) {
	const B, N, V, micro = 8, 6, 7, 4
	c := testConfig(0, V)
	rng := RNG{Seed: 8}
	idx := indices(0, B)
	div, _ := c.Divisor(micro, 0)
	var b Batch
	if err := c.Prepare(rng, idx, cleanTokens(B, N, V), N, div, &b); err != nil {
		t.Fatal(err)
	}
	// Reference: per micro-batch Σ nm·loss with loss ≡ 1, averaged over micro-batches.
	var ref, got float64
	per := B / micro * N
	for mb := 0; mb < micro; mb++ {
		var s float64
		for i := mb * per; i < (mb+1)*per; i++ {
			s += float64(b.NoiseMask[i])
		}
		ref += s / micro
	}
	for i := range b.Labels {
		got += float64(b.Params[i*compute.LossParamStride+compute.LPGradScale])
	}
	if !near(got, ref, 1e-6) {
		t.Errorf("Σ gradScale = %g, want %g", got, ref)
	}
}

func TestMetricsMerge(t *testing.T) {
	a := Metrics{Tokens: 2, Loss: 1, KL: 0.5, IS: 0.25, Elbo: 3}
	b := Metrics{Tokens: 3, Loss: 2, KL: 1, IS: 0.5, Elbo: 4}
	a.Merge(b)
	v, err := MetricsFromVector(a.Vector())
	if err != nil || v != (Metrics{5, 3, 1.5, 0.75, 7}) {
		t.Errorf("merged %+v, %v", v, err)
	}
	if s := v.Summary(2); s.Loss != 1.5 || s.Elbo != 7.0/5 || !near(s.PPL, math.Exp(1.4), 1e-12) {
		t.Errorf("summary %+v", s)
	}
	if _, err := MetricsFromVector([]float64{1}); err == nil {
		t.Error("short vector accepted")
	}
	var m Metrics
	if err := m.Add([]int32{1}, make([]float32, 3)); err == nil {
		t.Error("short output accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	base := testConfig(0, 9)
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		field string
		mod   func(*Config)
	}{
		{"noise_p_independent", func(c *Config) { c.PIndependent = -0.1 }},
		{"noise_p_linear", func(c *Config) { c.PLinear = 1.5 }},
		{"noise_p_independent + noise_p_linear", func(c *Config) { c.PIndependent, c.PLinear = 0.6, 0.6 }},
		{"noise_mask_p_prompt", func(c *Config) { c.PPrompt = math.NaN() }},
		{"noise_mask_max_cond_frac", func(c *Config) { c.MaxCondFrac = 2 }},
		{"noise_mask_p_infilling", func(c *Config) { c.PInfill = -1 }},
		{"max_empty_token_frac", func(c *Config) { c.MaxEmptyFrac = 1 }},
		{"empty_token_id", func(c *Config) { c.MaxEmptyFrac, c.EmptyID = 0.1, 3 }},
		{"beta_is_div", func(c *Config) { c.BetaIS = -1 }},
		{"loss_scale", func(c *Config) { c.LossScale = 0 }},
		{"loss_aggregation", func(c *Config) { c.Aggregation = 7 }},
		{"min_log_snr", func(c *Config) { c.Schedule.Min = 10 }},
		{"mask_token_id", func(c *Config) { c.Noise.MaskID = 9 }},
	}
	for _, tt := range tests {
		c := base
		tt.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: got %v", tt.field, err)
		}
	}
}

func TestPrepareErrors(t *testing.T) {
	c := testConfig(0, 9)
	var b Batch
	tests := []struct {
		name   string
		idx    []uint64
		tokens []int32
		n      int
		div    float64
		want   string
	}{
		{"length", indices(0, 2), make([]int32, 5), 3, 1, "5 tokens for 2 sequences of 3"},
		{"range", indices(0, 1), []int32{0, 9, 1}, 3, 1, "outside the vocabulary"},
		{"negative", indices(0, 1), []int32{0, -1, 1}, 3, 1, "outside the vocabulary"},
		{"mask", indices(5, 1), []int32{0, 3, 1}, 3, 1, "sample 5 position 1"},
		{"divisor", indices(0, 1), []int32{0, 1, 2}, 3, 0, "divisor"},
		{"seqlen", indices(0, 1), []int32{}, 0, 1, "sequence length"},
	}
	for _, tt := range tests {
		err := c.Prepare(RNG{}, tt.idx, tt.tokens, tt.n, tt.div, &b)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := ParseAggregation("median"); err == nil {
		t.Error("ParseAggregation accepted median")
	}
}
