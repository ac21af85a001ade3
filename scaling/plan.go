package scaling

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// PlanSpec is what a sweep is planned from.
type PlanSpec struct {
	Noises       []string  // noise types
	Shapes       []Shape   // model sizes
	Budgets      []float64 // compute budgets C in FLOPs
	SeqLen       int       // N, tokens per sequence
	MicroBatch   int       // the batch is a multiple of this many sequences
	StepMultiple int       // steps are rounded up to a multiple of this (0 or 1: not rounded)
	Laws         Laws
	LR           float64 // > 0: this base LR for every run instead of the LR law
	WarmupFrac   float64 // warmup steps as a share of the steps ...
	WarmupMax    int     // ... at most this many (the paper's 2000)
	Seed         uint64
	DMMin, DMMax float64 // sane range of D/M; runs outside are flagged
	MinSteps     int     // fewer steps are flagged
}

// Run is one planned run of a grid.
type Run struct {
	Name       string   `json:"name"`
	Noise      string   `json:"noise"`
	Shape      Shape    `json:"shape"`
	Params     int64    `json:"params"`   // non-embedding
	M          float64  `json:"M"`        // FLOPs per token, §9.1 exact
	MApprox    float64  `json:"M_approx"` // 72Ld² + 12LdN
	Budget     float64  `json:"C"`        // the planned compute
	D          float64  `json:"D"`        // tokens trained: steps·batch·N
	Compute    float64  `json:"C_actual"` // M·D after rounding
	DOverM     float64  `json:"D_over_M"`
	LawBatch   float64  `json:"law_batch_tokens"` // B* of the batch law before rounding
	Batch      int      `json:"batch"`            // sequences
	MicroBatch int      `json:"micro_batch"`
	Steps      int      `json:"steps"`
	LR         float64  `json:"lr"`
	Warmup     int      `json:"warmup"`
	Cooldown   float64  `json:"cooldown"` // none in sweeps (§9.6)
	Seed       uint64   `json:"seed"`
	Flags      []string `json:"flags,omitempty"` // why the run may not be sane; it is kept
}

// Plan returns every run of the grid noise × shape × budget: D = C/M
// tokens, the batch from the batch law rounded to the micro-batch, the
// steps that reach D, the base LR from the LR law, warmup and no cooldown.
func Plan(p PlanSpec) ([]Run, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	var out []Run
	for _, noise := range p.Noises {
		for _, s := range p.Shapes {
			for _, c := range p.Budgets {
				out = append(out, p.run(noise, s, c))
			}
		}
	}
	return out, nil
}

func (p PlanSpec) validate() error {
	switch {
	case len(p.Noises) == 0 || len(p.Shapes) == 0 || len(p.Budgets) == 0:
		return fmt.Errorf("plan: need at least one noise type, shape and budget (have %d, %d, %d)", len(p.Noises), len(p.Shapes), len(p.Budgets))
	case p.SeqLen <= 0:
		return fmt.Errorf("plan: sequence length %d, must be positive", p.SeqLen)
	case p.MicroBatch <= 0:
		return fmt.Errorf("plan: micro-batch %d, must be positive", p.MicroBatch)
	case p.WarmupFrac < 0 || p.WarmupFrac >= 1 || p.WarmupMax < 0:
		return fmt.Errorf("plan: warmup share %g (want [0, 1)) and cap %d (want >= 0)", p.WarmupFrac, p.WarmupMax)
	case p.LR < 0 || math.IsNaN(p.LR):
		return fmt.Errorf("plan: base LR %g, want 0 (the law) or positive", p.LR)
	}
	for _, c := range p.Budgets {
		if !(c > 0) || math.IsInf(c, 0) {
			return fmt.Errorf("plan: budget %g FLOPs, must be positive and finite", c)
		}
	}
	for _, s := range p.Shapes {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("plan: %w", err)
		}
	}
	return p.Laws.Validate()
}

func (p PlanSpec) run(noise string, s Shape, c float64) Run {
	n := float64(p.SeqLen)
	r := Run{Noise: noise, Shape: s, Params: s.Params(), M: s.M(p.SeqLen), MApprox: s.MApprox(p.SeqLen), Budget: c, Seed: p.Seed}
	r.Name = fmt.Sprintf("%s-%s-C%s", noise, s, FormatFLOPs(c))
	d := c / r.M
	r.LawBatch = p.Laws.BatchTokens(noise, d)
	r.Batch, r.MicroBatch = RoundBatch(r.LawBatch/n, p.MicroBatch), p.MicroBatch
	if float64(r.Batch) > 2*r.LawBatch/n {
		r.Flags = append(r.Flags, fmt.Sprintf("batch %d sequences is over twice the law's %.3g (the micro-batch floor)", r.Batch, r.LawBatch/n))
	}
	r.Steps = RoundSteps(d/(float64(r.Batch)*n), p.StepMultiple)
	r.D = float64(r.Steps) * float64(r.Batch) * n
	r.Compute = r.M * r.D
	r.DOverM = r.D / r.M
	r.LR = p.LR
	if r.LR == 0 {
		r.LR = p.Laws.BaseLR(noise, float64(r.Batch)*n)
	}
	r.Warmup = min(p.WarmupMax, int(math.Ceil(p.WarmupFrac*float64(r.Steps))))
	switch {
	case p.DMMin > 0 && r.DOverM < p.DMMin:
		r.Flags = append(r.Flags, fmt.Sprintf("D/M %.3g below %g: the model is large for this budget", r.DOverM, p.DMMin))
	case p.DMMax > 0 && r.DOverM > p.DMMax:
		r.Flags = append(r.Flags, fmt.Sprintf("D/M %.3g above %g: the model is small for this budget", r.DOverM, p.DMMax))
	}
	if r.Steps < p.MinSteps {
		r.Flags = append(r.Flags, fmt.Sprintf("%d steps, fewer than %d", r.Steps, p.MinSteps))
	}
	return r
}

// RoundBatch rounds a batch of seqs sequences to the nearest multiple of
// micro, at least one micro-batch.
func RoundBatch(seqs float64, micro int) int {
	k := math.Round(seqs / float64(micro))
	if !(k >= 1) {
		k = 1
	}
	return int(k) * micro
}

// RoundSteps rounds steps up to a whole step and a multiple of mult.
func RoundSteps(steps float64, mult int) int {
	mult = max(mult, 1)
	k := math.Ceil(steps / float64(mult))
	if !(k >= 1) {
		k = 1
	}
	return int(k) * mult
}

// FormatFLOPs writes a budget short and exact enough for a name: 1e18,
// 3e17, 2.5e15.
func FormatFLOPs(c float64) string {
	return strings.Replace(strconv.FormatFloat(c, 'g', 3, 64), "e+", "e", 1)
}

// ParseFLOPs reads budgets like "1e15,3e15,1e16".
func ParseFLOPs(list string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || !(v > 0) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("budget %q: want a positive number of FLOPs like 1e15", f)
		}
		out = append(out, v)
	}
	return out, nil
}
