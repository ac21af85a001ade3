package scaling

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ReadTable reads finished runs from a CSV (with a header) or JSONL file:
// columns noise, M (non-embedding FLOPs per token), D (tokens), C (FLOPs;
// M·D when absent or 0), loss (final ELBO, nats/token) and optional params.
// format is "csv" or "jsonl".
func ReadTable(r io.Reader, format string) ([]Point, error) {
	var pts []Point
	var err error
	switch format {
	case "csv":
		pts, err = readCSV(r)
	case "jsonl":
		pts, err = readJSONL(r)
	default:
		return nil, fmt.Errorf("table: format %q, want csv or jsonl", format)
	}
	if err != nil {
		return nil, err
	}
	if len(pts) == 0 {
		return nil, errors.New("table: no runs")
	}
	return pts, nil
}

func readCSV(r io.Reader) ([]Point, error) {
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("table header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.TrimSpace(h)] = i
	}
	for _, need := range []string{"noise", "M", "D", "loss"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("table header %q: no column %q (want noise, M, D, loss; optional C, params)", strings.Join(head, ","), need)
		}
	}
	var out []Point
	for row := 2; ; row++ {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("table: %w", err)
		}
		num := func(name string) (float64, error) {
			i, ok := col[name]
			if !ok || i >= len(rec) || strings.TrimSpace(rec[i]) == "" {
				return 0, nil
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(rec[i]), 64)
			if err != nil {
				return 0, fmt.Errorf("table row %d: %s %q is not a number", row, name, rec[i])
			}
			return v, nil
		}
		var p Point
		p.Noise = strings.TrimSpace(rec[col["noise"]])
		for _, f := range []struct {
			name string
			v    *float64
		}{{"M", &p.M}, {"D", &p.D}, {"C", &p.C}, {"loss", &p.Loss}, {"params", &p.Params}} {
			if *f.v, err = num(f.name); err != nil {
				return nil, err
			}
		}
		if err := p.check(fmt.Sprintf("table row %d", row)); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
}

func readJSONL(r io.Reader) ([]Point, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("table: %w", err)
	}
	var out []Point
	for i, line := range bytes.Split(raw, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		var p Point
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("table line %d: %w", i+1, err)
		}
		if err := p.check(fmt.Sprintf("table line %d", i+1)); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// check fills C = M·D when absent and reports a row that cannot be fitted.
func (p *Point) check(where string) error {
	if p.Noise == "" {
		return fmt.Errorf("%s: no noise type", where)
	}
	if p.C == 0 {
		p.C = p.M * p.D
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"M", p.M}, {"D", p.D}, {"C", p.C}, {"loss", p.Loss}} {
		if !(f.v > 0) || math.IsInf(f.v, 0) {
			return fmt.Errorf("%s: %s = %g, must be positive and finite", where, f.name, f.v)
		}
	}
	if p.Params < 0 || math.IsNaN(p.Params) || math.IsInf(p.Params, 0) {
		return fmt.Errorf("%s: params = %g, must be a count", where, p.Params)
	}
	return nil
}
