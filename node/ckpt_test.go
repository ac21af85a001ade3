package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/difftrain/difftrain/checkpoint"
)

// When checkpoints cannot be written the run retries and then stops with a
// clear error after --checkpoint-max-failures consecutive failures. Before,
// each failure was only logged and the run trained on without checkpoints.
func TestFailingCheckpointsStopTheRun(t *testing.T) {
	dir := t.TempDir()
	ckdir := filepath.Join(dir, "checkpoints")
	err := runAlone(t, dir, 30, func(o *Options) {
		o.OnStep = func(r Record) {
			if r.Step == 1 { // the writer's directory becomes a file
				if err := os.RemoveAll(ckdir); err != nil {
					t.Error(err)
				}
				if err := os.WriteFile(ckdir, []byte("not a directory"), 0o644); err != nil {
					t.Error(err)
				}
			}
		}
	})
	if err == nil || !strings.Contains(err.Error(), "the last 3 saves failed (--checkpoint-max-failures 3)") {
		t.Fatalf("Run returned %v, want a stop after 3 failed saves", err)
	}
	recs, rerr := ReadRecordsFile(dir)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if last := recs[len(recs)-1].Step; last >= 30 {
		t.Fatalf("the run went on to step %d", last)
	}
}

// A checkpoint that was damaged is skipped on resume and rewritten when
// the run reaches its step again (the fix is in checkpoint.Writer; this is
// the run-level case). Before, the run logged "checkpoint already
// saved" and kept the damaged one.
func TestDamagedCheckpointIsRewritten(t *testing.T) {
	dir := t.TempDir()
	if err := runAlone(t, dir, 8, nil); err != nil {
		t.Fatal(err)
	}
	// Step 6 (a periodic save) is damaged; without step 8 the next run
	// resumes from step 4 and reaches step 6 again.
	if err := os.RemoveAll(filepath.Join(dir, "checkpoints", checkpoint.StepDir(8))); err != nil {
		t.Fatal(err)
	}
	step6 := filepath.Join(dir, "checkpoints", checkpoint.StepDir(6))
	p := filepath.Join(step6, checkpoint.ModelFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-5] ^= 0x10
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runAlone(t, dir, 8, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Load(step6); err != nil {
		t.Fatalf("step 6 after the second run: %v", err)
	}
}

// Saves are exported: the newest saved step, the failure counter and the
// consecutive failures, which a successful save resets.
func TestCheckpointMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := &Node{obs: &observer{ckm: newCkptMetrics(reg)}}
	n.ckptDone(10, nil)
	n.ckptDone(20, errors.New("disk full"))
	n.ckptDone(20, errors.New("disk full"))
	want := map[string]float64{"difftrain_last_checkpoint_step": 10, "difftrain_checkpoint_failures_total": 2,
		"difftrain_checkpoint_consecutive_failures": 2}
	checkGauges(t, reg, want)
	if err := n.ckptFailed(); err != nil {
		t.Fatalf("2 failures stop the run: %v", err)
	}
	n.ckptDone(20, errors.New("disk full"))
	if err := n.ckptFailed(); err == nil || !strings.Contains(err.Error(), "step 20: disk full") || !strings.Contains(err.Error(), "newest saved step: 10") {
		t.Fatalf("after 3 failures: %v", err)
	}
	n.ckptDone(30, nil)
	want["difftrain_last_checkpoint_step"], want["difftrain_checkpoint_failures_total"], want["difftrain_checkpoint_consecutive_failures"] = 30, 3, 0
	checkGauges(t, reg, want)
	if err := n.ckptFailed(); err != nil {
		t.Fatal(err)
	}
}

func checkGauges(t *testing.T, reg *prometheus.Registry, want map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				got[mf.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				got[mf.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// A finished run leaves its final checkpoint, also when the run is over
// for the whole cluster (the node announced the run done before saving).
func TestFinalCheckpointIsSaved(t *testing.T) {
	dir := t.TempDir()
	if err := runAlone(t, dir, 6, func(o *Options) { o.CheckpointEvery = 0 }); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Load(filepath.Join(dir, "checkpoints", checkpoint.StepDir(6))); err != nil {
		t.Fatalf("final checkpoint: %v", err)
	}
}
