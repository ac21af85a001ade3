package diffusion

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Noise is the hybrid mixing distribution of spec §1.3 over a vocabulary of
// Vocab tokens with mask id MaskID:
//
//	a(λ) = σ(Scale·λ + Shift)       (λ unclipped)
//	π_λ  = a·u + (1−a)·e_m,  u uniform over the non-mask tokens
//
// UniformIncludesMask makes the noising sampler draw uniform noise tokens
// from the full vocabulary, mask included, as the reference code does
// (spec §1.4 [BUG?]); the default false draws exactly from u.
type Noise struct {
	Shift               float64 `json:"hybrid_mixing_shift"`
	Scale               float64 `json:"hybrid_mixing_scale"`
	MaskID              int     `json:"mask_token_id"`
	Vocab               int     `json:"vocab_size"`
	UniformIncludesMask bool    `json:"uniform_noise_includes_mask"`
}

// Presets are the noise types of the paper by name (shift; scale 1).
var Presets = map[string]float64{
	"masked":       -1000,
	"low-uniform":  -2,
	"balanced":     0,
	"high-uniform": 2,
	"uniform":      1000,
}

// ParseShift reads a noise type: a preset name (see Presets) or a number,
// the mixing shift b.
func ParseShift(s string) (float64, error) {
	if b, ok := Presets[strings.ToLower(strings.TrimSpace(s))]; ok {
		return b, nil
	}
	b, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(b) || math.IsInf(b, 0) {
		names := make([]string, 0, len(Presets))
		for n := range Presets {
			names = append(names, n)
		}
		sort.Strings(names)
		return 0, fmt.Errorf("noise type %q: want one of %s or a finite number (the mixing shift)", s, strings.Join(names, ", "))
	}
	return b, nil
}

// NewNoise returns the noise of a named or numeric type (see ParseShift) with
// scale 1, over vocab tokens with the given mask id.
func NewNoise(kind string, vocab, maskID int) (Noise, error) {
	b, err := ParseShift(kind)
	if err != nil {
		return Noise{}, err
	}
	n := Noise{Shift: b, Scale: 1, MaskID: maskID, Vocab: vocab}
	return n, n.Validate()
}

// Validate checks the vocabulary, mask id and mixing parameters.
func (n Noise) Validate() error {
	if n.Vocab < 2 {
		return fmt.Errorf("noise: vocab_size %d, need at least 2 (a mask and one token)", n.Vocab)
	}
	if n.MaskID < 0 || n.MaskID >= n.Vocab {
		return fmt.Errorf("noise: mask_token_id %d outside the vocabulary [0, %d)", n.MaskID, n.Vocab)
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"hybrid_mixing_shift", n.Shift}, {"hybrid_mixing_scale", n.Scale}} {
		if math.IsNaN(p.v) || math.IsInf(p.v, 0) {
			return fmt.Errorf("noise: %s = %g, must be finite", p.name, p.v)
		}
	}
	return nil
}

// A is a(λ) = σ(Scale·λ + Shift), the uniform share of the noise.
func (n Noise) A(l float64) float64 { return Sigmoid(n.Scale*l + n.Shift) }

// Pi is π_λ(z): a/(V−1) for z ≠ m, 1 − a for z = m.
func (n Noise) Pi(l float64, z int) float64 {
	a := n.A(l)
	if z == n.MaskID {
		return 1 - a
	}
	return a / float64(n.Vocab-1)
}

// PiPrime is π'_λ(z) = dπ_λ(z)/dλ: s·a(1−a)/(V−1) for z ≠ m, −s·a(1−a) for z = m.
func (n Noise) PiPrime(l float64, z int) float64 {
	a := n.A(l)
	d := n.Scale * a * (1 - a)
	if z == n.MaskID {
		return -d
	}
	return d / float64(n.Vocab-1)
}

// PiVec writes π_λ over the whole vocabulary into dst (len Vocab).
func (n Noise) PiVec(l float64, dst []float64) {
	a := n.A(l)
	for v := range dst {
		dst[v] = a / float64(n.Vocab-1)
	}
	dst[n.MaskID] = 1 - a
}

// Weights returns the loss weights of spec §2.2 for noisy token z, clean
// token x at log-SNR λ (unclipped):
//
//	w      = (π(z) − π'(z)) / max(π(z) + e^λ·[z = x], 1e−8)
//	w_elbo = w / max(p(λ), 1e−12)
//
// and their clipped versions w_tr = clip(w, 0, 1e3), w_el = clip(w_elbo, 0, 1e6).
func (n Noise) Weights(l float64, z, x int) (w, wElbo, wTr, wEl float64) {
	den := n.Pi(l, z)
	if z == x {
		den += math.Exp(l)
	}
	w = (n.Pi(l, z) - n.PiPrime(l, z)) / math.Max(den, 1e-8)
	wElbo = w / math.Max(Density(l), 1e-12)
	return w, wElbo, clip(w, 0, 1e3), clip(wElbo, 0, 1e6)
}

// uniformToken maps 64 random bits to a uniform noise token: over the
// non-mask tokens, or over the whole vocabulary with UniformIncludesMask.
func (n Noise) uniformToken(w uint64) int32 {
	if n.UniformIncludesMask {
		return int32(Intn(w, n.Vocab))
	}
	v := Intn(w, n.Vocab-1)
	if v >= n.MaskID {
		v++
	}
	return int32(v)
}

func clip(x, lo, hi float64) float64 { return math.Min(math.Max(x, lo), hi) }
