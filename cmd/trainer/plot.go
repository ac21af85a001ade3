package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/difftrain/difftrain/node"
)

var plotFlags struct {
	out           string
	width, height int
	smooth        int
}

var plotCmd = &cobra.Command{
	Use:   "plot RUN_DIR",
	Short: "Draw a run's metrics (loss, ELBO, throughput, step time) as PNG files",
	Long: `plot reads RUN_DIR/metrics.jsonl (or the metrics file given instead of a
directory), one JSON record per step, and writes four PNG files to RUN_DIR (or
--out):

  loss.png        the training objective against step
  elbo.png        the ELBO (nats/token, noised tokens) against step
  throughput.png  tokens per second of the whole ring against step
  step_time.png   seconds per step on this node: data, compute, communication, total

Lines are a moving average over --smooth steps (default: about 1/200 of the
run) and break where steps are missing (the node was out of the ring). When a
step appears more than once (a node redid steps after resuming from a
checkpoint) its last record counts. Each node writes its own metrics file;
the loss and throughput are the ring's, the step times the node's.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		out := plotFlags.out
		if out == "" {
			out = args[0]
			if st, err := os.Stat(args[0]); err == nil && !st.IsDir() {
				out = filepath.Dir(args[0])
			}
		}
		files, err := plotRun(args[0], out, plotOptions{Width: plotFlags.width, Height: plotFlags.height, Smooth: plotFlags.smooth})
		if err != nil {
			return err
		}
		for _, f := range files {
			fmt.Fprintln(cmd.OutOrStdout(), f)
		}
		return nil
	},
}

func init() {
	f := plotCmd.Flags()
	f.StringVar(&plotFlags.out, "out", "", "directory for the PNG files (default: RUN_DIR)")
	f.IntVar(&plotFlags.width, "width", 1000, "image width in pixels")
	f.IntVar(&plotFlags.height, "height", 600, "image height in pixels")
	f.IntVar(&plotFlags.smooth, "smooth", 0, "moving-average window in steps (0: about 1/200 of the steps; 1: raw values)")
	root.AddCommand(plotCmd)
}

// plotOptions are the sizes of the images in pixels and the moving-average
// window in steps (0: automatic).
type plotOptions struct {
	Width, Height, Smooth int
}

// plotRun draws the metrics of run (a run directory or a metrics file) into
// PNG files in out and returns their paths.
func plotRun(run, out string, o plotOptions) ([]string, error) {
	if o.Width < 100 || o.Height < 100 || o.Width > 20000 || o.Height > 20000 {
		return nil, fmt.Errorf("plot: image size %dx%d pixels: want 100 to 20000 each", o.Width, o.Height)
	}
	if o.Smooth < 0 {
		return nil, fmt.Errorf("plot: --smooth %d: want 0 (automatic) or a window of steps", o.Smooth)
	}
	path := metricsPath(run)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("plot: no metrics file for %s (want RUN_DIR/metrics.jsonl, written by `trainer train`): %w", run, err)
	}
	if err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	// A running node may be halfway through appending a line: leave out a
	// last line without its newline.
	raw = raw[:bytes.LastIndexByte(raw, '\n')+1]
	recs, err := node.ReadRecords(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("plot: %s: %w", path, err)
	}
	recs = lastPerStep(recs)
	// Steps refused for a non-finite loss were not applied; their NaNs
	// (null in the file) have no place on a chart.
	recs = slices.DeleteFunc(recs, func(r node.Record) bool { return r.Skipped })
	if len(recs) == 0 {
		return nil, fmt.Errorf("plot: %s has no records yet (a record is written after each step)", path)
	}
	win := o.Smooth
	if win == 0 {
		win = max(1, len(recs)/200)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	charts := []struct {
		file, title, ylabel string
		series              []series
	}{
		{"loss.png", "Training objective", "loss", []series{
			{"loss", func(r node.Record) float64 { return r.Loss }},
		}},
		{"elbo.png", "ELBO", "nats/token", []series{
			{"ELBO", func(r node.Record) float64 { return r.Elbo }},
		}},
		{"throughput.png", "Throughput of the ring", "tokens/s", []series{
			{"tokens/s", func(r node.Record) float64 { return r.TokensPerS }},
		}},
		{"step_time.png", "Step time on this node", "seconds", []series{
			{"data", func(r node.Record) float64 { return r.DataS }},
			{"compute", func(r node.Record) float64 { return r.ComputeS }},
			{"comm", func(r node.Record) float64 { return r.CommS }},
			{"total", func(r node.Record) float64 { return r.StepS }},
		}},
	}
	w := vg.Length(o.Width) * vg.Inch / 96 // the PNG canvas draws at 96 dpi
	h := vg.Length(o.Height) * vg.Inch / 96
	var files []string
	for _, c := range charts {
		p := plot.New()
		p.Title.Text = c.title
		if win > 1 {
			p.Title.Text += fmt.Sprintf(" (mean over %d steps)", win)
		}
		p.X.Label.Text = "step"
		p.Y.Label.Text = c.ylabel
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		xlo, xhi := math.Inf(1), math.Inf(-1)
		lo, hi := math.Inf(1), math.Inf(-1)
		for i, s := range c.series {
			for j, seg := range s.segments(recs, win) {
				l, err := plotter.NewLine(seg)
				if err != nil {
					return files, fmt.Errorf("plot: %s: %s: %w", c.file, s.name, err)
				}
				xmin, xmax, ymin, ymax := plotter.XYRange(seg)
				xlo, xhi = min(xlo, xmin), max(xhi, xmax)
				lo, hi = min(lo, ymin), max(hi, ymax)
				l.Color, l.Dashes = plotutil.Color(i), plotutil.Dashes(i)
				p.Add(l)
				if j == 0 && len(c.series) > 1 {
					p.Legend.Add(s.name, l)
				}
			}
		}
		// gonum/plot cannot place ticks on an axis of zero or infinite span.
		p.X.Min, p.X.Max = widen(xlo, xhi)
		p.Y.Min, p.Y.Max = widen(lo, hi)
		if math.IsInf(p.X.Max-p.X.Min, 0) || math.IsInf(p.Y.Max-p.Y.Min, 0) {
			return files, fmt.Errorf("plot: %s: values from %g to %g span more than a float64 can hold", c.file, lo, hi)
		}
		png := filepath.Join(out, c.file)
		if err := savePNG(p, w, h, png); err != nil {
			return files, err
		}
		files = append(files, png)
	}
	return files, nil
}

// series is one line of a chart: a value of each record against its step.
type series struct {
	name  string
	value func(node.Record) float64
}

// segments returns the series as runs of consecutive steps, each smoothed
// by a trailing moving average over win records of its run.
func (s series) segments(recs []node.Record, win int) []plotter.XYs {
	var out []plotter.XYs
	for len(recs) > 0 {
		n := 1
		for n < len(recs) && recs[n].Step == recs[n-1].Step+1 {
			n++
		}
		xys := make(plotter.XYs, n)
		w := float64(win)
		sum := 0.0 // of value/win, which cannot overflow
		for i, r := range recs[:n] {
			if win == 1 {
				xys[i] = plotter.XY{X: float64(r.Step), Y: s.value(r)}
				continue
			}
			if i >= win {
				sum -= s.value(recs[i-win]) / w
			}
			sum += s.value(r) / w
			xys[i] = plotter.XY{X: float64(r.Step), Y: sum * (w / float64(min(i+1, win)))}
		}
		out = append(out, xys)
		recs = recs[n:]
	}
	return out
}

// widen returns the range [lo, hi] widened around its middle when it is too
// narrow for axis ticks (a constant series).
func widen(lo, hi float64) (float64, float64) {
	m := max(math.Abs(lo), math.Abs(hi))
	if hi-lo > m*1e-9 {
		return lo, hi
	}
	pad := max(m*1e-3, 1)
	return lo - pad, hi + pad
}

// lastPerStep keeps the last record of each step, sorted by step.
func lastPerStep(recs []node.Record) []node.Record {
	last := make(map[int64]int, len(recs))
	for i, r := range recs {
		last[r.Step] = i
	}
	out := make([]node.Record, 0, len(last))
	for i, r := range recs {
		if last[r.Step] == i {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b node.Record) int {
		switch {
		case a.Step < b.Step:
			return -1
		case a.Step > b.Step:
			return 1
		}
		return 0
	})
	return out
}

// savePNG writes p through a temporary file, so a failure leaves no partial
// image under path.
func savePNG(p *plot.Plot, w, h vg.Length, path string) error {
	wt, err := p.WriterTo(w, h, "png")
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	_, err = wt.WriteTo(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

func metricsPath(run string) string {
	if st, err := os.Stat(run); err == nil && st.IsDir() {
		return filepath.Join(run, "metrics.jsonl")
	}
	return run
}
