package scaling

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
)

// CurvePoint is a step's ELBO from a run's metrics.jsonl.
type CurvePoint struct {
	Step int64
	Elbo float64
}

// ReadCurve reads the step and ELBO of each line of a metrics.jsonl stream.
// A step whose ELBO is null or not finite (a NaN step) is left out; a last
// line without its newline (a node still writing) is ignored; when a step
// appears more than once (a resumed run redid it) its last record counts.
// Any other malformed line is an error naming it.
func ReadCurve(r io.Reader) ([]CurvePoint, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	raw = raw[:bytes.LastIndexByte(raw, '\n')+1]
	last := map[int64]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var rec struct {
			Step *int64          `json:"step"`
			Elbo json.RawMessage `json:"elbo"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", line, err)
		}
		if rec.Step == nil || *rec.Step < 0 {
			return nil, fmt.Errorf("metrics line %d: no step, or a negative one", line)
		}
		var e *float64
		if len(rec.Elbo) > 0 {
			if err := json.Unmarshal(rec.Elbo, &e); err != nil {
				return nil, fmt.Errorf("metrics line %d: elbo: %w", line, err)
			}
		}
		if e == nil || math.IsNaN(*e) || math.IsInf(*e, 0) {
			delete(last, *rec.Step)
			continue
		}
		last[*rec.Step] = *e
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	out := make([]CurvePoint, 0, len(last))
	for s, e := range last {
		out = append(out, CurvePoint{s, e})
	}
	slices.SortFunc(out, func(a, b CurvePoint) int { return cmp.Compare(a.Step, b.Step) })
	return out, nil
}

// EMA smooths v with an exponential moving average of factor beta,
// bias-corrected so the first values are not pulled towards 0.
func EMA(v []float64, beta float64) []float64 {
	out := make([]float64, len(v))
	m, w := 0.0, 0.0
	for i, x := range v {
		m = beta*m + (1-beta)*x
		w = beta*w + (1 - beta)
		out[i] = m / w
	}
	return out
}

// Curve is a run's loss curve L(S) = C + B·S^−Exp (gidd-spec §9.2).
type Curve struct {
	C    float64 `json:"C"`
	B    float64 `json:"B"`
	Exp  float64 `json:"b"`
	From int64   `json:"from_step"` // first step fitted
}

// At evaluates the curve at step s.
func (c Curve) At(s float64) float64 { return c.C + c.B*math.Pow(s, -c.Exp) }

// FitCurve fits L(S) = C + B·S^−b by least squares in log loss to the
// points from step from on; it needs 5 of them.
func FitCurve(pts []CurvePoint, loss []float64, from int64) (Curve, error) {
	var s, l []float64
	for i, p := range pts {
		if p.Step >= from && p.Step > 0 {
			s, l = append(s, float64(p.Step)), append(l, loss[i])
		}
	}
	if len(s) < 5 {
		return Curve{}, fmt.Errorf("loss curve: %d points from step %d, need 5", len(s), from)
	}
	lo := max(slices.Min(l), 1e-9)
	f := func(p []float64) float64 {
		c, b, e := math.Exp(p[0]), math.Exp(p[1]), p[2]
		sum := 0.0
		for i := range s {
			pred := c + b*math.Pow(s[i], -e)
			if !(pred > 0) {
				return math.Inf(1)
			}
			d := math.Log(pred) - math.Log(l[i])
			sum += d * d
		}
		return sum
	}
	// C and B are fitted as logarithms: both stay positive.
	p := minimize(f, []float64{math.Log(0.8 * lo), math.Log(max(l[0]-0.8*lo, 1e-3)) + 0.5*math.Log(s[0]), 0.5})
	return Curve{C: math.Exp(p[0]), B: math.Exp(p[1]), Exp: p[2], From: int64(s[0])}, nil
}
