package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/difftrain/difftrain/allreduce/netns"
	"github.com/difftrain/difftrain/node"
)

// build makes the trainer binary and a small byte-level dataset.
func build(t *testing.T) (bin, data string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "trainer")
	repo, _ := filepath.Abs("..")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/trainer")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var sb strings.Builder
	for i := 0; sb.Len() < 200<<10; i++ {
		fmt.Fprintf(&sb, "line %d: the quick brown fox jumps over the lazy dog %d times.\n", i, i*7%13)
	}
	in := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(in, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	data = filepath.Join(dir, "data")
	if out, err := exec.Command(bin, "prepare", "--input", in, "--out", data, "--seq-len", "32").CombinedOutput(); err != nil {
		t.Fatalf("prepare: %v\n%s", err, out)
	}
	return bin, data
}

// reference runs the same ring undisturbed (no kills) until it has
// completed steps steps, and returns its losses and ring sizes per step.
func reference(t *testing.T, bin, data string, steps int64) (map[int64]float64, map[int64]int) {
	t.Helper()
	dir := t.TempDir()
	if _, err := Run(context.Background(), Options{Bin: bin, Data: data, Dir: dir, StopAt: steps}); err != nil {
		t.Fatalf("undisturbed run: %v", err)
	}
	recs, err := node.ReadRecordsFile(filepath.Join(dir, "n0"))
	if err != nil {
		t.Fatal(err)
	}
	loss, members := map[int64]float64{}, map[int64]int{}
	for _, r := range recs {
		loss[r.Step], members[r.Step] = r.Loss, r.Members
	}
	return loss, members
}

func runChaos(t *testing.T, events, partitions int, d time.Duration, seed uint64, conflict float64) {
	if partitions > 0 {
		if err := netns.Check(); err != nil {
			t.Skipf("partition events: %v", err)
		}
	}
	bin, data := build(t)
	dir := t.TempDir()
	if d := os.Getenv("CHAOS_DIR"); d != "" { // keep the nodes' files
		dir = d
		os.RemoveAll(dir)
	}
	evs, err := Run(context.Background(), Options{Bin: bin, Data: data, Dir: dir, Events: events, Duration: d,
		Seed: seed, Conflict: conflict, Netns: partitions > 0, Partitions: partitions, Log: testLog{t}})
	for _, e := range evs {
		if e.Conflicting && !e.Refused {
			t.Errorf("conflicting joiner at %v was not refused with a clear error", e.At)
		}
	}
	t.Logf("summary: %s", Summarize(evs))
	if err != nil {
		logs(t, dir)
		t.Fatalf("chaos run stopped: %v", err)
	}
	first := int64(1 << 62)
	if len(evs) > 0 {
		first = evs[0].Step
	}
	ref, refMembers := reference(t, bin, data, min(first+1, 300))
	res := Check(dir, 12, ref, refMembers, first+1, 1e-4)
	t.Logf("checked %d steps, %d records, %d compared with the undisturbed run (1e-4 before the first membership change of either run at step %d, 1e-2 for 100 steps after it, until the first kill), %d steps completed only by a member killed right after (redone by the survivors)",
		res.Steps, res.Records, res.Compared, res.FirstChange, res.Orphans)
	for _, p := range res.Problems {
		t.Error(p)
	}
	if res.Compared == 0 {
		t.Error("no step compared with the undisturbed run")
	}
	if t.Failed() {
		logs(t, dir)
	}
}

// TestChaos is the short chaos run of `make test`.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("runs several trainer processes")
	}
	runChaos(t, 4, 0, 20*time.Second, 3, 1)
}

// TestChaosPartitions is the short chaos run in network namespaces, with
// partitions of a member from the other two between the kills (root only).
func TestChaosPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs several trainer processes in network namespaces")
	}
	runChaos(t, 2, 3, 30*time.Second, 5, 0.5)
}

// TestChaosLong is scripts/chaos.sh's run: CHAOS_EVENTS kill events and
// CHAOS_PARTITIONS partitions (in network namespaces) over CHAOS_MINUTES
// minutes.
func TestChaosLong(t *testing.T) {
	ev, _ := strconv.Atoi(os.Getenv("CHAOS_EVENTS"))
	min, _ := strconv.Atoi(os.Getenv("CHAOS_MINUTES"))
	if ev == 0 || min == 0 {
		t.Skip("set CHAOS_EVENTS and CHAOS_MINUTES (scripts/chaos.sh)")
	}
	parts, _ := strconv.Atoi(os.Getenv("CHAOS_PARTITIONS"))
	seed, _ := strconv.ParseUint(os.Getenv("CHAOS_SEED"), 10, 64)
	runChaos(t, ev, parts, time.Duration(min)*time.Minute, seed, 0.2)
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func logs(t *testing.T, dir string) {
	m, _ := filepath.Glob(filepath.Join(dir, "n*", "node.log"))
	for _, f := range m {
		b, _ := os.ReadFile(f)
		s := string(b)
		if len(s) > 3000 {
			s = s[len(s)-3000:]
		}
		t.Logf("%s:\n%s", f, s)
	}
}

// TestCheckDir checks the node directories of an earlier run kept with
// CHAOS_DIR: CHAOS_CHECK_DIR=dir go test ./chaos -run TestCheckDir.
func TestCheckDir(t *testing.T) {
	dir := os.Getenv("CHAOS_CHECK_DIR")
	if dir == "" {
		t.Skip("set CHAOS_CHECK_DIR")
	}
	res := Check(dir, 12, nil, nil, 0, 0)
	t.Logf("checked %d steps, %d records, %d steps completed only by members killed or cut off right after (redone by the others)", res.Steps, res.Records, res.Orphans)
	for _, p := range res.Problems {
		t.Error(p)
	}
}
