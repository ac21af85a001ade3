package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

// TestFitTable: `fit --table --json` on runs drawn from the §9.5 masked and
// uniform surfaces prints M_opt, D_opt, L_opt per noise type, and --out
// gets fit.json and the plots.
func TestFitTable(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("noise,M,D,loss\n")
	surf := map[string][5]float64{"masked": {222, 0.292, 1.92e3, 0.367, 2.17}, "uniform": {294, 0.305, 1.34e3, 0.346, 2.19}}
	for _, noise := range []string{"masked", "uniform"} {
		s := surf[noise]
		for _, c := range []float64{1e17, 1e18, 1e19} {
			for i := range 7 {
				m := 1e7 * math.Pow(c/1e17, 0.56) * math.Pow(10, float64(i-3)/2)
				d := c / m
				fmt.Fprintf(&b, "%s,%g,%g,%g\n", noise, m, d, s[0]*math.Pow(m, -s[1])+s[2]*math.Pow(d, -s[3])+s[4])
			}
		}
	}
	table := filepath.Join(dir, "runs.csv")
	os.WriteFile(table, []byte(b.String()), 0o644)
	var out bytes.Buffer
	f := &fitFlags{table: table, out: filepath.Join(dir, "out"), json: true, bootstrap: 50, surfBoot: 10, delta: 1e-3, lawDelta: 0.1, ema: 0.95}
	if err := runFit(&out, f, nil); err != nil {
		t.Fatal(err)
	}
	var got map[string]struct {
		M_opt, D_opt, L_opt *struct{ A, Exp, Lo, Hi float64 }
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, n := range []string{"masked", "uniform"} {
		g := got[n]
		if g.M_opt == nil || g.D_opt == nil || g.L_opt == nil || math.Abs(g.M_opt.Exp+g.D_opt.Exp-1) > 1e-6 || g.L_opt.Exp >= 0 {
			t.Errorf("%s: %+v", n, g)
		}
	}
	for _, p := range []string{"fit.json", "isoflop_masked.png", "isoflop_uniform.png", "L_opt.png", "M_opt.png", "D_opt.png"} {
		if _, err := os.Stat(filepath.Join(dir, "out", p)); err != nil {
			t.Error(err)
		}
	}
	// The uniform/masked comparison at each budget pairs the two optima of
	// that budget.
	raw, _ := os.ReadFile(filepath.Join(dir, "out", "fit.json"))
	var fj struct {
		Fits map[string]struct {
			IsoFLOP []struct {
				C       float64
				Optimum *struct{ M, D, Loss float64 }
			} `json:"iso_flop"`
		}
		Ratios []struct {
			C, Ratio, Optima_ratio, M_ratio, D_ratio float64
		} `json:"uniform_over_masked"`
	}
	if err := json.Unmarshal(raw, &fj); err != nil {
		t.Fatal(err)
	}
	if len(fj.Ratios) != 3 {
		t.Fatalf("%d uniform/masked rows, want one per budget: %s", len(fj.Ratios), raw)
	}
	for i, r := range fj.Ratios {
		u, m := fj.Fits["uniform"].IsoFLOP[i], fj.Fits["masked"].IsoFLOP[i]
		// A group's C is one of its runs' M·D, equal to the budget to rounding.
		if math.Abs(u.C/r.C-1) > 1e-9 || math.Abs(m.C/r.C-1) > 1e-9 || u.Optimum == nil || m.Optimum == nil {
			t.Fatalf("row %d at C=%g, groups at %g and %g", i, r.C, u.C, m.C)
		}
		if math.Abs(r.M_ratio-u.Optimum.M/m.Optimum.M) > 1e-9*r.M_ratio || math.Abs(r.Optima_ratio-u.Optimum.Loss/m.Optimum.Loss) > 1e-12 ||
			math.Abs(r.M_ratio*r.D_ratio-1) > 1e-9 || !(r.Ratio > 0) {
			t.Errorf("C=%g: ratios %+v, optima uniform %+v masked %+v", r.C, r, *u.Optimum, *m.Optimum)
		}
	}
}

// TestFitSkipsBadRuns: of three run directories, one with a corrupt line
// and one cut short are reported and skipped; the fit goes on.
func TestFitSkipsBadRuns(t *testing.T) {
	dir := t.TempDir()
	c := train.Default(model.Default(64, 2, 64, 1, 32))
	c.Steps, c.Warmup = 50, 5
	mk := func(name string, lines int, corrupt bool) string {
		d := filepath.Join(dir, name)
		os.MkdirAll(d, 0o755)
		cb, _ := json.Marshal(c)
		os.WriteFile(filepath.Join(d, "config.json"), cb, 0o644)
		var m strings.Builder
		for s := 1; s <= lines; s++ {
			if corrupt && s == 10 {
				m.WriteString("{\"step\": 10, \"elbo\n")
				continue
			}
			fmt.Fprintf(&m, "{\"step\":%d,\"elbo\":%g}\n", s, 3+2*math.Pow(float64(s), -0.5))
		}
		os.WriteFile(filepath.Join(d, "metrics.jsonl"), []byte(m.String()), 0o644)
		return d
	}
	good, bad, short := mk("good", 50, false), mk("bad", 50, true), mk("short", 20, false)
	var out bytes.Buffer
	f := &fitFlags{out: "", bootstrap: 10, surfBoot: 0, delta: 1e-3, lawDelta: 0.1, ema: 0.9}
	if err := runFit(&out, f, []string{good, bad, short}); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^masked\s+1\s`).MatchString(out.String()) {
		t.Errorf("output:\n%s", out.String())
	}
	if err := runFit(&out, f, []string{bad, short}); err == nil {
		t.Error("a fit with no good run did not fail")
	}
}
