package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/train"
)

// badStepError stops the run: more steps had a non-finite loss or gradient
// than --max-bad-steps allows.
type badStepError struct {
	nf      *train.NonFiniteError
	skipped int // steps skipped before this one
	max     int
}

func (e *badStepError) Error() string {
	return fmt.Sprintf("step %d: loss %g, gradient norm %g: not finite, after %d skipped step(s) (--max-bad-steps %d); stopping without applying it or saving a checkpoint of it",
		e.nf.Step, e.nf.Loss, e.nf.GradNorm, e.skipped, e.max)
}

// fatal reports whether a step error must stop the run rather than be
// retried by another ring.
func fatal(err error) bool {
	var ce *checksumError
	var be *badStepError
	return errors.As(err, &ce) || errors.As(err, &be)
}

// nonFinite handles a step that train refused because the ring's loss or
// gradient was not finite; any other outcome passes through. Every member
// decides alike: the values come from the ring's sums. Within
// --max-bad-steps the step is skipped: its record (NaN as null) is
// returned with a nil error and the loop counts the step as done without
// an update. Beyond it, the record is written and a *badStepError stops the
// run.
func (n *Node) nonFinite(rec Record, err error, ag allreduce.Generation) (Record, error) {
	var nf *train.NonFiniteError
	if !errors.As(err, &nf) {
		return rec, err
	}
	world := len(ag.Members)
	res, sum := nf.Result, nf.Summary
	tokens := float64(n.cfg.Batch * n.cfg.Model.SeqLen)
	rec = Record{
		Time: time.Now(), Loss: sum.Loss, Elbo: sum.Elbo, KL: sum.KL, IS: sum.IS, PPL: sum.PPL,
		Tokens: tokens, DataS: res.Data.Seconds(), ComputeS: res.Compute.Seconds(), CommS: res.Comm.Seconds(),
		Members: world, Generation: ag.ID, Skipped: true,
	}
	if n.rs.badSteps >= n.opt.MaxBadSteps {
		rec.Step = nf.Step
		n.obs.step(rec, n.cl, n.cfg.Steps)
		return rec, &badStepError{nf: nf, skipped: n.rs.badSteps, max: n.opt.MaxBadSteps}
	}
	n.rs.badSteps++
	n.log.Warn("skipping a step with a non-finite loss or gradient", "step", nf.Step, "loss", nf.Loss,
		"grad_norm", nf.GradNorm, "skipped", n.rs.badSteps, "max_bad_steps", n.opt.MaxBadSteps)
	if n.samples != nil {
		for r := 0; r < world; r++ {
			lo, hi, _ := dataset.Split(n.step, n.cfg.Batch, r, world)
			fmt.Fprintf(n.samples, "%d %d %d %d %d\n", n.step, lo, hi, ag.ID, r)
		}
	}
	return rec, nil
}
