package node

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/difftrain/difftrain/checkpoint"
)

// waitCheckpoint waits until dir holds a complete checkpoint of step.
func waitCheckpoint(t *testing.T, dir string, step int64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(dir, checkpoint.StepDir(step), checkpoint.ManifestFile)); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no checkpoint of step %d in %s within %v", step, dir, d)
}

func finalWeights(t *testing.T, runDir string, step int64) []checkpoint.Tensor {
	t.Helper()
	st, err := checkpoint.Load(filepath.Join(runDir, "checkpoints", checkpoint.StepDir(step)))
	if err != nil {
		t.Fatal(err)
	}
	return st.Model
}

// Train 40 steps; separately train, kill -9 after the step-20 checkpoint and
// resume: every logged loss and the final weights are bitwise identical.
func TestKillAndResumeIsBitwise(t *testing.T) {
	const steps, batch = 40, 8
	dir := t.TempDir()
	a := start(t, childSpec{Name: "a", Data: testData(t), RunDir: filepath.Join(dir, "a"), Steps: steps, Batch: batch, MinNodes: 1, CheckpointEvery: 20})
	a.wait(t, 2*time.Minute)
	want := a.records(t)

	bdir := filepath.Join(dir, "b")
	b := start(t, childSpec{Name: "b", Data: testData(t), RunDir: bdir, Steps: steps, Batch: batch, MinNodes: 1, CheckpointEvery: 5})
	waitCheckpoint(t, filepath.Join(bdir, "checkpoints"), 20, time.Minute)
	b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
	killedAt := b.records(t)
	b2 := start(t, childSpec{Name: "b", Data: testData(t), RunDir: bdir, Steps: steps, Batch: batch, MinNodes: 1, CheckpointEvery: 5, Resume: "auto"})
	b2.wait(t, 2*time.Minute)
	if log, _ := os.ReadFile(filepath.Join(bdir, "node.log")); !strings.Contains(string(log), "INFO resumed ") {
		t.Fatal("the restarted node did not resume from its checkpoint")
	}
	got := b2.records(t) // the file holds both lives; later lines win
	t.Logf("killed after step %d; resumed", killedAt[len(killedAt)-1].Step)
	byStep := map[int64]Record{}
	for _, r := range got {
		byStep[r.Step] = r
	}
	for _, w := range want {
		g, ok := byStep[w.Step]
		if !ok {
			t.Fatalf("step %d missing after the resume", w.Step)
		}
		if math.Float64bits(g.Loss) != math.Float64bits(w.Loss) || math.Float64bits(g.Elbo) != math.Float64bits(w.Elbo) {
			t.Errorf("step %d: loss %v elbo %v, uninterrupted %v %v", w.Step, g.Loss, g.Elbo, w.Loss, w.Elbo)
		}
	}
	wa, wb := finalWeights(t, filepath.Join(dir, "a"), steps), finalWeights(t, bdir, steps)
	for i := range wa {
		for j := range wa[i].Data {
			if math.Float32bits(wa[i].Data[j]) != math.Float32bits(wb[i].Data[j]) {
				t.Fatalf("final weights differ at %s[%d]", wa[i].Name, j)
			}
		}
	}
}

// Two nodes train and are killed after the step-20 checkpoint; three nodes
// resume from it. The loss curve matches the uninterrupted run.
func TestResumeWithMoreNodes(t *testing.T) {
	ref := reference(t)
	dir := t.TempDir()
	seedDir := filepath.Join(dir, "n0")
	seed := start(t, childSpec{Name: "n0", Data: testData(t), RunDir: seedDir, Steps: testSteps, Batch: testBatch, MinNodes: 2, CheckpointEvery: 10})
	j := start(t, childSpec{Name: "n1", Join: true, Seeds: []string{seed.spec.Gossip}, RunDir: filepath.Join(dir, "n1"), Steps: testSteps, Batch: testBatch, MinNodes: 2})
	waitCheckpoint(t, filepath.Join(seedDir, "checkpoints"), 20, time.Minute)
	seed.cmd.Process.Signal(syscall.SIGKILL)
	j.cmd.Process.Signal(syscall.SIGKILL)
	<-seed.done
	<-j.done
	seed2 := start(t, childSpec{Name: "n0", Data: testData(t), RunDir: seedDir, Steps: testSteps, Batch: testBatch, MinNodes: 3, CheckpointEvery: 10, Resume: "auto"})
	var ps []*proc
	for _, name := range []string{"n1", "n2"} {
		ps = append(ps, start(t, childSpec{Name: name, Join: true, Seeds: []string{seed2.spec.Gossip}, RunDir: filepath.Join(dir, name+"b"), Steps: testSteps, Batch: testBatch, MinNodes: 3}))
	}
	seed2.wait(t, 2*time.Minute)
	for _, p := range ps {
		p.wait(t, 2*time.Minute)
	}
	if b, _ := os.ReadFile(filepath.Join(seedDir, "node.log")); !strings.Contains(string(b), "INFO resumed ") {
		t.Fatal("the restarted seed did not resume from its checkpoint")
	}
	recs := seed2.records(t)
	last := recs[len(recs)-1]
	if last.Step != testSteps || last.Members != 3 {
		t.Fatalf("last record %+v, want step %d with 3 members", last, testSteps)
	}
	compareLosses(t, losses(recs), ref, 1, 1e-4)
}
