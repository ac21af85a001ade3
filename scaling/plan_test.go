package scaling

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/difftrain/difftrain/model"
)

func near(got, want, rel float64) bool { return math.Abs(got-want) <= rel*math.Abs(want) }

// TestFLOPTable reproduces the M and parameter values of gidd-spec §9.1,
// §9.7 and §10.3.
func TestFLOPTable(t *testing.T) {
	cases := []struct {
		shape       string
		n           int
		m, approx   float64
		params, tol float64
	}{
		{"L8-d512-H8", 2048, 252837888, 2.517e8, 25223680, 0},
		{"L12-d768-H12", 2048, 7.388e8, 0, 0, 5e-4},
		{"L20-d1536-H24", 2048, 4.161e9, 0, 0, 5e-4},
		{"L2-d64-H1", 128, 788736, 0, 100160, 0},
		{"L2-d64-H2", 128, 791040, 0, 0, 0},
		{"L4-d128-H2", 256, 6309888, 0, 793728, 0},
		// The §9.7 runs list their planned M, the 72Ld²+12LdN form.
		{"L18-d3072-H24", 2048, 0, 1.359e10, 2.039e9, 5e-4},
		{"L19-d3072-H24", 2048, 0, 1.434e10, 2.152e9, 5e-4},
		{"L34-d4608-H36", 2048, 0, 5.583e10, 8.666e9, 5e-4},
	}
	for _, c := range cases {
		s, err := ParseShape(c.shape, 64)
		if err != nil {
			t.Fatal(err)
		}
		if m := s.M(c.n); c.m != 0 && !near(m, c.m, c.tol) {
			t.Errorf("%s N=%d: M = %.6g, want %.6g", c.shape, c.n, m, c.m)
		}
		if c.approx != 0 && !near(s.MApprox(c.n), c.approx, 5e-4) {
			t.Errorf("%s: 72Ld²+12LdN = %.6g, want %.4g", c.shape, s.MApprox(c.n), c.approx)
		}
		if c.params != 0 && !near(float64(s.Params()), c.params, max(c.tol, 1e-12)) {
			t.Errorf("%s: params = %d, want %.6g", c.shape, s.Params(), c.params)
		}
		mc := model.Default(1000, s.Layers, s.Dim, s.Heads, c.n)
		if s.M(c.n) != mc.FLOPsPerToken(false) || s.Params() != mc.NonEmbeddingParams() {
			t.Errorf("%s: scaling and model disagree on M or params", c.shape)
		}
	}
}

// TestBatchLaw checks the §9.3 numbers: the "all" law in tokens and in
// sequences of 2048, and the 3B/10B planning law with its rounding, which
// must give back the batch and steps of the §9.7 runs.
func TestBatchLaw(t *testing.T) {
	l := PaperLaws()
	for _, d := range []float64{1e9, 1e11} {
		seqs := l.BatchTokens("all", d) / 2048
		if want := math.Pow(10, -5.712) * math.Pow(d, 0.8225); !near(seqs, want, 2e-3) {
			t.Errorf("D=%g: B* = %.5g sequences, want 10^-5.712·D^0.8225 = %.5g", d, seqs, want)
		}
	}
	if got, want := l.BatchTokens("masked", 1e10), math.Exp(0.7759*math.Log(1e10)-4.44879); got != want {
		t.Errorf("masked B*(1e10) = %g, want %g", got, want)
	}
	if l.BatchTokens("no-such-noise", 1e10) != l.BatchTokens("all", 1e10) {
		t.Error("an unknown noise type does not fall back on the \"all\" law")
	}
	big := Laws{Batch: map[string]Line{"all": {0.8179, math.Log(3.614098626e-3)}}, LR: PaperLaws().LR}
	runs := []struct {
		shape        string
		c            float64
		micro, mult  int
		batch, steps int
		d            float64
	}{
		{"L18-d3072-H24", 1e21, 512, 500, 1536, 23500, 73.9e9},
		{"L19-d3072-H24", 1e21, 512, 500, 1536, 22500, 70.8e9},
		{"L34-d4608-H36", 1e22, 1024, 1000, 3072, 29000, 182.5e9},
	}
	for _, r := range runs {
		s, _ := ParseShape(r.shape, 128)
		p := PlanSpec{Noises: []string{"masked"}, Shapes: []Shape{s}, Budgets: []float64{r.c}, SeqLen: 2048,
			MicroBatch: r.micro, StepMultiple: r.mult, Laws: big, WarmupFrac: 0.01, WarmupMax: 2000}
		got, err := Plan(p)
		if err != nil {
			t.Fatal(err)
		}
		g := got[0]
		if g.Batch != r.batch || g.Steps != r.steps || !near(g.D, r.d, 1e-3) {
			t.Errorf("%s at C=%g: batch %d, steps %d, D %.4g; the paper ran %d, %d, %.4g", r.shape, r.c, g.Batch, g.Steps, g.D, r.batch, r.steps, r.d)
		}
	}
}

