package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/difftrain/difftrain/scaling"
	"github.com/difftrain/difftrain/sweep"
)

type fitFlags struct {
	table, out, ratioAt string
	loss                string
	json                bool
	bootstrap, surfBoot int
	minSteps            int
	delta, lawDelta     float64
	ema                 float64
	seed                uint64
	isoWindow           int
}

func init() {
	f := &fitFlags{}
	cmd := &cobra.Command{
		Use:   "fit RUN_DIR... | SWEEP_DIR | --table FILE",
		Short: "Fit scaling laws to finished runs: iso-FLOP optima, M*/D*/L* in C, the loss surface L(M, D)",
		Long: `fit reads finished runs (run directories with config.json and metrics.jsonl, a
sweep directory, or --table FILE.csv/.jsonl with columns noise, M, D, [C], loss,
[params]) and fits what gidd-spec §9.2–§9.5 fit, per noise type: each run's loss
curve L(S) = C + B·S^−b on the EMA-smoothed ELBO; its final loss (the last EMA
ELBO, or with --loss val the held-out ELBO that ` + "`trainer sweep eval`" + ` wrote); the
best run per (size, C);
iso-FLOP parabolas in log-log space and their optima M*(C), D*(C), L*(C); power laws
y = A·C^α through the optima, fitted in log space with a Huber loss, with 95%
bootstrap intervals (runs resampled within each budget); and the surface
L(M, D) = a·M^−α + b·D^−β + E (Huber, bootstrap intervals). It prints the tables,
the uniform/masked loss ratio at --ratio-at budgets (§9.7), writes fit.json and PNG
plots into --out, and with --json prints one JSON object keyed by noise type.
Runs that are unfinished or whose files are corrupt are reported and skipped.`,
		RunE: func(cmd *cobra.Command, args []string) error { return runFit(cmd.OutOrStdout(), f, args) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.table, "table", "", "CSV or JSONL file of finished runs instead of run directories")
	fs.StringVar(&f.out, "out", "", "directory for fit.json and the PNG plots (empty: none)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object keyed by noise type instead of tables")
	fs.IntVar(&f.bootstrap, "bootstrap", 10000, "bootstrap resamples for the laws in C")
	fs.IntVar(&f.surfBoot, "bootstrap-surface", 200, "bootstrap resamples for the 2-D surface (each a 5-parameter fit)")
	fs.Float64Var(&f.delta, "huber-delta", 1e-3, "Huber δ on log-loss residuals of the 2-D surface (Chinchilla's)")
	fs.Float64Var(&f.lawDelta, "huber-delta-law", 0.1, "Huber δ on log residuals of the power laws through the optima")
	fs.Float64Var(&f.ema, "ema", 0.95, "EMA factor for smoothing each run's ELBO")
	fs.IntVar(&f.minSteps, "min-steps", 0, "leave out runs planned for fewer steps (the paper's fits keep runs of more than 5000)")
	fs.StringVar(&f.loss, "loss", sweep.LossTrain, "each run's loss: train (its last EMA ELBO) or val (held-out ELBO of its final checkpoint, from trainer sweep eval)")
	fs.IntVar(&f.isoWindow, "iso-window", 0, "fit each budget's parabola to this many adjacent sizes around its best run (at least 3; 0: all sizes)")
	fs.Uint64Var(&f.seed, "seed", 1, "bootstrap seed")
	fs.StringVar(&f.ratioAt, "ratio-at", "", "budgets for the uniform/masked loss ratio (default: the budgets fitted)")
	root.AddCommand(cmd)
}

func runFit(w io.Writer, f *fitFlags, args []string) error {
	if f.bootstrap < 0 || f.surfBoot < 0 || f.minSteps < 0 || !(f.ema >= 0 && f.ema < 1) {
		return fmt.Errorf("fit: --bootstrap %d, --bootstrap-surface %d, --min-steps %d must be >= 0 and --ema %g in [0, 1)", f.bootstrap, f.surfBoot, f.minSteps, f.ema)
	}
	var pts []scaling.Point
	var runs []sweep.Result
	switch {
	case f.table != "" && len(args) > 0:
		return fmt.Errorf("fit: give run directories or --table, not both")
	case f.table != "":
		format := strings.TrimPrefix(strings.ToLower(filepath.Ext(f.table)), ".")
		r, err := os.Open(f.table)
		if err != nil {
			return fmt.Errorf("fit --table: %w", err)
		}
		defer r.Close()
		if pts, err = scaling.ReadTable(r, format); err != nil {
			return fmt.Errorf("fit %s: %w", f.table, err)
		}
	case len(args) == 0:
		return fmt.Errorf("fit: give run directories, a sweep directory or --table FILE")
	default:
		var skipped []string
		var err error
		if runs, skipped, err = sweep.Collect(args, sweep.CollectOptions{EMA: f.ema, Loss: f.loss, MinSteps: f.minSteps}); err != nil {
			return err
		}
		for _, s := range skipped {
			fmt.Fprintln(os.Stderr, "fit: skipped", s)
		}
		for _, r := range runs {
			pts = append(pts, r.Point)
		}
		if len(pts) == 0 {
			return fmt.Errorf("fit: no finished runs among %s", strings.Join(args, " "))
		}
	}
	fits, err := scaling.Fit(pts, scaling.FitOptions{Bootstrap: f.bootstrap, SurfaceBootstrap: f.surfBoot, Delta: f.delta, LawDelta: f.lawDelta, IsoWindow: f.isoWindow, Seed: f.seed})
	if err != nil {
		return err
	}
	ratios, err := lossRatios(fits, pts, f.ratioAt)
	if err != nil {
		return err
	}
	byNoise := map[string]*scaling.NoiseFit{}
	for _, nf := range fits {
		byNoise[nf.Noise] = nf
	}
	if f.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(byNoise); err != nil {
			return err
		}
	} else {
		printRuns(w, runs, f.loss)
		printFit(w, fits, ratios)
	}
	if f.out == "" {
		return nil
	}
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return fmt.Errorf("fit: %w", err)
	}
	type runRow struct {
		scaling.Point
		Curve *scaling.Curve `json:"loss_curve,omitempty"`
	}
	var rows []runRow
	for _, r := range runs {
		rows = append(rows, runRow{r.Point, r.Curve})
	}
	b, _ := json.MarshalIndent(struct {
		Runs   []runRow                     `json:"runs,omitempty"`
		Fits   map[string]*scaling.NoiseFit `json:"fits"`
		Ratios []ratioRow                   `json:"uniform_over_masked,omitempty"`
	}{rows, byNoise, ratios}, "", "  ")
	if err := os.WriteFile(filepath.Join(f.out, "fit.json"), b, 0o644); err != nil {
		return fmt.Errorf("fit: %w", err)
	}
	return fitPlots(f.out, fits, runs)
}

