package train

import (
	"fmt"
	"math"

	"github.com/difftrain/difftrain/diffusion"
)

// NonFiniteError is Step's error when the ring's loss or the norm of the
// ring's summed gradient is NaN or infinite. Both are computed from values
// every member of the ring holds alike after the gradient sum, so every
// member decides the same. The update was not applied: parameters and
// optimizer state are those before the step.
type NonFiniteError struct {
	Step     int64             // the update that was refused (steps completed + 1)
	Loss     float64           // the ring's objective of the step
	GradNorm float64           // L2 norm of the summed gradient
	Result   Result            // the step's timings and metrics
	Summary  diffusion.Summary // the ring's metrics, as logged
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("train step %d: loss %g, gradient norm %g: not finite; the update was not applied", e.Step, e.Loss, e.GradNorm)
}

// checkFinite returns a *NonFiniteError when the global loss of r or the
// summed gradient is not finite. It runs after the gradient sum and before
// the optimizer.
func (t *Trainer) checkFinite(step int64, r Result) error {
	sum := r.Global.Summary(t.divisor)
	gn := math.Sqrt(t.B.SumSquares(t.Model.Grads))
	if err := t.B.Err(); err != nil {
		return fmt.Errorf("train step %d: gradient norm: %w", step, err)
	}
	if finite(sum.Loss) && finite(gn) {
		return nil
	}
	return &NonFiniteError{Step: step + 1, Loss: sum.Loss, GradNorm: gn, Result: r, Summary: sum}
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
