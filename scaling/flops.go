// Package scaling is the arithmetic of a scaling study (gidd-spec §9): FLOPs
// per token, the paper's planning laws for batch size and learning rate, the
// planning of a compute-optimal grid of runs, and the fits that turn finished
// runs into scaling laws (loss curves, iso-FLOP optima, power laws in compute
// with bootstrap intervals, and the 2-D loss surface L(M, D)).
package scaling

import (
	"fmt"
	"strconv"
	"strings"
)

// Shape is a transformer's size: layers L, width d and attention heads H.
type Shape struct {
	Layers int `json:"layers"`
	Dim    int `json:"dim"`
	Heads  int `json:"heads"`
}

func (s Shape) String() string { return fmt.Sprintf("L%d-d%d-H%d", s.Layers, s.Dim, s.Heads) }

// M is the non-embedding training FLOPs per token of gidd-spec §9.1 at
// sequence length n: 3·L·(24d² + 4dN + 3HN), forward plus backward.
func (s Shape) M(n int) float64 {
	l, d, h, nn := float64(s.Layers), float64(s.Dim), float64(s.Heads), float64(n)
	return 3 * l * (24*d*d + 4*d*nn + 3*h*nn)
}

// MApprox is the planning form of M, 72·L·d² + 12·L·d·N.
func (s Shape) MApprox(n int) float64 {
	l, d, nn := float64(s.Layers), float64(s.Dim), float64(n)
	return 72*l*d*d + 12*l*d*nn
}

// Params is the non-embedding parameter count L·(12d² + 14d) + d (§4.5).
func (s Shape) Params() int64 {
	d, l := int64(s.Dim), int64(s.Layers)
	return l*(12*d*d+14*d) + d
}

// Validate reports a shape the model cannot have.
func (s Shape) Validate() error {
	switch {
	case s.Layers <= 0 || s.Dim <= 0 || s.Heads <= 0:
		return fmt.Errorf("shape %s: layers, width and heads must be positive", s)
	case s.Dim%s.Heads != 0:
		return fmt.Errorf("shape %s: width %d is not divisible by %d heads", s, s.Dim, s.Heads)
	case (s.Dim/s.Heads)%2 != 0:
		return fmt.Errorf("shape %s: head dimension %d must be even (RoPE)", s, s.Dim/s.Heads)
	}
	return nil
}

// ParseShape reads "L8-d512-H8" (case-insensitive, H optional: then the
// width over headDim).
func ParseShape(str string, headDim int) (Shape, error) {
	var s Shape
	for _, part := range strings.Split(strings.ToLower(strings.TrimSpace(str)), "-") {
		if len(part) < 2 {
			return s, fmt.Errorf("shape %q: want L<layers>-d<width>[-H<heads>]", str)
		}
		v, err := strconv.Atoi(part[1:])
		if err != nil || v <= 0 {
			return s, fmt.Errorf("shape %q: %q is not a positive count", str, part)
		}
		switch part[0] {
		case 'l':
			s.Layers = v
		case 'd':
			s.Dim = v
		case 'h':
			s.Heads = v
		default:
			return s, fmt.Errorf("shape %q: unknown part %q (want L, d or H)", str, part)
		}
	}
	if s.Heads == 0 && headDim > 0 {
		s.Heads = max(1, s.Dim/headDim)
	}
	return s, s.Validate()
}

// Ladder returns the shapes of the paper's width/depth ladder (§10.1: width
// = aspect·L, heads of headDim) whose non-embedding parameters lie in
// [pmin, pmax], smallest first.
func Ladder(pmin, pmax int64, aspect, headDim int) ([]Shape, error) {
	if aspect <= 0 || headDim <= 0 || aspect%2 != 0 {
		return nil, fmt.Errorf("ladder: aspect %d and head dim %d must be positive and the aspect even", aspect, headDim)
	}
	if pmin <= 0 || pmax < pmin {
		return nil, fmt.Errorf("ladder: parameter range [%d, %d] is empty", pmin, pmax)
	}
	var out []Shape
	for l := 1; l <= 128; l++ {
		d := aspect * l
		s := Shape{Layers: l, Dim: d, Heads: max(1, d/headDim)}
		for s.Dim%s.Heads != 0 || (s.Dim/s.Heads)%2 != 0 {
			s.Heads--
		}
		if p := s.Params(); p >= pmin && p <= pmax {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ladder: no shape L×%dL has %d to %d non-embedding parameters", aspect, pmin, pmax)
	}
	return out, nil
}
