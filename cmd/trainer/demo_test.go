package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/difftrain/difftrain/node"
)

// TestDemo runs `make demo`'s script in a short mode (few steps, a small
// slice of the corpus) and checks what a first-time user sees: three
// members trained together, the loss fell, a checkpoint was written, a
// sample was printed, and no process was left behind.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trainer and runs three processes")
	}
	repo, _ := filepath.Abs("../..")
	dir := t.TempDir()
	bin := trainerBin(t)
	demo := filepath.Join(dir, "demo")
	cmd := exec.Command("bash", "scripts/demo.sh")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "DEMO_DIR="+demo, "DEMO_STEPS=40", "DEMO_MB=2", "DEMO_PORT=37940", "TRAINER="+bin)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("demo took %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, tail(string(out), 3000))
	}
	recs, err := node.ReadRecordsFile(filepath.Join(demo, "node0"))
	if err != nil {
		t.Fatal(err)
	}
	members := 0
	for _, r := range recs {
		members = max(members, r.Members)
	}
	if members != 3 {
		t.Errorf("at most %d members trained together, want 3", members)
	}
	if n := len(recs); n < 20 || mean(recs[n-10:]) >= mean(recs[:5]) {
		t.Errorf("the ELBO did not fall: first steps %.3f, last %.3f", mean(recs[:5]), mean(recs[len(recs)-10:]))
	}
	if m, _ := filepath.Glob(filepath.Join(demo, "node0", "checkpoints", "step-*")); len(m) == 0 {
		t.Error("no checkpoint")
	}
	s := string(out)
	i := strings.Index(s, "== sample from the final checkpoint")
	if i < 0 || !strings.Contains(s[i:], "func main() {") {
		t.Errorf("no sample printed:\n%s", tail(s, 2000))
	}
	// No trainer process of this demo survives it.
	ps, _ := exec.Command("pgrep", "-f", bin).Output()
	if len(strings.TrimSpace(string(ps))) > 0 {
		t.Errorf("processes left behind: %s", ps)
	}
}

func mean(rs []node.Record) float64 {
	s := 0.0
	for _, r := range rs {
		s += r.Elbo
	}
	return s / float64(len(rs))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
