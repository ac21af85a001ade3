package scaling

import (
	"fmt"
	"math"
	"os"
	"sort"

	"sigs.k8s.io/yaml"
)

// Line is a power law y = e^Intercept · x^Slope, a straight line in
// natural-log space, as the paper's notebooks print them.
type Line struct {
	Slope     float64 `json:"slope"`
	Intercept float64 `json:"intercept"` // natural log
}

// At evaluates the law at x.
func (l Line) At(x float64) float64 { return math.Exp(l.Slope*math.Log(x) + l.Intercept) }

// Laws are the planning laws of a sweep, keyed by noise type ("all" is the
// fallback): the optimal batch in tokens against training tokens D (§9.3)
// and the optimal base LR against the batch in tokens (§9.4).
type Laws struct {
	Batch map[string]Line `json:"batch"`
	LR    map[string]Line `json:"lr"`
}

// PaperLaws returns the fits of gidd-spec §9.3 and §9.4. The intercept of
// the "all" LR law is the spec's back-calculated 10^−2.05.
func PaperLaws() Laws {
	return Laws{
		Batch: map[string]Line{
			"all":          {0.8225, -2.4 * math.Ln10},
			"masked":       {0.7759, -4.44879},
			"low-uniform":  {0.7916, -4.83735},
			"balanced":     {0.8373, -5.84525},
			"high-uniform": {0.8607, -6.39774},
			"uniform":      {0.8787, -6.79178},
		},
		LR: map[string]Line{
			"all":          {0.3412, -2.05 * math.Ln10},
			"masked":       {0.3295, -4.56900},
			"low-uniform":  {0.2924, -4.13452},
			"balanced":     {0.3653, -5.01642},
			"high-uniform": {0.3628, -5.04721},
			"uniform":      {0.3554, -4.93308},
		},
	}
}

// LoadLaws reads laws from a JSON or YAML file; noise types it leaves out
// keep the paper's laws.
func LoadLaws(path string) (Laws, error) {
	l := PaperLaws()
	raw, err := os.ReadFile(path)
	if err != nil {
		return l, fmt.Errorf("laws: %w", err)
	}
	var f Laws
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return l, fmt.Errorf("laws %s: %w", path, err)
	}
	for k, v := range f.Batch {
		l.Batch[k] = v
	}
	for k, v := range f.LR {
		l.LR[k] = v
	}
	return l, l.Validate()
}

// Validate reports a law that cannot plan: a non-finite coefficient.
func (l Laws) Validate() error {
	for name, m := range map[string]map[string]Line{"batch": l.Batch, "lr": l.LR} {
		if _, ok := m["all"]; !ok {
			return fmt.Errorf("laws: %s has no \"all\" law to fall back on", name)
		}
		for _, k := range sortedKeys(m) {
			v := m[k]
			if math.IsNaN(v.Slope) || math.IsInf(v.Slope, 0) || math.IsNaN(v.Intercept) || math.IsInf(v.Intercept, 0) {
				return fmt.Errorf("laws: %s law of %q has slope %g, intercept %g: want finite numbers", name, k, v.Slope, v.Intercept)
			}
		}
	}
	return nil
}

// BatchTokens is the optimal batch in tokens for D training tokens.
func (l Laws) BatchTokens(noise string, d float64) float64 { return pick(l.Batch, noise).At(d) }

// LR is the optimal base learning rate at a batch of b tokens.
func (l Laws) BaseLR(noise string, b float64) float64 { return pick(l.LR, noise).At(b) }

func pick(m map[string]Line, noise string) Line {
	if v, ok := m[noise]; ok {
		return v
	}
	return m["all"]
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
