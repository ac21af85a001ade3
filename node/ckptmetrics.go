package node

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ckptMetrics export the health of checkpoint saves, so that a run that has
// not saved for a long time shows on a dashboard and can page someone.
type ckptMetrics struct {
	lastStep, lastTime, consecutive prometheus.Gauge
	failures                        prometheus.Counter
}

func newCkptMetrics(reg prometheus.Registerer) *ckptMetrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "difftrain", Name: name, Help: help})
	}
	m := &ckptMetrics{
		lastStep:    g("last_checkpoint_step", "Step of the newest checkpoint this node saved."),
		lastTime:    g("last_checkpoint_timestamp_seconds", "Unix time of the newest checkpoint this node saved."),
		consecutive: g("checkpoint_consecutive_failures", "Checkpoint saves that failed in a row; the run stops at --checkpoint-max-failures."),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "difftrain", Name: "checkpoint_failures_total",
			Help: "Checkpoint saves that failed."}),
	}
	reg.MustRegister(m.lastStep, m.lastTime, m.consecutive, m.failures)
	return m
}

// done publishes the outcome of a save of step.
func (m *ckptMetrics) done(step int64, err error, consecutive int, saved int64) {
	m.consecutive.Set(float64(consecutive))
	if err != nil {
		m.failures.Inc()
		return
	}
	m.lastStep.Set(float64(saved))
	m.lastTime.Set(float64(time.Now().Unix()))
}
