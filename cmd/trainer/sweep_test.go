package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/difftrain/difftrain/sweep"
	"github.com/difftrain/difftrain/train"
)

// TestSweepPlan: `sweep plan` writes a manifest and one config per run that
// `trainer train --config` reads strictly and that validates, flags runs
// outside the D/M range, and refuses to plan over an existing sweep.
func TestSweepPlan(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "grid")
	var out bytes.Buffer
	t.Cleanup(func() { root.SetArgs(nil); root.SetOut(nil) })
	args := []string{dir, "--vocab", "260", "--seq-len", "64", "--shapes", "L1-d32-H1,L2-d64", "--head-dim", "32",
		"--budgets", "1e10,1e11", "--noise", "masked,uniform", "--micro-batch", "4", "--tokens-per-s", "10000"}
	run := func() error {
		root.SetArgs(append([]string{"sweep", "plan"}, args...))
		root.SetOut(&out)
		return root.Execute()
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	m, err := sweep.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Runs) != 8 {
		t.Fatalf("%d runs, want 2 noise × 2 shapes × 2 budgets", len(m.Runs))
	}
	for _, r := range m.Runs {
		raw, err := os.ReadFile(sweep.ConfigPath(dir, r.Name))
		if err != nil {
			t.Fatal(err)
		}
		var c train.Config
		if err := yaml.UnmarshalStrict(raw, &c); err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		if err := c.Validate(); err != nil || c.Steps != r.Steps || c.Cooldown != 0 || c.Noise != r.Noise || c.Model.SeqLen != 64 {
			t.Errorf("%s: config %+v (%v)", r.Name, c, err)
		}
	}
	s := out.String()
	if !strings.Contains(s, "flagged masked-L2-d64-H2-C1e10: D/M") || !strings.Contains(s, "8 runs") {
		t.Errorf("table:\n%s", s)
	}
	if err := run(); err == nil {
		t.Error("planned twice into one directory")
	}
}
