package diffusion

import (
	"fmt"
	"math"
)

// Schedule is the linear mixing rate of spec §1.1–1.2: α(t) = 1 − t,
// λ = logit(α), with λ clipped to [Min, Max] wherever α is computed.
type Schedule struct {
	Min float64 `json:"min_log_snr"` // log-SNR clip range; the spec's runs use ±9
	Max float64 `json:"max_log_snr"`
}

// DefaultSchedule returns the as-run clip range [−9, 9].
func DefaultSchedule() Schedule { return Schedule{Min: -9, Max: 9} }

// Validate checks that the clip range is finite and ordered.
func (s Schedule) Validate() error {
	if math.IsNaN(s.Min) || math.IsInf(s.Min, 0) || math.IsNaN(s.Max) || math.IsInf(s.Max, 0) {
		return fmt.Errorf("schedule: log-SNR range [%g, %g] must be finite", s.Min, s.Max)
	}
	if s.Min >= s.Max {
		return fmt.Errorf("schedule: min_log_snr %g must be below max_log_snr %g", s.Min, s.Max)
	}
	return nil
}

// Clip clips λ to [Min, Max].
func (s Schedule) Clip(l float64) float64 { return math.Min(math.Max(l, s.Min), s.Max) }

// Alpha is the signal rate α(λ) = σ(clip(λ)).
func (s Schedule) Alpha(l float64) float64 { return Sigmoid(s.Clip(l)) }

// LogSNR is λ(t) = clip(logit(1 − t)).
func (s Schedule) LogSNR(t float64) float64 {
	return s.Clip(SafeLog(1-t) - SafeLog(t))
}

// NoiseRate is 1 − α(λ) = σ(−clip(λ)), without the cancellation of 1 − α
// near λ = Max.
func (s Schedule) NoiseRate(l float64) float64 { return Sigmoid(-s.Clip(l)) }

// Time is t(λ) = 1 − σ(clip(λ)).
func (s Schedule) Time(l float64) float64 { return 1 - s.Alpha(l) }

// TMin is the smallest training time, 1 − σ(Max).
func (s Schedule) TMin() float64 { return 1 - Sigmoid(s.Max) }

// TMax is the largest training time, 1 − σ(Min).
func (s Schedule) TMax() float64 { return 1 - Sigmoid(s.Min) }

// Sample maps u ∈ [0,1) to a training log-SNR: t = t_min + u·(t_max − t_min),
// λ = λ(t). The result lies in [Min, Max].
func (s Schedule) Sample(u float64) float64 {
	lo, hi := s.TMin(), s.TMax()
	return s.LogSNR(lo + u*(hi-lo))
}

// Density is p(λ) = σ(λ)σ(−λ), the density of λ when t ~ U(0,1), at the
// unclipped λ and not renormalised for the truncation (spec §1.2).
func Density(l float64) float64 { return Sigmoid(l) * Sigmoid(-l) }

// Sigmoid is σ(x) = 1/(1+e^{−x}), computed without overflow.
func Sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// Tiny is the smallest normal float32, the floor of SafeLog.
const Tiny = 1.17549435e-38

// SafeLog is log(max(x, Tiny)), and log(Tiny) = −87.336544 for x ≤ 0.
func SafeLog(x float64) float64 {
	if !(x > Tiny) {
		return math.Log(Tiny)
	}
	return math.Log(x)
}
