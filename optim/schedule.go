package optim

import (
	"fmt"
	"math"
)

// WSD is the warmup–stable–decay learning-rate multiplier of spec §6.3 over
// Steps updates: linear warmup from 0 over Warmup steps, constant 1, then a
// "1 − sqrt" cooldown to 0 at k = Steps over the last C steps, where
// C = Cooldown·Steps when Cooldown < 1 (a fraction) and C = Cooldown
// otherwise (an absolute count, rounded down).
type WSD struct {
	Steps    int     `json:"max_training_steps"` // S
	Warmup   int     `json:"warmup_steps"`       // W
	Cooldown float64 `json:"cooldown_steps"`     // fraction (< 1) or count (≥ 1); 0 disables
}

// CooldownSteps returns C.
func (w WSD) CooldownSteps() int {
	if w.Cooldown < 1 {
		return int(w.Cooldown * float64(w.Steps))
	}
	return int(w.Cooldown)
}

// Validate reports the first invalid field.
func (w WSD) Validate() error {
	switch {
	case w.Steps <= 0:
		return fmt.Errorf("lr schedule: max_training_steps = %d, must be positive", w.Steps)
	case w.Warmup < 0:
		return fmt.Errorf("lr schedule: warmup_steps = %d, must be non-negative", w.Warmup)
	case w.Warmup > w.Steps:
		return fmt.Errorf("lr schedule: warmup_steps = %d exceeds max_training_steps = %d", w.Warmup, w.Steps)
	case !(w.Cooldown >= 0) || math.IsInf(w.Cooldown, 0):
		return fmt.Errorf("lr schedule: cooldown_steps = %g, must be finite and non-negative", w.Cooldown)
	case w.CooldownSteps() > w.Steps:
		return fmt.Errorf("lr schedule: cooldown_steps = %g (%d steps) exceeds max_training_steps = %d", w.Cooldown, w.CooldownSteps(), w.Steps)
	case w.Warmup > w.Steps-w.CooldownSteps():
		return fmt.Errorf("lr schedule: warmup_steps = %d overlaps the cooldown, which starts at step %d", w.Warmup, w.Steps-w.CooldownSteps())
	}
	return nil
}

// At returns the multiplier η(k)/base for k previous updates:
//
//	k/W                                   k < W
//	1                                     W ≤ k < S − C
//	1 − sqrt(min(k−(S−C), C) / max(1, C)) k ≥ S − C
func (w WSD) At(k int) float64 {
	c := w.CooldownSteps()
	k = max(k, 0)
	switch {
	case k < w.Warmup:
		return float64(k) / float64(w.Warmup)
	case k < w.Steps-c:
		return 1
	}
	return 1 - math.Sqrt(float64(min(k-(w.Steps-c), c))/float64(max(1, c)))
}
