package cuda

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

func losses(t *testing.T, b compute.Backend, steps int) []float64 {
	t.Helper()
	c := train.Default(model.Default(64, 2, 32, 2, 16))
	c.Steps, c.Warmup, c.Batch, c.MicroBatch, c.LR, c.Seed = steps, 2, 4, 4, 0.1, 3
	tr, err := train.New(b, c)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	src := dataset.Random{Seq: 16, Vocabulary: 64}
	var out []float64
	for s := 0; s < steps; s++ {
		r, err := tr.Step(context.Background(), src, int64(s), 0, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.Metrics.Summary(tr.Divisor()).Loss)
	}
	return out
}

// TestTrainingMatchesCPU trains a tiny model for 50 steps (3 on the CPU
// emulator of the driver, which is slow) on the CUDA backend in fp32 and on
// the CPU backend: every loss agrees within 1e-4 relative.
func TestTrainingMatchesCPU(t *testing.T) {
	g := newGPU(t, FP32)
	steps := 50
	if strings.Contains(g.Info().Name, "emulator") {
		steps = 3
	}
	want := losses(t, newCPU(t), steps)
	got := losses(t, g, steps)
	for i := range want {
		if d := math.Abs(got[i]-want[i]) / math.Abs(want[i]); d > 1e-4 {
			t.Errorf("step %d: loss %.8g on CUDA, %.8g on the CPU (rel %.2g)", i+1, got[i], want[i], d)
		}
	}
	t.Logf("%d steps on %s: final loss %.6g (CPU %.6g)", steps, g.Info().Name, got[steps-1], want[steps-1])
}
