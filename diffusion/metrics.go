package diffusion

import (
	"fmt"
	"math"

	"github.com/difftrain/difftrain/compute"
)

// Metrics accumulates the loss outputs (compute.Loss.Out) of noised tokens
// over micro-batches and ranks. Its fields are plain sums, so partial
// Metrics from different ranks combine by adding them (Merge, or an
// allreduce of Vector).
type Metrics struct {
	Tokens float64 // Σ noise_mask
	Loss   float64 // Σ noise_mask·loss_tok
	KL     float64 // Σ noise_mask·w_tr·KL
	IS     float64 // Σ noise_mask·w_tr·IS
	Elbo   float64 // Σ noise_mask·elbo_tok
}

// Add accumulates one batch: noiseMask is [T], out is [T, compute.LossOutStride].
func (m *Metrics) Add(noiseMask []int32, out []float32) error {
	if len(out) != len(noiseMask)*compute.LossOutStride {
		return fmt.Errorf("metrics: %d loss outputs for %d tokens", len(out), len(noiseMask))
	}
	for i, nm := range noiseMask {
		if nm == 0 {
			continue
		}
		o := out[i*compute.LossOutStride:]
		m.Tokens++
		m.Loss += float64(o[compute.LOLoss])
		m.KL += float64(o[compute.LOKL])
		m.IS += float64(o[compute.LOIS])
		m.Elbo += float64(o[compute.LOElbo])
	}
	return nil
}

// Merge adds another accumulator.
func (m *Metrics) Merge(o Metrics) {
	m.Tokens += o.Tokens
	m.Loss += o.Loss
	m.KL += o.KL
	m.IS += o.IS
	m.Elbo += o.Elbo
}

// Vector returns the sums as [Tokens, Loss, KL, IS, Elbo] for an allreduce.
func (m Metrics) Vector() []float64 { return []float64{m.Tokens, m.Loss, m.KL, m.IS, m.Elbo} }

// MetricsFromVector is the inverse of Vector.
func MetricsFromVector(v []float64) (Metrics, error) {
	if len(v) != 5 {
		return Metrics{}, fmt.Errorf("metrics vector: %d values, want 5", len(v))
	}
	return Metrics{Tokens: v[0], Loss: v[1], KL: v[2], IS: v[3], Elbo: v[4]}, nil
}

// Summary is what a step logs (spec §2.5–2.6).
type Summary struct {
	Loss   float64 // the unscaled objective: Σ loss / divisor
	KL     float64 // token mean of w_tr·KL over noised tokens
	IS     float64 // token mean of w_tr·IS
	Elbo   float64 // token mean of elbo_tok, nats/token
	PPL    float64 // exp(Elbo)
	Tokens float64 // noised tokens
}

// Summary turns global sums into the logged values. divisor is the one
// Prepare used (Config.Divisor), so Loss is the objective whose gradient was
// taken, without loss_scale. Metrics are means over max(Tokens, 1).
func (m Metrics) Summary(divisor float64) Summary {
	n := math.Max(m.Tokens, 1)
	s := Summary{KL: m.KL / n, IS: m.IS / n, Elbo: m.Elbo / n, Tokens: m.Tokens}
	if divisor > 0 {
		s.Loss = m.Loss / divisor
	}
	s.PPL = math.Exp(s.Elbo)
	return s
}
