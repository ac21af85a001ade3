package node

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

// psgdStart is the first step the PowerSGD test ring compresses: records 1
// to psgdStart+1 (the loss of record s is taken before update s) are those
// of plain sums.
const psgdStart = 5

// TestPowerSGDKillAndJoin: a ring of three trains with codec powersgd (rank
// 2, compressing from step psgdStart), one member is killed with SIGKILL at
// step 20 and a fresh one joins near step 35. The run goes on to the last
// step; the weight checksums are compared across the ring after every step
// (a mismatch stops the run); every step's loss is the same on every member
// that logged it; every sample is trained once; the plain steps match the
// single-process run of codec none; and the compressed steps put fewer bytes
// on the wire than the plain ones.
func TestPowerSGDKillAndJoin(t *testing.T) {
	ref := reference(t)
	dir := t.TempDir()
	spec := func(name string, join bool, seeds []string) childSpec {
		s := childSpec{Name: name, Join: join, Seeds: seeds, RunDir: filepath.Join(dir, name),
			Steps: testSteps, Batch: testBatch, MinNodes: 2, Codec: "powersgd", PowerSGDRank: 2, PowerSGDStart: psgdStart,
			ChecksumEvery: 1, CheckpointEvery: 20}
		if !join {
			s.Data = testData(t)
		}
		return s
	}
	seed := start(t, spec("n0", false, nil))
	ps := []*proc{seed,
		start(t, spec("n1", true, []string{seed.spec.Gossip})),
		start(t, spec("n2", true, []string{seed.spec.Gossip}))}
	d := killAt(t, ps, 2, 20)
	t.Logf("kill -9 of n2 at step 20: first step of the new ring after %v", d.Round(time.Millisecond))
	seed.waitStep(t, 35, time.Minute)
	j := start(t, spec("n3", true, []string{seed.spec.Gossip}))
	finishers := []*proc{ps[0], ps[1], j}
	for _, p := range finishers {
		p.wait(t, 2*time.Minute)
	}

	byStep := map[int64]float64{}
	joined := false
	for _, p := range finishers {
		recs := p.records(t)
		if len(recs) == 0 || recs[len(recs)-1].Step != testSteps {
			t.Fatalf("%s: records %v, want the last at step %d", p.spec.Name, recs, testSteps)
		}
		for _, r := range recs {
			if l, ok := byStep[r.Step]; ok && l != r.Loss {
				t.Errorf("step %d: %s logged loss %v, another member %v", r.Step, p.spec.Name, r.Loss, l)
			}
			byStep[r.Step] = r.Loss
			joined = joined || (p == j && r.Members == 3)
		}
		b, err := os.ReadFile(filepath.Join(p.spec.RunDir, "node.log"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "checksums differ") {
			t.Errorf("%s: weight checksums differed", p.spec.Name)
		}
	}
	if !joined {
		t.Error("the joiner never trained in a ring of three")
	}
	b, _ := os.ReadFile(filepath.Join(j.spec.RunDir, "node.log"))
	if !strings.Contains(string(b), "took state from the ring") {
		t.Error("the joiner did not log a verified state transfer")
	}
	checkExactlyOnce(t, sampleRanges(t, dirs(append(ps, j))...), testSteps, testBatch)

	// The plain steps are the plain sum's; the compressed ones put fewer
	// bytes on the wire, and the loss still falls.
	plain := map[int64]float64{}
	for s := int64(1); s <= psgdStart+1; s++ {
		plain[s] = ref[s]
	}
	recs := seed.records(t)
	compareLosses(t, losses(recs), plain, 1, 1e-4)
	// A ring member sends 2(W-1)/W times what it reduces.
	plainWire, psgdWire := math.Inf(1), 0.0
	for _, r := range recs {
		if r.Members < 2 {
			continue
		}
		w := float64(r.WireBytes) * float64(r.Members) / float64(2*(r.Members-1))
		if r.Step <= psgdStart {
			plainWire = min(plainWire, w)
		} else {
			psgdWire = max(psgdWire, w)
		}
	}
	if math.IsInf(plainWire, 1) || psgdWire == 0 || 2*psgdWire > plainWire {
		t.Errorf("bytes reduced per step: at least %.0f plain, at most %.0f with PowerSGD; want less than half", plainWire, psgdWire)
	}
	if first, last := recs[0].Loss, recs[len(recs)-1].Loss; !(last < first) {
		t.Errorf("loss went from %v to %v", first, last)
	}
}

// --powersgd-start is a ring setting: a joiner that gives another value is
// refused, and a value below -1 is refused before anything is created.
// --powersgd-embeddings is one too.
func TestPowerSGDStartIsARingSetting(t *testing.T) {
	rc := RunConfig{Train: train.Default(model.Default(260, 2, 32, 2, 32)),
		Ring: RingSettings{Codec: "powersgd", PowerSGDRank: 4, PowerSGDStart: -1}}
	if err := rc.Conflicts(map[string]string{"powersgd-start": "-1", "powersgd-rank": "4"}); err != nil {
		t.Error(err)
	}
	err := rc.Conflicts(map[string]string{"powersgd-start": "100"})
	if want := "--powersgd-start=100 (the run has -1)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
	// So is --powersgd-embeddings, and a joiner adopts the run's.
	err = rc.Conflicts(map[string]string{"powersgd-embeddings": "true"})
	if want := "--powersgd-embeddings=true (the run has false)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
	var o Options
	o.adoptRing(RingSettings{Codec: "powersgd", PowerSGDEmbeddings: true})
	if !o.PowerSGDEmbeddings || !o.ringSettings().PowerSGDEmbeddings {
		t.Error("a joiner did not adopt the run's --powersgd-embeddings")
	}
	runDir := filepath.Join(t.TempDir(), "run")
	err = runAlone(t, runDir, 10, func(o *Options) { o.Codec, o.PowerSGDStart = "powersgd", -2 })
	if err == nil || !strings.Contains(err.Error(), "--powersgd-start -2") {
		t.Errorf("got %v, want an error naming --powersgd-start -2", err)
	}
}
