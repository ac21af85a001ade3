package diffusion

import (
	"fmt"
	"math"
	"strings"
)

// GridKind is the λ grid of a sampler or likelihood evaluation (spec §7.1).
type GridKind uint8

const (
	GridCosine GridKind = iota // α_i = ½ + ½cos(π t_i), t_i = linspace(0.999, 0.001, T+1)
	GridLinear                 // α_i = linspace(1e−4, 0.9999, T+1)
)

func (g GridKind) String() string {
	switch g {
	case GridCosine:
		return "cosine"
	case GridLinear:
		return "linear"
	}
	return fmt.Sprintf("grid(%d)", uint8(g))
}

// ParseGrid reads "cosine" or "linear".
func ParseGrid(s string) (GridKind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "cosine":
		return GridCosine, nil
	case "linear":
		return GridLinear, nil
	}
	return 0, fmt.Errorf("noise grid %q: want cosine or linear", s)
}

// Grid returns the T+1 log-SNRs λ_0 < … < λ_T of a T-step grid, clipped to
// the schedule's range. Step i goes from λ_i to λ_{i+1}.
func Grid(kind GridKind, steps int, s Schedule) ([]float64, error) {
	if steps <= 0 {
		return nil, fmt.Errorf("noise grid: %d steps, must be positive", steps)
	}
	g := make([]float64, steps+1)
	for i := range g {
		f := float64(i) / float64(steps)
		var a float64
		switch kind {
		case GridCosine:
			t := 0.999 + f*(0.001-0.999)
			a = 0.5 + 0.5*math.Cos(math.Pi*t)
		case GridLinear:
			a = 1e-4 + f*(0.9999-1e-4)
		default:
			return nil, fmt.Errorf("noise grid: unknown kind %v", kind)
		}
		g[i] = s.Clip(math.Log(a / (1 - a)))
	}
	return g, nil
}
