package optim

import (
	"math"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

func near(got, want, rel float64) bool {
	return got == want || math.Abs(got-want) <= rel*math.Abs(want)
}

func TestLaPropTrace(t *testing.T) {
	// Spec §6.1: β1 = 0.9, β2 = 0.99, ε = 0, wd = 0, gradients 0.5, −1, 2.
	want := []struct{ b1, b2, v, gh, m float64 }{
		{0, 0, 0.25, 1, 1},
		{0.473684211, 0.497487437, 0.626884422, -1.26300846, -0.191057086},
		{0.63099631, 0.663311, 1.76257533, 1.50645496, 0.435331122},
	}
	r := NewRef(1)
	p := []float64{0}
	for i, g := range []float64{0.5, -1, 2} {
		r.Step(compute.LaProp, p, []float64{g}, 1, 0, 0.9, 0.99, 0)
		tt := float64(r.T)
		b1 := 1 - 0.1/(1-math.Pow(0.9, tt))
		b2 := 1 - 0.01/(1-math.Pow(0.99, tt))
		w := want[i]
		gh := g / math.Sqrt(r.V[0])
		for _, c := range []struct {
			name      string
			got, want float64
		}{{"b̃1", b1, w.b1}, {"b̃2", b2, w.b2}, {"ν", r.V[0], w.v}, {"ĝ", gh, w.gh}, {"μ", r.M[0], w.m}} {
			if c.want == 0 && math.Abs(c.got) > 1e-15 || c.want != 0 && !near(c.got, c.want, 1e-6) {
				t.Errorf("t=%d: %s = %.9g, want %.9g", i+1, c.name, c.got, c.want)
			}
		}
	}
	// θ moved by −lr·Σμ.
	if !near(p[0], -(1 - 0.191057086 + 0.435331122), 1e-6) {
		t.Errorf("θ = %g", p[0])
	}
}

func TestRefAdamWAndDecay(t *testing.T) {
	// The first AdamW step is −lr·sign(g) (ε = 0) minus lr·wd·θ.
	r := NewRef(2)
	p := []float64{1, -2}
	r.Step(compute.AdamW, p, []float64{3, -0.5}, 0.1, 0.5, 0.9, 0.999, 0)
	if !near(p[0], 1-0.1*(1+0.5*1), 1e-12) || !near(p[1], -2-0.1*(-1+0.5*-2), 1e-12) {
		t.Errorf("AdamW step: %v", p)
	}
	// LaProp decay is decoupled and scaled by the LR: zero gradient, θ·(1 − lr·wd).
	r = NewRef(1)
	p = []float64{2}
	r.Step(compute.LaProp, p, []float64{0}, 0.1, 0.5, 0.9, 0.99, 1e-8)
	if !near(p[0], 2*(1-0.05), 1e-12) {
		t.Errorf("LaProp decay: %g", p[0])
	}
}

func TestWSDTable(t *testing.T) {
	w := WSD{Steps: 1000, Warmup: 100, Cooldown: 200}
	if err := w.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		k    int
		want float64
	}{{0, 0}, {1, 0.01}, {50, 0.5}, {100, 1}, {799, 1}, {800, 1}, {850, 0.5}, {950, 0.133974596}, {999, 0.00250313}, {1000, 0}, {1200, 0}}
	for _, tt := range tests {
		got := w.At(tt.k)
		// 1e-6 relative, or 1e-8 absolute for the 6-digit η(999).
		if math.Abs(got-tt.want) > math.Max(1e-6*tt.want, 1e-8) {
			t.Errorf("η(%d) = %.9g, want %.9g", tt.k, got, tt.want)
		}
	}
	// The same schedule with the cooldown as a fraction.
	f := WSD{Steps: 1000, Warmup: 100, Cooldown: 0.2}
	for _, tt := range tests {
		if f.At(tt.k) != w.At(tt.k) {
			t.Errorf("fraction 0.2: η(%d) = %g, absolute %g", tt.k, f.At(tt.k), w.At(tt.k))
		}
	}
	// As run: no cooldown, constant after warmup; and no warmup at all.
	c := WSD{Steps: 1000, Warmup: 100}
	if c.At(999) != 1 || c.At(5000) != 1 || c.CooldownSteps() != 0 {
		t.Errorf("cooldown 0: η(999) = %g", c.At(999))
	}
	if (WSD{Steps: 10}).At(0) != 1 {
		t.Error("no warmup: η(0) should be 1")
	}
}

func TestWSDValidate(t *testing.T) {
	tests := []struct {
		w    WSD
		want string
	}{
		{WSD{Steps: 0}, "max_training_steps"},
		{WSD{Steps: 10, Warmup: -1}, "warmup_steps"},
		{WSD{Steps: 10, Warmup: 11}, "warmup_steps"},
		{WSD{Steps: 10, Cooldown: -0.1}, "cooldown_steps"},
		{WSD{Steps: 10, Cooldown: math.NaN()}, "cooldown_steps"},
		{WSD{Steps: 10, Cooldown: 11}, "cooldown_steps"},
		{WSD{Steps: 10, Warmup: 5, Cooldown: 0.6}, "warmup_steps"},
	}
	for _, tt := range tests {
		err := tt.w.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: got %v, want an error naming %s", tt.w, err, tt.want)
		}
	}
}

