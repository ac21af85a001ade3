package node

import (
	"errors"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/difftrain/difftrain/checkpoint"
)

// blowUp makes the loss go NaN at step 2, as the zeroed config of a --config
// file once did: without beta2 and epsilon, a parameter whose gradient is 0
// gets the update 0/0.
func blowUp(o *Options) { o.Train.Beta2, o.Train.AdamEps = 0, 0 }

// A run whose loss goes NaN stops with an error naming the step, keeps the
// step's record (NaN as null) in metrics.jsonl, and leaves no checkpoint of
// non-finite weights. Before, the run exited 0, dropped the NaN records and
// saved a NaN checkpoint.
func TestNaNLossStopsTheRun(t *testing.T) {
	dir := t.TempDir()
	err := runAlone(t, dir, 20, blowUp)
	var be *badStepError
	if !errors.As(err, &be) {
		t.Fatalf("Run returned %v, want a non-finite step error", err)
	}
	if !strings.Contains(err.Error(), "step ") || be.nf.Step < 1 {
		t.Fatalf("error does not name the step: %v", err)
	}
	recs, rerr := ReadRecordsFile(dir)
	if rerr != nil {
		t.Fatal(rerr)
	}
	last := recs[len(recs)-1]
	if last.Step != be.nf.Step || !last.Skipped || finiteOrZero(last.Loss) && finiteOrZero(last.Elbo) {
		t.Fatalf("last record %+v, want step %d with the non-finite values", last, be.nf.Step)
	}
	checkFiniteCheckpoints(t, filepath.Join(dir, "checkpoints"))
}

// With --max-bad-steps k, k non-finite steps are skipped (not applied,
// recorded as skipped) and the next one stops the run.
func TestMaxBadStepsSkipsThenStops(t *testing.T) {
	dir := t.TempDir()
	err := runAlone(t, dir, 40, func(o *Options) { blowUp(o); o.MaxBadSteps, o.CheckpointEvery = 2, 0 })
	var be *badStepError
	if !errors.As(err, &be) || be.skipped != 2 {
		t.Fatalf("Run returned %v, want a stop after 2 skipped steps", err)
	}
	recs, rerr := ReadRecordsFile(dir)
	if rerr != nil {
		t.Fatal(rerr)
	}
	skipped := 0
	for _, r := range recs {
		if r.Skipped {
			skipped++
		}
	}
	if skipped != 3 || recs[len(recs)-1].Step != be.nf.Step {
		t.Fatalf("%d skipped records (want 2 skipped and the stopping one), last step %d, error at %d", skipped, recs[len(recs)-1].Step, be.nf.Step)
	}
	checkFiniteCheckpoints(t, filepath.Join(dir, "checkpoints"))
}

// Weights that went non-finite (here through an update with finite loss
// and gradient) are never checkpointed: the save is refused and the run
// stops saying why.
func TestNonFiniteWeightsAreNeverSaved(t *testing.T) {
	dir := t.TempDir()
	err := runAlone(t, dir, 40, func(o *Options) { blowUp(o); o.MaxBadSteps = 5 })
	if err == nil || !strings.Contains(err.Error(), "checkpoint at step 2 refused") {
		t.Fatalf("Run returned %v, want the step 2 checkpoint refused", err)
	}
	checkFiniteCheckpoints(t, filepath.Join(dir, "checkpoints"))
}

func finiteOrZero(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// checkFiniteCheckpoints fails t if a checkpoint in dir holds a non-finite
// weight or moment.
func checkFiniteCheckpoints(t *testing.T, dir string) {
	t.Helper()
	cps, err := checkpoint.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cps {
		st, err := checkpoint.Load(c.Path)
		if err != nil {
			t.Fatal(err)
		}
		if err := finiteState(st); err != nil {
			t.Errorf("checkpoint %s: %v", c.Path, err)
		}
	}
}

// Two members decide alike from the ring's sums: both skip the same steps
// and both stop at the same one.
func TestRingSkipsAlike(t *testing.T) {
	dir := t.TempDir()
	seedGossip := make(chan string, 1)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var seeds []string
			if i == 1 {
				seeds = []string{<-seedGossip}
			}
			errs[i] = runNodeIn(t, filepath.Join(dir, name), 40, name, seeds, func(o *Options) {
				blowUp(o)
				o.MaxBadSteps, o.CheckpointEvery, o.Cluster.MinNodes = 2, 0, 2
				if i == 0 {
					seedGossip <- net.JoinHostPort(o.Cluster.BindAddr, strconv.Itoa(o.Cluster.BindPort))
				}
			})
		}()
	}
	wg.Wait()
	var steps [2]int64
	for i, err := range errs {
		var be *badStepError
		if !errors.As(err, &be) || be.skipped != 2 {
			t.Fatalf("member %d returned %v, want a stop after 2 skipped steps", i, err)
		}
		steps[i] = be.nf.Step
	}
	if steps[0] != steps[1] {
		t.Fatalf("members stopped at steps %d and %d", steps[0], steps[1])
	}
	// The joiner trains with the seed's configuration and writes it too.
	var cfgs [2][]byte
	for i, name := range []string{"a", "b"} {
		b, err := os.ReadFile(filepath.Join(dir, name, EffectiveConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		cfgs[i] = b
	}
	if string(cfgs[0]) != string(cfgs[1]) {
		t.Errorf("members wrote different configs:\n%s\n%s", cfgs[0], cfgs[1])
	}
	for _, name := range []string{"a", "b"} {
		recs, err := ReadRecordsFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var skipped []int64
		for _, r := range recs {
			if r.Skipped {
				skipped = append(skipped, r.Step)
			}
		}
		if len(skipped) != 3 || skipped[2] != steps[0] {
			t.Errorf("member %s recorded skipped steps %v, want 3 ending at %d", name, skipped, steps[0])
		}
	}
}
