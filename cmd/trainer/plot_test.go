package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/plotter"

	"github.com/difftrain/difftrain/node"
)

// syntheticRun writes a metrics.jsonl of n steps in which steps from..n-1
// were run twice (a resume from a checkpoint at step from), with the later
// run's loss marked by +100.
func syntheticRun(t *testing.T, dir string, n, from int) {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(s int, extra float64) node.Record {
		loss := 5*math.Exp(-float64(s)/40) + 1 + extra
		return node.Record{
			Time: t0.Add(time.Duration(s) * time.Second), Step: int64(s), Loss: loss, Elbo: loss * 1.1,
			Tokens: 8192, TokensPerS: 20000 + 500*math.Sin(float64(s)/5),
			StepS: 0.4, DataS: 0.02, ComputeS: 0.3, CommS: 0.08, Members: 3, Generation: 1,
		}
	}
	for s := 1; s <= n; s++ {
		if err := enc.Encode(rec(s, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for s := from + 1; s <= n; s++ {
		if err := enc.Encode(rec(s, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "metrics.jsonl"), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPlotWritesPNGs(t *testing.T) {
	run, out := t.TempDir(), filepath.Join(t.TempDir(), "plots")
	syntheticRun(t, run, 150, 120)
	files, err := plotRun(run, out, plotOptions{Width: 400, Height: 300})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"loss.png", "elbo.png", "throughput.png", "step_time.png"}
	if len(files) != len(want) {
		t.Fatalf("wrote %v, want %v", files, want)
	}
	for i, f := range files {
		if filepath.Base(f) != want[i] || filepath.Dir(f) != out {
			t.Errorf("file %d is %s, want %s in %s", i, f, want[i], out)
		}
		img := decodePNG(t, f)
		if b := img.Bounds(); b.Dx() != 400 || b.Dy() != 300 {
			t.Errorf("%s: %dx%d pixels, want 400x300", f, b.Dx(), b.Dy())
		}
		if n := colours(img); n < 4 {
			t.Errorf("%s: %d colours: nothing drawn", f, n)
		}
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != len(want) {
		t.Errorf("out holds %d entries, want only the %d images (no temporary files)", len(ents), len(want))
	}
}

// TestPlotCommand runs `trainer plot` on a metrics file rather than a run
// directory: the images go beside the file.
func TestPlotCommand(t *testing.T) {
	run := t.TempDir()
	syntheticRun(t, run, 20, 20)
	var stdout bytes.Buffer
	root.SetOut(&stdout)
	root.SetArgs([]string{"plot", filepath.Join(run, "metrics.jsonl"), "--width", "320", "--height", "200"})
	defer func() { root.SetArgs(nil); root.SetOut(nil) }()
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"loss.png", "elbo.png", "throughput.png", "step_time.png"} {
		p := filepath.Join(run, f)
		if !strings.Contains(stdout.String(), p) {
			t.Errorf("output %q does not name %s", stdout.String(), p)
		}
		if b := decodePNG(t, p).Bounds(); b.Dx() != 320 || b.Dy() != 200 {
			t.Errorf("%s: %dx%d, want 320x200", f, b.Dx(), b.Dy())
		}
	}
}

func TestPlotErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "metrics.jsonl"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	size := plotOptions{Width: 400, Height: 300}
	good := `{"step":1,"loss":3,"elbo":3.2,"tokens_per_s":100,"step_s":1,"data_s":0.1,"compute_s":0.8,"comm_s":0.1}` + "\n"
	for _, tc := range []struct {
		name, run string
		o         plotOptions
		want      string
	}{
		{"no directory", filepath.Join(dir, "nope"), size, "no metrics file"},
		{"no metrics file", t.TempDir(), size, "no metrics file"},
		{"empty file", write("empty", ""), size, "no records"},
		{"blank lines", write("blank", "\n\n"), size, "no records"},
		{"only a partial line", write("partial", `{"step":1,"lo`), size, "no records"},
		{"bad line", write("bad", good+"{oops}\n"), size, "metrics line 2"},
		{"wrong type", write("type", `{"step":"one"}`+"\n"), size, "metrics line 1"},
		{"too small", write("small", good), plotOptions{Width: 10, Height: 300}, "image size"},
		{"too large", write("large", good), plotOptions{Width: 400, Height: 1 << 20}, "image size"},
		{"negative smoothing", write("smooth", good), plotOptions{Width: 400, Height: 300, Smooth: -1}, "--smooth"},
		{"unplottable range", write("range", `{"step":1,"loss":1e308}`+"\n"+`{"step":2,"loss":-1e308}`+"\n"), size, "span more than"},
	} {
		_, err := plotRun(tc.run, filepath.Join(dir, "out-"+strings.ReplaceAll(tc.name, " ", "-")), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// Constant series, and a single record at a step too large for gonum's
	// default padding of an axis, still draw.
	for i, s := range []string{`{"loss":1e17}` + "\n", `{"step":1000000000000000000,"loss":1}` + "\n"} {
		run := write(fmt.Sprint("const", i), s)
		if _, err := plotRun(run, run, size); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	// A partial last line after whole ones is a record being written: the
	// whole lines are drawn.
	run := write("growing", good+`{"step":2,"lo`)
	if _, err := plotRun(run, run, size); err != nil {
		t.Errorf("metrics file being appended to: %v", err)
	}
}

func TestLastPerStep(t *testing.T) {
	r := func(step int64, loss float64) node.Record { return node.Record{Step: step, Loss: loss} }
	for _, tc := range []struct {
		name string
		in   []node.Record
		want []node.Record
	}{
		{"empty", nil, []node.Record{}},
		{"in order", []node.Record{r(1, 1), r(2, 2)}, []node.Record{r(1, 1), r(2, 2)}},
		{"resumed", []node.Record{r(1, 1), r(2, 2), r(3, 3), r(2, 20), r(3, 30), r(4, 40)},
			[]node.Record{r(1, 1), r(2, 20), r(3, 30), r(4, 40)}},
		{"unordered", []node.Record{r(3, 3), r(1, 1), r(2, 2)}, []node.Record{r(1, 1), r(2, 2), r(3, 3)}},
	} {
		if got := lastPerStep(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSegments(t *testing.T) {
	r := func(step int64, loss float64) node.Record { return node.Record{Step: step, Loss: loss} }
	loss := series{"loss", func(r node.Record) float64 { return r.Loss }}
	xy := func(x, y float64) plotter.XY { return plotter.XY{X: x, Y: y} }
	for _, tc := range []struct {
		name string
		recs []node.Record
		win  int
		want []plotter.XYs
	}{
		{"empty", nil, 1, nil},
		{"raw", []node.Record{r(1, 4), r(2, 2), r(3, 6)}, 1, []plotter.XYs{{xy(1, 4), xy(2, 2), xy(3, 6)}}},
		{"mean of 2", []node.Record{r(1, 4), r(2, 2), r(3, 6)}, 2, []plotter.XYs{{xy(1, 4), xy(2, 3), xy(3, 4)}}},
		{"window past the start", []node.Record{r(1, 3), r(2, 6)}, 10, []plotter.XYs{{xy(1, 3), xy(2, 4.5)}}},
		{"huge values", []node.Record{r(1, 1.7e308), r(2, 1.7e308), r(3, 1.7e308)}, 2,
			[]plotter.XYs{{xy(1, 1.7e308), xy(2, 1.7e308), xy(3, 1.7e308)}}},
		{"gap breaks the line and the mean", []node.Record{r(1, 4), r(2, 2), r(5, 10), r(6, 20)}, 2,
			[]plotter.XYs{{xy(1, 4), xy(2, 3)}, {xy(5, 10), xy(6, 15)}}},
	} {
		got := loss.segments(tc.recs, tc.win)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %d segments %v, want %d", tc.name, len(got), got, len(tc.want))
			continue
		}
		for i := range got {
			near := func(a, b plotter.XY) bool { return a.X == b.X && math.Abs(a.Y-b.Y) <= 1e-12*math.Abs(b.Y) }
			if !slices.EqualFunc(got[i], tc.want[i], near) {
				t.Errorf("%s: segment %d is %v, want %v", tc.name, i, got[i], tc.want[i])
			}
		}
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Size() == 0 {
		t.Fatalf("%s is empty", path)
	}
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

// colours counts the distinct colours of img, up to 100.
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y && len(seen) < 100; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}

// FuzzPlot feeds arbitrary metrics files to plot: it may refuse them, but
// must not panic or leave a partial image.
func FuzzPlot(f *testing.F) {
	for _, s := range []string{
		"",
		`{"step":1,"loss":3,"elbo":3.2,"tokens_per_s":100,"step_s":1,"data_s":0.1,"compute_s":0.8,"comm_s":0.1}` + "\n",
		`{"step":9223372036854775807,"loss":1e308}` + "\n" + `{"step":-9223372036854775808,"loss":-1e308}` + "\n",
		`{"step":1,"loss":5}` + "\n" + `{"step":1,"loss":5}` + "\n" + `{"step":3,"loss":-0}` + "\n",
		`{"step":2,"elbo":1e-320}` + "\n" + `{"step":1,"lo`,
		`{"loss":1e17}` + "\n",
		`{"step":1000000000000000000,"loss":1}` + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "metrics.jsonl"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		files, err := plotRun(dir, dir, plotOptions{Width: 100, Height: 100, Smooth: 1})
		for _, p := range files {
			decodePNG(t, p)
		}
		if err == nil && len(files) != 4 {
			t.Fatalf("no error but %d images", len(files))
		}
	})
}
