package train

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/difftrain/difftrain/diffusion"
)

// poisonSync is a one-member GradSync that spoils what the ring would
// return: the summed loss, one summed gradient, or nothing.
type poisonSync struct {
	grads   []float32
	nanLoss bool
	infGrad bool
}

func (p *poisonSync) Start(_ context.Context, _ int64, g []float32) error { p.grads = g; return nil }
func (p *poisonSync) Ready(lo, hi int)                                    {}
func (p *poisonSync) Wait(local diffusion.Metrics) (diffusion.Metrics, error) {
	if p.infGrad {
		p.grads[len(p.grads)/2] = float32(math.Inf(1))
	}
	if p.nanLoss {
		local.Loss = math.NaN()
	}
	return local, nil
}

// A step whose ring loss or summed gradient is not finite returns a
// *NonFiniteError naming the update and leaves weights and moments exactly
// as they were; the next healthy step applies normally.
func TestNonFiniteStepIsNotApplied(t *testing.T) {
	c := tinyCfg("masked")
	src := textLike(16, 32)
	for _, tc := range []struct {
		name string
		sync *poisonSync
	}{
		{"nan loss", &poisonSync{nanLoss: true}},
		{"inf gradient", &poisonSync{infGrad: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := New(newCPU(t), c)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			for s := int64(0); s < 2; s++ {
				if _, err := tr.Step(context.Background(), src, s, 0, 1, &poisonSync{}); err != nil {
					t.Fatal(err)
				}
			}
			var before, after State
			if err := tr.Snapshot(&before); err != nil {
				t.Fatal(err)
			}
			_, err = tr.Step(context.Background(), src, 2, 0, 1, tc.sync)
			var nf *NonFiniteError
			if !errors.As(err, &nf) {
				t.Fatalf("step with %s: err %v, want a *NonFiniteError", tc.name, err)
			}
			if nf.Step != 3 {
				t.Errorf("error names step %d, want 3 (the third update): %v", nf.Step, err)
			}
			if err := tr.Snapshot(&after); err != nil {
				t.Fatal(err)
			}
			for _, p := range []struct {
				name string
				a, b []float32
			}{{"params", before.Params, after.Params}, {"m", before.M, after.M}, {"v", before.V, after.V}} {
				if !slices.Equal(p.a, p.b) {
					t.Errorf("%s changed by a refused step", p.name)
				}
			}
			if _, err := tr.Step(context.Background(), src, 3, 0, 1, &poisonSync{}); err != nil {
				t.Fatalf("healthy step after a refused one: %v", err)
			}
		})
	}
}

// NaN weights give a NaN loss on every step, without any GradSync.
func TestNaNWeightsAreRefused(t *testing.T) {
	c := tinyCfg("masked")
	tr, err := New(newCPU(t), c)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var s State
	if err := tr.Snapshot(&s); err != nil {
		t.Fatal(err)
	}
	for i := range s.Params {
		s.Params[i] = float32(math.NaN())
	}
	if err := tr.Restore(&s); err != nil {
		t.Fatal(err)
	}
	_, err = tr.Step(context.Background(), textLike(16, 32), 0, 0, 1, nil)
	var nf *NonFiniteError
	if !errors.As(err, &nf) || !math.IsNaN(nf.Loss) {
		t.Fatalf("step on NaN weights: err %v, want a *NonFiniteError with a NaN loss", err)
	}
}