// TestLRLaw checks §9.4: every per-noise law and the "all" law give
// η* ≈ 1.0 at B = 2^20 tokens.
func TestLRLaw(t *testing.T) {
	l := PaperLaws()
	for _, k := range sortedKeys(l.LR) {
		if eta := l.BaseLR(k, 1<<20); eta < 0.9 || eta > 1.1 {
			t.Errorf("%s: η*(2^20 tokens) = %.3f, want ≈ 1.0", k, eta)
		}
	}
	if got, want := l.BaseLR("uniform", 65536), math.Exp(0.3554*math.Log(65536)-4.93308); got != want {
		t.Errorf("uniform η*(65536) = %g, want %g", got, want)
	}
}

func TestPlanGrid(t *testing.T) {
	shapes, err := Ladder(20e6, 250e6, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	paper := map[string]int64{"L8-d512-H8": 25223680, "L10-d640-H10": 49.2e6, "L12-d768-H12": 85.1e6, "L16-d1024-H16": 201.6e6}
	found := 0
	for _, s := range shapes {
		if want, ok := paper[s.String()]; ok {
			found++
			if !near(float64(s.Params()), float64(want), 2e-3) {
				t.Errorf("%s: %d params, the paper's %d", s, s.Params(), want)
			}
		}
	}
	if found != len(paper) {
		t.Errorf("ladder %v lacks some of the paper's sizes %v", shapes, paper)
	}
	small, _ := ParseShape("L2-d64", 64)
	huge, _ := ParseShape("L8-d512", 64)
	p := PlanSpec{Noises: []string{"masked", "uniform"}, Shapes: []Shape{small, huge}, Budgets: []float64{1e13, 1e14},
		SeqLen: 128, MicroBatch: 4, Laws: PaperLaws(), WarmupFrac: 0.05, WarmupMax: 2000, Seed: 7, DMMin: 0.5, DMMax: 500, MinSteps: 50}
	runs, err := Plan(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 8 {
		t.Fatalf("%d runs, want 2 noise × 2 shapes × 2 budgets", len(runs))
	}
	names := map[string]bool{}
	for _, r := range runs {
		names[r.Name] = true
		if r.Batch%4 != 0 || r.Steps < 1 || r.Cooldown != 0 || r.Seed != 7 || r.LR <= 0 {
			t.Errorf("%s: batch %d steps %d cooldown %g seed %d lr %g", r.Name, r.Batch, r.Steps, r.Cooldown, r.Seed, r.LR)
		}
		if r.D < r.Budget/r.M || r.Compute < r.Budget {
			t.Errorf("%s: trains %g tokens for a budget of %g at M=%g", r.Name, r.D, r.Budget, r.M)
		}
		if r.Shape == huge && r.Budget == 1e13 && len(r.Flags) == 0 {
			t.Errorf("%s: D/M %.3g and %d steps are not flagged", r.Name, r.DOverM, r.Steps)
		}
	}
	if len(names) != len(runs) {
		t.Errorf("run names are not unique: %v", names)
	}
	if _, err := Plan(PlanSpec{Noises: []string{"masked"}, Shapes: []Shape{small}, Budgets: []float64{-1}, SeqLen: 128, MicroBatch: 1, Laws: PaperLaws()}); err == nil {
		t.Error("a negative budget was accepted")
	}
}

func TestLoadLaws(t *testing.T) {
	path := filepath.Join(t.TempDir(), "laws.yaml")
	os.WriteFile(path, []byte("batch:\n  masked: {slope: 0.5, intercept: -1}\n"), 0o644)
	l, err := LoadLaws(path)
	if err != nil {
		t.Fatal(err)
	}
	if l.Batch["masked"].Slope != 0.5 || l.Batch["uniform"] != PaperLaws().Batch["uniform"] {
		t.Errorf("laws file not merged over the paper's: %+v", l.Batch)
	}
	os.WriteFile(path, []byte("batch:\n  masked: {slope: 0.5, intercep: -1}\n"), 0o644)
	if _, err := LoadLaws(path); err == nil {
		t.Error("a misspelt field was accepted")
	}
}
