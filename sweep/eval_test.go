package sweep

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/difftrain/difftrain/scaling"
)

// fakeFinished writes metrics for every step of a planned run (ELBO 5 at
// its end) and its done mark, as a finished `trainer train` leaves them.
func fakeFinished(t *testing.T, dir string, r scaling.Run) {
	t.Helper()
	var sb strings.Builder
	for s := 1; s <= r.Steps; s++ {
		fmt.Fprintf(&sb, "{\"step\":%d,\"elbo\":%g}\n", s, 5+10/float64(s))
	}
	rd := RunDir(dir, r.Name)
	if err := os.WriteFile(filepath.Join(rd, "metrics.jsonl"), []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rd, DoneFile), []byte(strconv.Itoa(r.Steps)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEvalAndCollectVal(t *testing.T) {
	dir, m := tinySweep(t)
	for _, r := range m.Runs[1:] {
		fakeFinished(t, dir, r)
	}
	steps := map[string]int{}
	for _, r := range m.Runs {
		steps[RunDir(dir, r.Name)] = r.Steps
	}
	var calls atomic.Int32
	eval := func(_ context.Context, rd string, s EvalSpec) (EvalResult, error) {
		calls.Add(1)
		// A held-out loss apart from the training ELBO (5 + 10/S) and
		// distinct per run.
		return EvalResult{EvalSpec: s, Step: int64(steps[rd]), Elbo: 3 + float64(len(rd)%7)/100}, nil
	}
	spec := EvalSpec{Split: "val", Seed: 1}
	n, pending, err := Eval(context.Background(), dir, EvalOptions{Spec: spec, Jobs: 2, Eval: eval})
	if err != nil || n != len(m.Runs)-1 || pending != 1 {
		t.Fatalf("eval: %d evaluated, %d pending, %v; want %d and 1", n, pending, err, len(m.Runs)-1)
	}
	if _, err := os.Stat(filepath.Join(RunDir(dir, m.Runs[0].Name), EvalFile)); err == nil {
		t.Error("an unfinished run was evaluated")
	}
	calls.Store(0)
	if n, _, err := Eval(context.Background(), dir, EvalOptions{Spec: spec, Eval: eval}); err != nil || n != 0 || calls.Load() != 0 {
		t.Errorf("second eval with the same spec: %d evaluated (%d calls), %v; want none", n, calls.Load(), err)
	}
	if n, _, _ := Eval(context.Background(), dir, EvalOptions{Spec: spec, Eval: eval, Force: true}); n != len(m.Runs)-1 {
		t.Errorf("--force evaluated %d runs, want %d", n, len(m.Runs)-1)
	}

	runs, skipped, err := Collect([]string{dir}, CollectOptions{EMA: 0.9, Loss: LossVal})
	if err != nil || len(runs) != len(m.Runs)-1 || len(skipped) != 1 {
		t.Fatalf("collect val: %d runs, skipped %v, %v", len(runs), skipped, err)
	}
	for _, r := range runs {
		want := 3 + float64(len(r.Dir)%7)/100
		if r.Point.Loss != want || r.Eval == nil {
			t.Errorf("%s: loss %g, want the held-out %g", r.Dir, r.Point.Loss, want)
		}
	}
	train, _, err := Collect([]string{dir}, CollectOptions{EMA: 0.9})
	if err != nil || len(train) != len(runs) || !(train[0].Point.Loss > 5) {
		t.Errorf("collect train: %d runs, %v, first loss %g; want the EMA training ELBO above 5", len(train), err, train[0].Point.Loss)
	}

	// A run without eval.json is skipped, one of another step too, and runs
	// evaluated differently do not mix.
	os.Remove(filepath.Join(runs[0].Dir, EvalFile))
	if _, skipped, err := Collect([]string{dir}, CollectOptions{EMA: 0.9, Loss: LossVal}); err != nil || len(skipped) != 2 || !strings.Contains(skipped[1]+skipped[0], "no eval.json") {
		t.Errorf("a run without eval.json: skipped %v, %v", skipped, err)
	}
	bad := func(_ context.Context, rd string, s EvalSpec) (EvalResult, error) {
		return EvalResult{EvalSpec: s, Step: int64(steps[rd]) - 1, Elbo: 3}, nil
	}
	if _, _, err := Eval(context.Background(), dir, EvalOptions{Spec: spec, Eval: bad}); err == nil || !strings.Contains(err.Error(), "newest checkpoint is step") {
		t.Errorf("an evaluation of a checkpoint before the final step was accepted: %v", err)
	}
	other := EvalSpec{Split: "val", Sequences: 10, Seed: 1}
	rd := runs[1].Dir
	if _, _, err := Eval(context.Background(), dir, EvalOptions{Spec: other, Eval: eval}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(rd, EvalFile), []byte(`{"split":"val","seed":1,"step":`+strconv.Itoa(steps[rd])+`,"elbo":3}`), 0o644)
	if _, _, err := Collect([]string{dir}, CollectOptions{EMA: 0.9, Loss: LossVal}); err == nil || !strings.Contains(err.Error(), "evaluated differently") {
		t.Errorf("runs evaluated on different sequences were mixed: %v", err)
	}
	if _, _, err := Collect([]string{dir}, CollectOptions{Loss: "best"}); err == nil {
		t.Error("an unknown loss source was accepted")
	}
}

func TestCollectMinSteps(t *testing.T) {
	dir, m := tinySweep(t)
	short, long := m.Runs[0], m.Runs[0]
	for _, r := range m.Runs {
		fakeFinished(t, dir, r)
		if r.Steps < short.Steps {
			short = r
		}
		if r.Steps > long.Steps {
			long = r
		}
	}
	if short.Steps == long.Steps {
		t.Fatalf("the tiny sweep's runs all have %d steps", short.Steps)
	}
	runs, skipped, err := Collect([]string{dir}, CollectOptions{EMA: 0.9, MinSteps: long.Steps})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.Point.Name == short.Name {
			t.Errorf("%s (%d steps) kept with --min-steps %d", short.Name, short.Steps, long.Steps)
		}
	}
	if len(runs) == 0 || len(runs)+len(skipped) != len(m.Runs) || !strings.Contains(strings.Join(skipped, "\n"), short.Name+": planned for") {
		t.Errorf("min-steps %d: kept %d, skipped %v", long.Steps, len(runs), skipped)
	}
}