func TestGroups(t *testing.T) {
	tests := []struct {
		name string
		ndim int
		want Group
	}{
		{"model.embed_tokens.weight", 2, EmbUnemb},
		{"lm_head.weight", 2, EmbUnemb},
		{"layers.0.attn_norm.weight", 1, LN},
		{"layers.0.attn.q_norm.weight", 1, LN},
		{"final_norm.weight", 1, LN},
		{"layers.3.mlp.up_proj.bias", 1, Bias},
		{"layers.3.mlp.down_proj.bias", 1, Bias},
		{"layers.0.attn.k_sink", 1, Bias},
		{"layers.0.attn.v_sink", 1, Bias},
		{"layers.0.attn.k_sink", 2, Bias},
		{"layers.0.attn.q_proj.weight", 2, Bulk},
		{"layers.0.attn.o_proj.weight", 2, Bulk},
		{"layers.0.mlp.down_proj.weight", 2, Bulk},
		// Order matters: "norm" wins over everything, "embed_tokens" over "bias".
		{"embed_tokens_norm", 2, LN},
		{"embed_tokens.bias", 1, EmbUnemb},
		{"lm_head.bias", 1, Bias},
	}
	for _, tt := range tests {
		if got := GroupOf(tt.name, tt.ndim); got != tt.want {
			t.Errorf("GroupOf(%q, %d) = %v, want %v", tt.name, tt.ndim, got, tt.want)
		}
	}
}

func TestGroupHyperParameters(t *testing.T) {
	// Spec §5.3 example: d = 512, L = 8, η = 0.5.
	c := Default(0.5, 512, 8, 10000)
	c.WeightDecay = 0.1
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.GroupLR(Bulk); got != 9.765625e-4 {
		t.Errorf("bulk LR %g", got)
	}
	for _, g := range []Group{LN, Bias, EmbUnemb} {
		if got := c.GroupLR(g); !near(got, 0.01, 1e-15) {
			t.Errorf("%v LR %g", g, got)
		}
	}
	if got := c.Eps(); got != 2.44140625e-12 {
		t.Errorf("ε = %g", got)
	}
	if got := c.GroupWD(Bulk); !near(got, 51.2, 1e-12) || c.GroupWD(EmbUnemb) != 0 {
		t.Errorf("bulk wd %g", got)
	}
	// LR·wd is width-independent for the bulk group.
	c2 := Default(0.5, 1024, 8, 10000)
	c2.WeightDecay = 0.1
	if !near(c.GroupLR(Bulk)*c.GroupWD(Bulk), c2.GroupLR(Bulk)*c2.GroupWD(Bulk), 1e-12) {
		t.Error("bulk lr·wd depends on width")
	}
	h := c.Hyper(Bulk, 1000)
	if h.Step != 1001 || !near(float64(h.LR), 9.765625e-4*0.5, 1e-6) || h.Beta1 != 0.9 || h.Beta2 != 0.99 || h.Kind != compute.LaProp {
		t.Errorf("Hyper = %+v", h)
	}
	if c.Hyper(LN, 0).LR != 0 {
		t.Error("the first update must use η(0) = 0")
	}
	if DefaultBeta2(128) != 0.99 || DefaultBeta2(256) != 0.98 {
		t.Error("DefaultBeta2")
	}
}

func TestConfigValidate(t *testing.T) {
	base := Default(0.5, 64, 2, 100)
	tests := []struct {
		field string
		mod   func(*Config)
	}{
		{"lr", func(c *Config) { c.LR = -1 }},
		{"lr", func(c *Config) { c.LR = math.NaN() }},
		{"aux_lr_factor", func(c *Config) { c.AuxLRFactor = -0.1 }},
		{"weight_decay", func(c *Config) { c.WeightDecay = math.Inf(1) }},
		{"ln_wd", func(c *Config) { c.LNWD = -1 }},
		{"bias_wd", func(c *Config) { c.BiasWD = -1 }},
		{"adam_eps", func(c *Config) { c.AdamEps = -1e-8 }},
		{"clip_grad", func(c *Config) { c.ClipNorm = -1 }},
		{"beta1", func(c *Config) { c.Beta1 = 1 }},
		{"beta2", func(c *Config) { c.Beta2 = -0.1 }},
		{"hidden_size", func(c *Config) { c.Dim = 0 }},
		{"num_layers", func(c *Config) { c.Layers = -1 }},
		{"max_training_steps", func(c *Config) { c.Schedule.Steps = 0 }},
		{"warmup_steps", func(c *Config) { c.Schedule.Warmup = 101 }},
		{"kind", func(c *Config) { c.Kind = 9 }},
	}
	for _, tt := range tests {
		c := base
		tt.mod(&c)
		_, err := New(c)
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: got %v", tt.field, err)
		}
	}
	if _, err := New(base); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"laprop", "AdamW"} {
		if _, err := ParseKind(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseKind("sgd"); err == nil {
		t.Error("ParseKind accepted sgd")
	}
}
