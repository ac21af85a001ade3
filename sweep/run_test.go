package sweep

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/scaling"
	"github.com/difftrain/difftrain/train"
)

// tinySweep prepares a small dataset and plans a grid of tiny runs.
func tinySweep(t *testing.T) (dir string, m *Manifest) {
	t.Helper()
	root := t.TempDir()
	in := filepath.Join(root, "in.txt")
	var sb strings.Builder
	for i := 0; sb.Len() < 100<<10; i++ {
		fmt.Fprintf(&sb, "line %d: the quick brown fox jumps over the lazy dog %d times.\n", i, i*7%13)
	}
	os.WriteFile(in, []byte(sb.String()), 0o644)
	data := filepath.Join(root, "data")
	if _, err := dataset.Prepare(context.Background(), dataset.PrepareOptions{Inputs: []string{in}, Out: data, SeqLen: 32, Format: "text"}); err != nil {
		t.Fatal(err)
	}
	var shapes []scaling.Shape
	for _, s := range []string{"L1-d16-H1", "L1-d32-H1"} {
		sh, _ := scaling.ParseShape(s, 16)
		shapes = append(shapes, sh)
	}
	p := scaling.PlanSpec{Noises: []string{"masked", "uniform"}, Shapes: shapes, Budgets: []float64{2e8}, SeqLen: 32,
		MicroBatch: 2, Laws: scaling.PaperLaws(), WarmupFrac: 0.1, WarmupMax: 10, Seed: 1}
	runs, err := scaling.Plan(p)
	if err != nil {
		t.Fatal(err)
	}
	m = &Manifest{Data: data, Vocab: 260, SeqLen: 32, Laws: p.Laws, Runs: runs}
	dir = filepath.Join(root, "sweep")
	if err := Create(dir, m, train.Default(model.Default(0, 1, 2, 1, 0))); err != nil {
		t.Fatal(err)
	}
	if err := Create(dir, m, train.Config{}); err == nil {
		t.Error("a second plan into the same directory was accepted")
	}
	return dir, m
}

func buildTrainer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "trainer")
	build := exec.Command("go", "build", "-o", bin, "./cmd/trainer")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the trainer: %v\n%s", err, out)
	}
	return bin
}

// TestRunKilledAndRestarted: `trainer sweep run` killed (SIGKILL) mid-grid
// and started again finishes the grid; every run reaches its planned steps
// once, and runs finished before the kill are not trained again.
func TestRunKilledAndRestarted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trainer and trains four tiny models")
	}
	dir, m := tinySweep(t)
	for _, r := range m.Runs {
		t.Logf("%s: %d steps of %d sequences", r.Name, r.Steps, r.Batch)
	}
	bin := buildTrainer(t)
	args := []string{"sweep", "run", dir, "-j", "2", "--threads", "1", "--checkpoint-every", "5", "--progress-every", "1s"}
	first := exec.Command(bin, args...)
	var out1 bytes.Buffer
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill once one run is done and another has a checkpoint.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		done, started := 0, 0
		for _, r := range m.Runs {
			if Done(dir, r) {
				done++
			} else if c, _ := filepath.Glob(filepath.Join(RunDir(dir, r.Name), "checkpoints", "step-*")); len(c) > 0 {
				started++
			}
		}
		if done >= 1 && started >= 1 {
			break
		}
		if time.Now().After(deadline) {
			first.Process.Kill()
			first.Wait()
			t.Fatalf("no run finished in time:\n%s", out1.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	finished := map[string][]byte{}
	for _, r := range m.Runs {
		if Done(dir, r) {
			finished[r.Name], _ = os.ReadFile(filepath.Join(RunDir(dir, r.Name), "metrics.jsonl"))
		}
	}
	if len(finished) == len(m.Runs) {
		t.Fatal("the grid finished before the kill; the test proves nothing")
	}
	second := exec.Command(bin, args...)
	out2, err := second.CombinedOutput()
	if err != nil {
		t.Fatalf("restarted sweep: %v\n%s\nfirst:\n%s", err, out2, out1.String())
	}
	if !strings.Contains(string(out2), fmt.Sprintf("%d/%d runs done", len(m.Runs), len(m.Runs))) {
		t.Errorf("no final progress line:\n%s", out2)
	}
	for _, r := range m.Runs {
		rd := RunDir(dir, r.Name)
		metrics, _ := os.ReadFile(filepath.Join(rd, "metrics.jsonl"))
		if before, ok := finished[r.Name]; ok && !bytes.Equal(before, metrics) {
			t.Errorf("%s was finished before the kill but trained again", r.Name)
		}
		c, err := scaling.ReadCurve(bytes.NewReader(metrics))
		if err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		if !Done(dir, r) || len(c) != r.Steps || c[0].Step != 1 || c[len(c)-1].Step != int64(r.Steps) {
			t.Errorf("%s: %d distinct steps from %d to %d, want 1..%d", r.Name, len(c), c[0].Step, c[len(c)-1].Step, r.Steps)
		}
		if n := bytes.Count(metrics, []byte(fmt.Sprintf(`"step":%d,`, r.Steps))); n != 1 {
			t.Errorf("%s: the final step %d recorded %d times, want once", r.Name, r.Steps, n)
		}
		if _, err := os.Stat(filepath.Join(rd, "pid")); err == nil {
			t.Errorf("%s: pid file left behind", r.Name)
		}
	}
	runs, skipped, err := Collect([]string{dir}, CollectOptions{EMA: 0.9})
	if err != nil || len(runs) != len(m.Runs) || len(skipped) != 0 {
		t.Errorf("collect the finished sweep: %d runs, skipped %v, %v", len(runs), skipped, err)
	}
}
