package sweep

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/difftrain/difftrain/scaling"
	"github.com/difftrain/difftrain/train"
)

// Result is a finished run read back from its directory.
type Result struct {
	Dir   string
	Point scaling.Point
	Steps []float64 // steps with a finite ELBO
	EMA   []float64 // their EMA-smoothed ELBO
	Curve *scaling.Curve
	Eval  *EvalResult // the held-out evaluation behind the loss (LossVal)
}

// Loss sources of a run's final loss.
const (
	LossTrain = "train" // the EMA-smoothed training ELBO at the last step
	LossVal   = "val"   // the held-out ELBO of the final checkpoint (eval.json)
)

// CollectOptions say how to read runs.
type CollectOptions struct {
	EMA  float64 // EMA factor of the training ELBO
	Loss string  // LossTrain (default) or LossVal
	// MinSteps leaves out runs planned for fewer steps, as the paper's
	// iso-FLOP fits leave out runs of 5000 steps or fewer (gidd-spec §9.2):
	// a run that ends within a few hundred steps of its warmup measures
	// how fast it starts, not the loss its size reaches at that budget.
	MinSteps int
}

// Collect reads the runs under paths: sweep directories (every planned run)
// or run directories holding config.json (or config.yaml) and
// metrics.jsonl. The loss of a run is its EMA-smoothed ELBO at the last
// step (factor o.EMA), or with LossVal the held-out ELBO in its eval.json,
// which must be of its final step and the same evaluation for every run. A
// run that cannot be read, or has not reached its planned steps, is
// reported in skipped and left out.
func Collect(paths []string, o CollectOptions) (runs []Result, skipped []string, err error) {
	switch o.Loss {
	case "":
		o.Loss = LossTrain
	case LossTrain, LossVal:
	default:
		return nil, nil, fmt.Errorf("fit: loss %q, want %q or %q", o.Loss, LossTrain, LossVal)
	}
	beta := o.EMA
	for _, p := range paths {
		if m, lerr := Load(p); lerr == nil {
			for _, r := range m.Runs {
				res, why := readRun(RunDir(p, r.Name), beta, r.Budget, o)
				if why != "" {
					skipped = append(skipped, fmt.Sprintf("%s: %s", RunDir(p, r.Name), why))
					continue
				}
				runs = append(runs, res)
			}
			continue
		}
		if st, serr := os.Stat(p); serr != nil || !st.IsDir() {
			return nil, nil, fmt.Errorf("fit: %s is neither a sweep nor a run directory", p)
		}
		res, why := readRun(p, beta, 0, o)
		if why != "" {
			skipped = append(skipped, fmt.Sprintf("%s: %s", p, why))
			continue
		}
		runs = append(runs, res)
	}
	if o.Loss == LossVal {
		for _, r := range runs[min(1, len(runs)):] {
			if r.Eval.EvalSpec != runs[0].Eval.EvalSpec {
				return nil, nil, fmt.Errorf("fit: %s and %s were evaluated differently (%+v, %+v): evaluate every run alike with `trainer sweep eval`",
					runs[0].Dir, r.Dir, runs[0].Eval.EvalSpec, r.Eval.EvalSpec)
			}
		}
	}
	return runs, skipped, nil
}

// readRun reads one run directory; budget 0 means C = M·D.
func readRun(dir string, beta, budget float64, o CollectOptions) (Result, string) {
	c, err := readConfig(dir)
	if err != nil {
		return Result{}, err.Error()
	}
	if c.Model.SeqLen <= 0 || c.Batch <= 0 || c.Steps <= 0 {
		return Result{}, "the config lacks the sequence length, batch or steps"
	}
	if c.Steps < o.MinSteps {
		return Result{}, fmt.Sprintf("planned for %d steps, fewer than the %d asked for", c.Steps, o.MinSteps)
	}
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if errors.Is(err, fs.ErrNotExist) {
		return Result{}, "not started (no metrics.jsonl)"
	}
	if err != nil {
		return Result{}, fmt.Sprintf("metrics: %v", err)
	}
	defer f.Close()
	curve, err := scaling.ReadCurve(f)
	if err != nil {
		return Result{}, fmt.Sprintf("corrupt metrics: %v", err)
	}
	if len(curve) == 0 {
		return Result{}, "no steps with a finite ELBO in metrics.jsonl"
	}
	if last := curve[len(curve)-1].Step; last < int64(c.Steps) {
		return Result{}, fmt.Sprintf("unfinished or truncated: metrics end at step %d of %d", last, c.Steps)
	}
	r := Result{Dir: dir}
	el := make([]float64, len(curve))
	for i, p := range curve {
		r.Steps, el[i] = append(r.Steps, float64(p.Step)), p.Elbo
	}
	r.EMA = scaling.EMA(el, beta)
	if cv, err := scaling.FitCurve(curve, r.EMA, int64(c.Warmup)); err == nil {
		r.Curve = &cv
	}
	m := c.Model.FLOPsPerToken(false)
	d := float64(c.Steps) * float64(c.Batch) * float64(c.Model.SeqLen)
	if budget == 0 {
		budget = m * d
	}
	r.Point = scaling.Point{Name: filepath.Base(dir), Noise: c.Noise, M: m, D: d, C: budget,
		Loss: r.EMA[len(r.EMA)-1], Params: float64(c.Model.NonEmbeddingParams())}
	if o.Loss == LossVal {
		e, err := ReadEval(dir)
		if err != nil {
			return Result{}, err.Error()
		}
		if e.Step != int64(c.Steps) {
			return Result{}, fmt.Sprintf("%s is of step %d, not the final step %d", EvalFile, e.Step, c.Steps)
		}
		if !(e.Elbo > 0) || math.IsInf(e.Elbo, 0) {
			return Result{}, fmt.Sprintf("%s: ELBO %g is not a positive finite loss", EvalFile, e.Elbo)
		}
		r.Eval, r.Point.Loss = &e, e.Elbo
	}
	return r, ""
}

func readConfig(dir string) (train.Config, error) {
	var c train.Config
	for _, name := range []string{"config.json", "config.yaml"} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &c); err != nil {
			return c, fmt.Errorf("config %s: %w", name, err)
		}
		return c, nil
	}
	return c, fmt.Errorf("no config.json or config.yaml (the run's train config)")
}