type ratioRow struct {
	C     float64 `json:"C"`
	Ratio float64 `json:"ratio,omitempty"` // of the fitted laws L*(C)
	// Of the two iso-FLOP optima at this budget, when both have one: the
	// loss L*_u/L*_m, the size M*_u/M*_m and the tokens D*_u/D*_m.
	Optima  float64 `json:"optima_ratio,omitempty"`
	MRatio  float64 `json:"M_ratio,omitempty"`
	DRatio  float64 `json:"D_ratio,omitempty"`
	Optimum bool    `json:"-"`
}

// lossRatios compares uniform with masked noise: L*_uniform(C)/L*_masked(C)
// of the fitted laws at the given budgets (or the budgets of the data), and
// at each budget where both iso-FLOP curves have an optimum the ratios of
// their losses, sizes and tokens.
func lossRatios(fits []*scaling.NoiseFit, pts []scaling.Point, at string) ([]ratioRow, error) {
	var u, m *scaling.NoiseFit
	for _, nf := range fits {
		switch nf.Noise {
		case "uniform":
			u = nf
		case "masked":
			m = nf
		}
	}
	if u == nil || m == nil {
		return nil, nil
	}
	var out []ratioRow
	if at == "" {
		for _, gu := range u.Groups {
			for _, gm := range m.Groups {
				if gu.Optimum != nil && gm.Optimum != nil && scaling.FormatFLOPs(gu.C) == scaling.FormatFLOPs(gm.C) {
					ou, om := gu.Optimum, gm.Optimum
					r := ratioRow{C: gu.C, Optima: ou.Loss / om.Loss, MRatio: ou.M / om.M, DRatio: ou.D / om.D, Optimum: true}
					if u.LOpt != nil && m.LOpt != nil {
						r.Ratio = scaling.Ratio(*u.LOpt, *m.LOpt, gu.C)
					}
					out = append(out, r)
				}
			}
		}
	}
	if u.LOpt == nil || m.LOpt == nil {
		return out, nil
	}
	var cs []float64
	if at != "" {
		var err error
		if cs, err = scaling.ParseFLOPs(at); err != nil {
			return nil, fmt.Errorf("--ratio-at: %w", err)
		}
	} else {
		seen := map[string]bool{}
		for _, r := range out {
			seen[scaling.FormatFLOPs(r.C)] = true
		}
		for _, p := range pts {
			if k := scaling.FormatFLOPs(p.C); !seen[k] {
				seen[k] = true
				cs = append(cs, p.C)
			}
		}
	}
	for _, c := range cs {
		out = append(out, ratioRow{C: c, Ratio: scaling.Ratio(*u.LOpt, *m.LOpt, c)})
	}
	slices.SortFunc(out, func(a, b ratioRow) int { return cmp.Compare(a.C, b.C) })
	return out, nil
}

