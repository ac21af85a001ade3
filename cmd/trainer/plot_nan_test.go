package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/difftrain/difftrain/node"
)

// A run that stopped on a NaN loss keeps that step in metrics.jsonl (NaN
// as null); plot leaves such skipped steps out instead of failing on them.
func TestPlotSkipsNonFiniteSteps(t *testing.T) {
	run, out := t.TempDir(), filepath.Join(t.TempDir(), "plots")
	w, err := node.CreateRecords(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for s := 1; s <= 20; s++ {
		r := node.Record{Time: t0.Add(time.Duration(s) * time.Second), Step: int64(s), Loss: 5 - 0.1*float64(s), Elbo: 4,
			TokensPerS: 1000, StepS: 0.1, DataS: 0.01, ComputeS: 0.08, CommS: 0.01, Members: 1}
		if s == 20 {
			r.Loss, r.Elbo, r.PPL, r.Skipped = math.NaN(), math.NaN(), math.NaN(), true
		}
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	files, err := plotRun(run, out, plotOptions{Width: 300, Height: 200})
	if err != nil {
		t.Fatalf("plot of a run with a NaN step: %v", err)
	}
	if len(files) != 4 {
		t.Fatalf("wrote %v", files)
	}
	if _, err := os.Stat(files[0]); err != nil {
		t.Fatal(err)
	}
}
