package node

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	testSteps = 60
	testBatch = 12
)

var (
	refOnce sync.Once
	refLoss map[int64]float64
)

// reference is the uninterrupted single-process run.
func reference(t *testing.T) map[int64]float64 {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process node test") // as start does; before refOnce, so it stays usable
	}
	refOnce.Do(func() {
		p := start(t, childSpec{Name: "ref", Data: testData(t), RunDir: filepath.Join(t.TempDir(), "ref"),
			Steps: testSteps, Batch: testBatch, MinNodes: 1})
		p.wait(t, 2*time.Minute)
		refLoss = losses(p.records(t))
	})
	if len(refLoss) != testSteps {
		t.Fatalf("reference run logged %d steps, want %d", len(refLoss), testSteps)
	}
	return refLoss
}

// cluster3 starts a seed and two joiners (names n0 < n1 < n2, so n0 is the
// coordinator) that form their first ring together.
func cluster3(t *testing.T, minNodes int) []*proc {
	t.Helper()
	dir := t.TempDir()
	seed := start(t, childSpec{Name: "n0", Data: testData(t), RunDir: filepath.Join(dir, "n0"),
		Steps: testSteps, Batch: testBatch, MinNodes: minNodes, ChecksumEvery: 10, CheckpointEvery: 20})
	ps := []*proc{seed}
	for _, name := range []string{"n1", "n2"} {
		ps = append(ps, start(t, childSpec{Name: name, Join: true, Seeds: []string{seed.spec.Gossip}, RunDir: filepath.Join(dir, name),
			Steps: testSteps, Batch: testBatch, MinNodes: minNodes, ChecksumEvery: 10, CheckpointEvery: 20}))
	}
	return ps
}

func dirs(ps []*proc) []string {
	var d []string
	for _, p := range ps {
		d = append(d, p.spec.RunDir)
	}
	return d
}

func TestThreeNodesMatchOneProcess(t *testing.T) {
	ref := reference(t)
	ps := cluster3(t, 3)
	for _, p := range ps {
		p.wait(t, 2*time.Minute)
	}
	for _, p := range ps {
		recs := p.records(t)
		if len(recs) == 0 || recs[len(recs)-1].Step != testSteps || recs[len(recs)-1].Members != 3 {
			t.Fatalf("%s: last record %+v, want step %d with 3 members", p.spec.Name, recs[len(recs)-1], testSteps)
		}
		compareLosses(t, losses(recs), ref, 1, 1e-4)
	}
	checkExactlyOnce(t, sampleRanges(t, dirs(ps)...), testSteps, testBatch)
	// Weight checksums were compared every 10 steps; a mismatch stops the run.
	b, _ := os.ReadFile(filepath.Join(ps[0].spec.RunDir, "node.log"))
	if strings.Contains(string(b), "checksums differ") {
		t.Fatal("weight checksums differed")
	}
}

// killAt kills node victim with SIGKILL once the coordinator passes step, and
// returns how long the survivors took to complete a step in a new ring.
func killAt(t *testing.T, ps []*proc, victim int, step int64) time.Duration {
	t.Helper()
	watch := ps[0]
	if victim == 0 {
		watch = ps[1]
	}
	watch.waitStep(t, step, time.Minute)
	killed := time.Now()
	ps[victim].cmd.Process.Signal(syscall.SIGKILL)
	deadline := killed.Add(15 * time.Second)
	for time.Now().Before(deadline) {
		recs := watch.records(t)
		if len(recs) > 0 {
			last := recs[len(recs)-1]
			if last.Members == 2 && last.Time.After(killed) {
				return last.Time.Sub(killed)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("survivors did not complete a step in a new ring within 15s of the kill")
	return 0
}

func testKill(t *testing.T, victim int) {
	ref := reference(t)
	ps := cluster3(t, 2)
	d := killAt(t, ps, victim, 20)
	t.Logf("kill -9 of %s at step 20: first step of the new ring after %v", ps[victim].spec.Name, d.Round(time.Millisecond))
	var survivors []*proc
	for i, p := range ps {
		if i != victim {
			survivors = append(survivors, p)
			p.wait(t, 2*time.Minute)
		}
	}
	for _, p := range survivors {
		recs := p.records(t)
		if recs[len(recs)-1].Step != testSteps {
			t.Fatalf("%s stopped at step %d", p.spec.Name, recs[len(recs)-1].Step)
		}
		compareLosses(t, losses(recs), ref, 1, 1e-4)
	}
	checkExactlyOnce(t, sampleRanges(t, dirs(ps)...), testSteps, testBatch)
}

func TestKillNonCoordinator(t *testing.T) { testKill(t, 2) }
func TestKillCoordinator(t *testing.T)    { testKill(t, 0) }

func TestJoinMidRun(t *testing.T) {
	ref := reference(t)
	dir := t.TempDir()
	seed := start(t, childSpec{Name: "n0", Data: testData(t), RunDir: filepath.Join(dir, "n0"),
		Steps: testSteps, Batch: testBatch, MinNodes: 1, ChecksumEvery: 5})
	seed.waitStep(t, 30, time.Minute)
	j := start(t, childSpec{Name: "n1", Join: true, Seeds: []string{seed.spec.Gossip}, RunDir: filepath.Join(dir, "n1"),
		Steps: testSteps, Batch: testBatch, MinNodes: 1, ChecksumEvery: 5})
	seed.wait(t, 2*time.Minute)
	j.wait(t, 2*time.Minute)
	recs := j.records(t)
	if len(recs) == 0 || recs[0].Step <= 30 {
		t.Fatalf("joiner's first step %v, want one after step 30", recs)
	}
	b, _ := os.ReadFile(filepath.Join(j.spec.RunDir, "node.log"))
	if !strings.Contains(string(b), "took state from the ring") {
		t.Fatal("joiner did not log a verified state transfer")
	}
	compareLosses(t, losses(recs), ref, recs[0].Step, 1e-4)
	compareLosses(t, losses(seed.records(t)), ref, 1, 1e-4)
	checkExactlyOnce(t, sampleRanges(t, seed.spec.RunDir, j.spec.RunDir), testSteps, testBatch)
}
