package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/difftrain/difftrain/scaling"
)

// EvalFile holds a run's held-out loss, written by Eval into its directory.
const EvalFile = "eval.json"

// EvalSpec says what a held-out evaluation measures: the same for every run
// of a sweep, so their losses compare (the same sequences and noise draws).
type EvalSpec struct {
	Split     string `json:"split"`     // dataset split, e.g. "val"
	Sequences int64  `json:"sequences"` // sequences evaluated (0: the whole split)
	Seed      uint64 `json:"seed"`      // seed of the noise draws
}

// EvalResult is one run's final checkpoint evaluated under an EvalSpec.
type EvalResult struct {
	EvalSpec
	Step int64   `json:"step"` // checkpoint step evaluated
	Elbo float64 `json:"elbo"` // training ELBO estimator on held-out data, nats/token
}

// Evaluator evaluates the newest checkpoint of a run directory.
type Evaluator func(ctx context.Context, runDir string, s EvalSpec) (EvalResult, error)

// EvalOptions say how to evaluate a sweep's runs.
type EvalOptions struct {
	Spec  EvalSpec
	Jobs  int // runs at a time
	Eval  Evaluator
	Force bool // evaluate again runs that already have a matching result
	Log   *slog.Logger
}

// Eval evaluates every finished run of the sweep in dir that has no result
// for o.Spec at its planned final step yet, and writes each result to the
// run's eval.json. Unfinished runs are left out and counted in pending.
func Eval(ctx context.Context, dir string, o EvalOptions) (evaluated, pending int, err error) {
	m, err := Load(dir)
	if err != nil {
		return 0, 0, err
	}
	if o.Eval == nil {
		return 0, 0, fmt.Errorf("sweep eval: no evaluator")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	var todo []scaling.Run
	for _, r := range m.Runs {
		switch {
		case !Done(dir, r):
			pending++
		case o.Force:
			todo = append(todo, r)
		default:
			if e, err := ReadEval(RunDir(dir, r.Name)); err != nil || e.EvalSpec != o.Spec || e.Step != int64(r.Steps) {
				todo = append(todo, r)
			}
		}
	}
	var mu sync.Mutex
	failed := each(ctx, o.Jobs, todo, func(r scaling.Run) error {
		rd := RunDir(dir, r.Name)
		res, err := o.Eval(ctx, rd, o.Spec)
		if err == nil && res.Step != int64(r.Steps) {
			err = fmt.Errorf("newest checkpoint is step %d, the run planned %d", res.Step, r.Steps)
		}
		if err == nil && !(res.Elbo > 0 && !math.IsInf(res.Elbo, 0)) {
			err = fmt.Errorf("ELBO %g is not a positive finite loss", res.Elbo)
		}
		if err == nil {
			b, _ := json.MarshalIndent(res, "", "  ")
			err = writeFile(filepath.Join(rd, EvalFile), append(b, '\n'))
		}
		if err == nil {
			mu.Lock()
			evaluated++
			mu.Unlock()
			o.Log.Info("sweep eval", "run", r.Name, "step", res.Step, "elbo", res.Elbo)
		}
		return err
	})
	if err := ctx.Err(); err != nil {
		return evaluated, pending, fmt.Errorf("sweep eval %s: stopped: %w", dir, err)
	}
	if len(failed) > 0 {
		return evaluated, pending, fmt.Errorf("sweep eval %s: %d runs failed: %w", dir, len(failed), errors.Join(failed...))
	}
	return evaluated, pending, nil
}

// ReadEval reads a run directory's eval.json.
func ReadEval(runDir string) (EvalResult, error) {
	var e EvalResult
	raw, err := os.ReadFile(filepath.Join(runDir, EvalFile))
	if errors.Is(err, fs.ErrNotExist) {
		return e, fmt.Errorf("no %s (evaluate the run with `trainer sweep eval`)", EvalFile)
	}
	if err != nil {
		return e, fmt.Errorf("%s: %w", EvalFile, err)
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return e, fmt.Errorf("corrupt %s: %w", EvalFile, err)
	}
	return e, nil
}
