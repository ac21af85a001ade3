package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/term"

	"github.com/difftrain/difftrain/cluster"
)

// observer publishes what the node does: Prometheus metrics and health on
// HTTP, RUN_DIR/metrics.jsonl, a progress bar or periodic log lines, and the
// status `trainer status` shows.
type observer struct {
	opt     *Options
	log     *slog.Logger
	http    *http.Server
	records *RecordWriter
	ready   atomic.Bool
	bar     bool
	steps   int
	last    Record
	began   time.Time

	gStep, loss, elbo, tps, lr, gen, members prometheus.Gauge
	stepTime                                 *prometheus.GaugeVec
	wire, ckptStall, transfer                prometheus.Gauge
	steps_, retries                          prometheus.Counter
	ckm                                      *ckptMetrics // ckptmetrics.go
}

func newObserver(o *Options, cl *cluster.Cluster) (*observer, error) {
	ob := &observer{opt: o, log: slog.Default(), began: time.Now()}
	reg := prometheus.NewRegistry()
	g := func(name, help string) prometheus.Gauge {
		x := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "difftrain", Name: name, Help: help})
		reg.MustRegister(x)
		return x
	}
	ob.gStep = g("step", "Training steps completed.")
	ob.loss = g("loss", "Training objective of the last step.")
	ob.elbo = g("elbo", "Training ELBO of the last step, nats per noised token.")
	ob.tps = g("tokens_per_second", "Tokens per second of the whole ring in the last step.")
	ob.lr = g("learning_rate", "Base learning rate times the schedule in the last step.")
	ob.gen = g("generation", "Ring generation this node trains in.")
	ob.members = g("members", "Members of the ring.")
	ob.wire = g("allreduce_wire_bytes", "Allreduce bytes this node sent in the last step.")
	ob.ckptStall = g("checkpoint_stall_seconds", "Step-loop stall of the last checkpoint save.")
	ob.transfer = g("state_transfer_seconds", "Time of the last state transfer to this node.")
	ob.stepTime = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "difftrain", Name: "step_seconds",
		Help: "Time of the last step by phase: data, compute, comm, total."}, []string{"phase"})
	reg.MustRegister(ob.stepTime)
	ob.steps_ = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "difftrain", Name: "steps_total", Help: "Steps completed by this process."})
	ob.retries = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "difftrain", Name: "step_retries_total", Help: "Step attempts aborted by a failure and redone."})
	ob.ckm = newCkptMetrics(reg)
	reg.MustRegister(ob.steps_, ob.retries, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))

	if o.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !ob.ready.Load() {
				http.Error(w, "not in a training ring yet", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
		})
		lis, err := net.Listen("tcp", o.MetricsAddr)
		if err != nil {
			return nil, fmt.Errorf("metrics listen %s: %w", o.MetricsAddr, err)
		}
		ob.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := ob.http.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				ob.log.Error("metrics server", "err", err)
			}
		}()
		ob.log.Info("serving metrics", "addr", lis.Addr().String())
	}
	if o.RunDir != "" {
		w, err := CreateRecords(filepath.Join(o.RunDir, "metrics.jsonl"))
		if err != nil {
			return nil, err
		}
		ob.records = w
	}
	switch o.Progress {
	case "bar":
		ob.bar = true
	case "auto", "":
		ob.bar = term.IsTerminal(int(os.Stderr.Fd()))
	}
	return ob, nil
}

func (ob *observer) generation(g cluster.Generation) {
	ob.ready.Store(true)
	ob.gen.Set(float64(g.ID))
	ob.members.Set(float64(len(g.Ring)))
}

func (ob *observer) stateTransfer(d time.Duration) { ob.transfer.Set(d.Seconds()) }
func (ob *observer) checkpoint(d time.Duration)    { ob.ckptStall.Set(d.Seconds()) }

// step publishes a completed step.
func (ob *observer) step(r Record, cl *cluster.Cluster, total int) {
	ob.gStep.Set(float64(r.Step))
	ob.loss.Set(r.Loss)
	ob.elbo.Set(r.Elbo)
	ob.tps.Set(r.TokensPerS)
	ob.lr.Set(r.LR)
	ob.wire.Set(float64(r.WireBytes))
	ob.stepTime.WithLabelValues("data").Set(r.DataS)
	ob.stepTime.WithLabelValues("compute").Set(r.ComputeS)
	ob.stepTime.WithLabelValues("comm").Set(r.CommS)
	ob.stepTime.WithLabelValues("total").Set(r.StepS)
	ob.steps_.Inc()
	ob.retries.Add(float64(r.Retries))
	if ob.records != nil {
		if err := ob.records.Write(r); err != nil {
			ob.log.Warn("metrics file", "err", err)
		}
	}
	cl.SetStatus(cluster.StatusInfo{Step: uint64(r.Step), Loss: r.Loss, TokensPerSec: r.TokensPerS})
	ob.last = r
	ob.steps++
	switch {
	case ob.bar:
		ob.drawBar(r, total)
	case ob.opt.Progress == "none":
	case ob.opt.LogEvery > 0 && (r.Step%int64(ob.opt.LogEvery) == 0 || r.Step == 1):
		ob.log.Info("step", "step", r.Step, "loss", fmt.Sprintf("%.4f", r.Loss), "elbo", fmt.Sprintf("%.4f", r.Elbo),
			"tokens_per_s", int(r.TokensPerS), "members", r.Members, "gen", r.Generation, "lr", fmt.Sprintf("%.3g", r.LR))
	}
}

// drawBar redraws a one-line progress display on stderr.
func (ob *observer) drawBar(r Record, total int) {
	const width = 24
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(r.Step)/float64(total))
	}
	done := int(frac * width)
	bar := strings.Repeat("█", done) + strings.Repeat("·", width-done)
	fmt.Fprintf(os.Stderr, "\r%s step %d/%d  loss %.4f  elbo %.4f  %6.0f tok/s  members %d  gen %d ",
		bar, r.Step, total, r.Loss, r.Elbo, r.TokensPerS, r.Members, r.Generation)
}

func (ob *observer) done() {
	if ob.bar && ob.steps > 0 {
		fmt.Fprintln(os.Stderr)
	}
	r := ob.last
	ob.log.Info("training finished", "step", r.Step, "loss", fmt.Sprintf("%.4f", r.Loss), "elbo", fmt.Sprintf("%.4f", r.Elbo),
		"seconds", int(time.Since(ob.began).Seconds()))
}

func (ob *observer) close() {
	ob.ready.Store(false)
	if ob.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ob.http.Shutdown(ctx)
		cancel()
	}
	if ob.records != nil {
		ob.records.Close()
	}
}