// printRuns lists the runs read from directories with their loss-curve fits.
func printRuns(w io.Writer, runs []sweep.Result, loss string) {
	if len(runs) == 0 {
		return
	}
	src := "final EMA ELBO"
	if loss == sweep.LossVal {
		src = "held-out ELBO of the final checkpoint"
	}
	fmt.Fprintf(w, "Runs (loss: %s; curve: L(S) = C + B·S^−b from the end of warmup)\n", src)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run	M	D	C	loss	curve")
	for _, r := range runs {
		curve := "-"
		if c := r.Curve; c != nil {
			curve = fmt.Sprintf("%.4f + %.4g·S^−%.3f", c.C, c.B, c.Exp)
		}
		p := r.Point
		fmt.Fprintf(tw, "%s\t%.3g\t%.3g\t%.3g\t%.4f\t%s\n", p.Name, p.M, p.D, p.C, p.Loss, curve)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func printFit(w io.Writer, fits []*scaling.NoiseFit, ratios []ratioRow) {
	law := func(l *scaling.Law) string {
		if l == nil {
			return "-"
		}
		return fmt.Sprintf("%.4g·C^%.4f [%.4f, %.4f]", l.A, l.Exp, l.Lo, l.Hi)
	}
	fmt.Fprintln(w, "Iso-FLOP optima (runs: best per size and budget)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "noise\tC\tsizes\tM*\tD*\tL*\t")
	for _, nf := range fits {
		for _, g := range nf.Groups {
			if o := g.Optimum; o != nil {
				out := ""
				if o.Outside {
					out = "outside the sizes fitted"
				}
				sizes := strconv.Itoa(len(g.Points))
				if n := len(g.FittedPoints()); n < len(g.Points) {
					sizes = fmt.Sprintf("%d of %d", n, len(g.Points))
				}
				fmt.Fprintf(tw, "%s\t%.3g\t%s\t%.4g\t%.4g\t%.4f\t%s\n", nf.Noise, g.C, sizes, o.M, o.D, o.Loss, out)
			}
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nCompute-optimal laws y = A·C^exp, 95% bootstrap interval of exp (paper masked: M* 0.566, D* 0.434, L* −0.0496; uniform: 0.589, 0.411, −0.0522)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "noise\truns\tM*\tD*\tL*\tresamples")
	for _, nf := range fits {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\n", nf.Noise, nf.Runs, law(nf.MOpt), law(nf.DOpt), law(nf.LOpt), nf.Resamples)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nLoss surface L(M, D) = a·M^−α + b·D^−β + E (paper masked: 222, 0.292, 1.92e3, 0.367, 2.17)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "noise\ta\tα\tb\tβ\tE\tβ/(α+β)")
	for _, nf := range fits {
		if s := nf.Surface; s != nil {
			iv := func(lo, hi float64) string {
				if s.Resamples == 0 {
					return ""
				}
				return fmt.Sprintf(" [%.4f, %.4f]", lo, hi)
			}
			fmt.Fprintf(tw, "%s\t%.4g\t%.4f%s\t%.4g\t%.4f%s\t%.4f\t%.4f\n", nf.Noise, s.A, s.Alpha, iv(s.AlphaLo, s.AlphaHi), s.B, s.Beta, iv(s.BetaLo, s.BetaHi), s.E, s.MExp)
		}
	}
	tw.Flush()
	if len(ratios) > 0 {
		fmt.Fprintln(w, "\nUniform/masked at equal compute (§9.7): L*_u/L*_m of the fitted laws; of the iso-FLOP optima, L*_u/L*_m, M*_u/M*_m, D*_u/D*_m")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "C\tlaws L*\toptima L*\tM*\tD*")
		for _, r := range ratios {
			law, opt := "-", "-\t-\t-"
			if r.Ratio != 0 {
				law = fmt.Sprintf("%.4f (%+.2f%%)", r.Ratio, 100*(r.Ratio-1))
			}
			if r.Optimum {
				opt = fmt.Sprintf("%.4f (%+.2f%%)\t%.3g\t%.3g", r.Optima, 100*(r.Optima-1), r.MRatio, r.DRatio)
			}
			fmt.Fprintf(tw, "%.3g\t%s\t%s\n", r.C, law, opt)
		}
		tw.Flush()
	}
	for _, nf := range fits {
		for _, n := range nf.Notes {
			fmt.Fprintf(w, "note %s: %s\n", nf.Noise, n)
		}
	}
}

// fitPlots draws the loss curves, the iso-FLOP curves and the laws in C.
func fitPlots(out string, fits []*scaling.NoiseFit, runs []sweep.Result) error {
	w, h := 1000*vg.Inch/96, 650*vg.Inch/96
	if len(runs) > 0 {
		p := logPlot("Loss vs step (EMA ELBO)", "step", "ELBO (nats/token)", true, false)
		for i, r := range runs {
			xy := make(plotter.XYs, 0, len(r.Steps))
			for j, s := range r.Steps {
				xy = append(xy, plotter.XY{X: s, Y: r.EMA[j]})
			}
			l, err := plotter.NewLine(xy)
			if err != nil {
				return fmt.Errorf("fit plot: %w", err)
			}
			l.Color = plotutil.Color(i)
			p.Add(l)
			if len(runs) <= 16 {
				p.Legend.Add(r.Point.Name, l)
			}
		}
		if err := savePNG(p, w, h, filepath.Join(out, "loss_vs_step.png")); err != nil {
			return err
		}
	}
	for _, nf := range fits {
		p := logPlot("Iso-FLOP curves, "+nf.Noise, "M (FLOPs/token)", "loss (nats/token)", true, false)
		for i, g := range nf.Groups {
			var xy plotter.XYs
			for _, pt := range g.Points {
				xy = append(xy, plotter.XY{X: pt.M, Y: pt.Loss})
			}
			s, err := plotter.NewScatter(xy)
			if err != nil {
				return fmt.Errorf("fit plot: %w", err)
			}
			s.Color = plotutil.Color(i)
			p.Add(s)
			p.Legend.Add("C="+scaling.FormatFLOPs(g.C), s)
			if g.Parabola != nil {
				fp := g.FittedPoints()
				lo, hi := math.Log(fp[0].M), math.Log(fp[len(fp)-1].M)
				var line plotter.XYs
				for k := range 41 {
					x := lo + (hi-lo)*float64(k)/40
					line = append(line, plotter.XY{X: math.Exp(x), Y: math.Exp(g.Parabola[0]*x*x + g.Parabola[1]*x + g.Parabola[2])})
				}
				l, _ := plotter.NewLine(line)
				l.Color = plotutil.Color(i)
				p.Add(l)
				o, _ := plotter.NewScatter(plotter.XYs{{X: g.Optimum.M, Y: g.Optimum.Loss}})
				o.Color, o.Shape, o.Radius = plotutil.Color(i), plotutil.Shape(1), vg.Points(5)
				p.Add(o)
			}
		}
		if err := savePNG(p, w, h, filepath.Join(out, "isoflop_"+nf.Noise+".png")); err != nil {
			return err
		}
	}
	for _, q := range []struct {
		file, title string
		law         func(*scaling.NoiseFit) *scaling.Law
		val         func(scaling.Optimum) float64
	}{
		{"L_opt.png", "L*(C)", func(n *scaling.NoiseFit) *scaling.Law { return n.LOpt }, func(o scaling.Optimum) float64 { return o.Loss }},
		{"M_opt.png", "M*(C)", func(n *scaling.NoiseFit) *scaling.Law { return n.MOpt }, func(o scaling.Optimum) float64 { return o.M }},
		{"D_opt.png", "D*(C)", func(n *scaling.NoiseFit) *scaling.Law { return n.DOpt }, func(o scaling.Optimum) float64 { return o.D }},
	} {
		// Losses span less than a decade: a linear axis keeps its labels.
		p := logPlot(q.title+" with fitted power laws", "C (FLOPs)", q.title, true, q.file != "L_opt.png")
		drawn := false
		for i, nf := range fits {
			var xy plotter.XYs
			for _, g := range nf.Groups {
				if g.Optimum != nil {
					xy = append(xy, plotter.XY{X: g.C, Y: q.val(*g.Optimum)})
				}
			}
			if len(xy) == 0 {
				continue
			}
			s, _ := plotter.NewScatter(xy)
			s.Color = plotutil.Color(i)
			p.Add(s)
			label := nf.Noise
			if l := q.law(nf); l != nil {
				lo, hi := xy[0].X/2, xy[len(xy)-1].X*2
				line := plotter.XYs{{X: lo, Y: l.At(lo)}, {X: hi, Y: l.At(hi)}}
				ln, _ := plotter.NewLine(line)
				ln.Color = plotutil.Color(i)
				p.Add(ln)
				label += fmt.Sprintf(" %.3g·C^%.4f", l.A, l.Exp)
			}
			p.Legend.Add(label, s)
			drawn = true
		}
		if !drawn {
			continue
		}
		if err := savePNG(p, w, h, filepath.Join(out, q.file)); err != nil {
			return err
		}
	}
	return nil
}

func logPlot(title, x, y string, logX, logY bool) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	if logX {
		p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	}
	if logY {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	}
	return p
}
