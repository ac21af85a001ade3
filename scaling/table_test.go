package scaling

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestReadTable(t *testing.T) {
	csv := "noise,M,D,loss,params\nmasked,2.5e8,4e9,3.1,25e6\nuniform, 2.5e8 ,4e9,3.2,\n"
	pts, err := ReadTable(strings.NewReader(csv), "csv")
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 || pts[0].C != 1e18 || pts[1].Noise != "uniform" || pts[0].Params != 25e6 {
		t.Errorf("got %+v", pts)
	}
	jl := `{"noise":"masked","M":2.5e8,"D":4e9,"C":1e18,"loss":3.1}` + "\n\n"
	if pts, err := ReadTable(strings.NewReader(jl), "jsonl"); err != nil || len(pts) != 1 || pts[0].C != 1e18 {
		t.Errorf("jsonl: %+v, %v", pts, err)
	}
	for _, bad := range []struct{ in, format string }{
		{"noise,M,loss\nmasked,1,2\n", "csv"},
		{"noise,M,D,loss\nmasked,1,x,2\n", "csv"},
		{"noise,M,D,loss\nmasked,1,1,-2\n", "csv"},
		{`{"noise":"m","M":1,"D":1,"loss":1,"extra":1}`, "jsonl"},
		{`{"noise":"m","M":1,"D":1,"loss":NaN}`, "jsonl"},
		{"", "csv"},
	} {
		if _, err := ReadTable(strings.NewReader(bad.in), bad.format); err == nil {
			t.Errorf("%q accepted", bad.in)
		}
	}
}

func FuzzReadTable(f *testing.F) {
	f.Add([]byte("noise,M,D,loss\nmasked,2.5e8,4e9,3.1\n"), true)
	f.Add([]byte("noise,M,D,C,loss,params\nuniform,1,2,3,4,5\n"), true)
	f.Add([]byte(`{"noise":"masked","M":2.5e8,"D":4e9,"loss":3.1}`+"\n"), false)
	f.Add([]byte(`{"noise":"masked","M":1e400}`), false)
	f.Fuzz(func(t *testing.T, in []byte, isCSV bool) {
		format := "jsonl"
		if isCSV {
			format = "csv"
		}
		pts, err := ReadTable(bytes.NewReader(in), format)
		if err != nil {
			return
		}
		for _, p := range pts {
			if !(p.M > 0 && p.D > 0 && p.C > 0 && p.Loss > 0) || math.IsInf(p.M+p.D+p.C+p.Loss, 0) || p.Noise == "" {
				t.Fatalf("accepted an unfittable row %+v", p)
			}
		}
	})
}

func TestReadCurve(t *testing.T) {
	in := `{"step":1,"elbo":5}
{"step":2,"elbo":null}
{"step":3,"elbo":4}
{"step":3,"elbo":3.5}
{"step":4,"el`
	c, err := ReadCurve(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != 2 || c[0] != (CurvePoint{1, 5}) || c[1] != (CurvePoint{3, 3.5}) {
		t.Errorf("got %+v", c)
	}
	if _, err := ReadCurve(strings.NewReader("{\"step\":1,\"elbo\":5}\ngarbage\n{\"step\":2,\"elbo\":4}\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a corrupt line: %v", err)
	}
	var pts []CurvePoint
	var loss []float64
	for s := int64(1); s <= 200; s++ {
		pts = append(pts, CurvePoint{Step: s})
		loss = append(loss, 2+3*math.Pow(float64(s), -0.4))
	}
	cv, err := FitCurve(pts, loss, 10)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(cv.C-2) > 0.05 || math.Abs(cv.Exp-0.4) > 0.03 {
		t.Errorf("curve fit %+v, want C=2 B=3 b=0.4", cv)
	}
	if e := EMA([]float64{4, 4, 4}, 0.9); e[0] != 4 || math.Abs(e[2]-4) > 1e-12 {
		t.Errorf("EMA of a constant: %v", e)
	}
}

func FuzzReadCurve(f *testing.F) {
	f.Add([]byte("{\"step\":1,\"elbo\":5}\n{\"step\":2,\"elbo\":null}\n"))
	f.Add([]byte("{\"step\":-1}\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ReadCurve(bytes.NewReader(in))
		if err != nil {
			return
		}
		for i, p := range c {
			if math.IsNaN(p.Elbo) || math.IsInf(p.Elbo, 0) || (i > 0 && p.Step <= c[i-1].Step) {
				t.Fatalf("bad curve %+v", c)
			}
		}
	})
}
