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

// reference runs the same training in one undisturbed process.
func reference(t *testing.T, bin, data string, steps int) map[int64]float64 {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ref")
	out, err := exec.Command(bin, "train", "--data", data, "--run-dir", dir, "--layers", "2", "--dim", "32", "--heads", "2",
		"--batch", "12", "--warmup", "5", "--lr", "0.1", "--seed", "11", "--steps", strconv.Itoa(steps),
		"--bind", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--metrics-addr", "", "--threads", "1", "--progress", "none",
		"--checkpoint-every", "0").CombinedOutput()
	if err != nil {
		t.Fatalf("reference run: %v\n%s", err, out)
	}
	recs, err := node.ReadRecordsFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int64]float64{}
	for _, r := range recs {
		m[r.Step] = r.Loss
	}
	return m
}

func runChaos(t *testing.T, events int, d time.Duration, seed uint64) {
	bin, data := build(t)
	dir := t.TempDir()
	evs, err := Run(context.Background(), Options{Bin: bin, Data: data, Dir: dir, Events: events, Duration: d,
		Seed: seed, Conflict: 0.3, Log: testLog{t}})
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
	ref := reference(t, bin, data, int(min(first+1, 200)))
	res := Check(dir, 12, ref, first+1, 1e-4)
	t.Logf("checked %d steps, %d records, %d compared with the undisturbed run", res.Steps, res.Records, res.Compared)
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
	runChaos(t, 4, 20*time.Second, 3)
}

// TestChaosLong is scripts/chaos.sh's run: CHAOS_EVENTS events over
// CHAOS_MINUTES minutes.
func TestChaosLong(t *testing.T) {
	ev, _ := strconv.Atoi(os.Getenv("CHAOS_EVENTS"))
	min, _ := strconv.Atoi(os.Getenv("CHAOS_MINUTES"))
	if ev == 0 || min == 0 {
		t.Skip("set CHAOS_EVENTS and CHAOS_MINUTES (scripts/chaos.sh)")
	}
	seed, _ := strconv.ParseUint(os.Getenv("CHAOS_SEED"), 10, 64)
	runChaos(t, ev, time.Duration(min)*time.Minute, seed)
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
