// Package sweep keeps a planned scaling grid on disk and runs it: a sweep
// directory holds sweep.json (the plan) and runs/NAME/config.json, one
// ordinary run directory per run. Runs are child processes of the trainer
// binary, K at a time; a finished run is never started again and an
// interrupted one resumes from its newest checkpoint.
package sweep

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/scaling"
	"github.com/difftrain/difftrain/train"
)

// ManifestFile is the plan's file name in a sweep directory.
const ManifestFile = "sweep.json"

// Manifest is a planned sweep.
type Manifest struct {
	Version int           `json:"version"`
	Created time.Time     `json:"created"`
	Data    string        `json:"data"` // dataset directory the runs train on
	Vocab   int           `json:"vocab"`
	SeqLen  int           `json:"seq_len"`
	Laws    scaling.Laws  `json:"laws"`
	Runs    []scaling.Run `json:"runs"`
	// TokensPerS is the throughput each shape's estimate used, by shape name.
	TokensPerS map[string]float64 `json:"tokens_per_s,omitempty"`
}

// RunDir is the run directory of a run in the sweep directory dir.
func RunDir(dir, name string) string { return filepath.Join(dir, "runs", name) }

// ConfigPath is the train config file of a run.
func ConfigPath(dir, name string) string { return filepath.Join(RunDir(dir, name), "config.json") }

// Config is the train config of a planned run: base with the run's shape,
// noise, batch, steps, LR, warmup, no cooldown and seed.
func Config(base train.Config, m *Manifest, r scaling.Run) train.Config {
	c := base
	mc := model.Default(m.Vocab, r.Shape.Layers, r.Shape.Dim, r.Shape.Heads, m.SeqLen)
	if base.Model.Vocab != 0 { // a base config brings its own architecture settings
		mc = base.Model
		mc.Vocab, mc.SeqLen = m.Vocab, m.SeqLen
		mc.Layers, mc.Dim, mc.Heads = r.Shape.Layers, r.Shape.Dim, r.Shape.Heads
	}
	c.Model = mc
	c.Noise, c.LR, c.Warmup, c.Cooldown = r.Noise, r.LR, r.Warmup, r.Cooldown
	c.Steps, c.Batch, c.MicroBatch, c.Seed = r.Steps, r.Batch, r.MicroBatch, r.Seed
	return c
}

// Create writes the manifest and one config per run into dir. It refuses a
// directory that already holds a sweep.
func Create(dir string, m *Manifest, base train.Config) error {
	if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err == nil {
		return fmt.Errorf("sweep %s: already planned (%s exists); plan into a new directory", dir, ManifestFile)
	}
	seen := map[string]bool{}
	for _, r := range m.Runs {
		if seen[r.Name] {
			return fmt.Errorf("sweep %s: run %s planned twice", dir, r.Name)
		}
		seen[r.Name] = true
		c := Config(base, m, r)
		if err := c.Validate(); err != nil {
			return fmt.Errorf("sweep run %s: %w", r.Name, err)
		}
		if err := os.MkdirAll(RunDir(dir, r.Name), 0o755); err != nil {
			return fmt.Errorf("sweep: %w", err)
		}
		b, _ := json.MarshalIndent(c, "", "  ")
		if err := writeFile(ConfigPath(dir, r.Name), b); err != nil {
			return err
		}
	}
	m.Version = 1
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("sweep manifest: %w", err)
	}
	return writeFile(filepath.Join(dir, ManifestFile), b)
}

// Load reads dir/sweep.json.
func Load(dir string) (*Manifest, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sweep %s: no %s (plan one with `trainer sweep plan`)", dir, ManifestFile)
	}
	if err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("sweep %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if m.Version != 1 {
		return nil, fmt.Errorf("sweep %s: manifest version %d, want 1", dir, m.Version)
	}
	return &m, nil
}

// Hours is the estimated wall time of a run at the manifest's throughput,
// or NaN when none is known for its shape.
func (m *Manifest) Hours(r scaling.Run) float64 {
	tps := m.TokensPerS[r.Shape.String()]
	if !(tps > 0) {
		return math.NaN()
	}
	return r.D / tps / 3600
}

// PrintTable writes the grid: one line per run, flags under it, and totals.
func (m *Manifest) PrintTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tparams\tM\tC\tD\tD/M\tbatch\tsteps\tlr\twarmup\test. h\t")
	var flops, tokens, hours float64
	flagged := 0
	for _, r := range m.Runs {
		h := m.Hours(r)
		fmt.Fprintf(tw, "%s\t%.3g\t%.3g\t%.3g\t%.3g\t%.3g\t%d\t%d\t%.3g\t%d\t%.2f\t\n",
			r.Name, float64(r.Params), r.M, r.Compute, r.D, r.DOverM, r.Batch, r.Steps, r.LR, r.Warmup, h)
		flops, tokens, hours = flops+r.Compute, tokens+r.D, hours+h
		if len(r.Flags) > 0 {
			flagged++
		}
	}
	tw.Flush()
	for _, r := range m.Runs {
		for _, f := range r.Flags {
			fmt.Fprintf(w, "flagged %s: %s\n", r.Name, f)
		}
	}
	fmt.Fprintf(w, "%d runs (%d flagged), %.3g FLOPs, %.3g tokens, est. %.2f hours one at a time\n", len(m.Runs), flagged, flops, tokens, hours)
}

// writeFile writes b to path through a temporary file and a rename.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sweep: %w", err)
	}
	return nil
}
