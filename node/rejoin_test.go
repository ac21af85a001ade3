package node

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

func TestRunConfigConflicts(t *testing.T) {
	rc := RunConfig{Train: train.Default(model.Default(260, 2, 32, 2, 32)),
		Ring: RingSettings{Codec: "none", BucketBytes: 25 << 20, ChecksumEvery: 50, MinNodes: 2}}
	for _, tc := range []struct {
		flags map[string]string
		want  string // "" for no conflict
	}{
		{nil, ""},
		{map[string]string{"codec": "none", "bucket-mb": "25", "checksum-every": "50", "log-every": "3"}, ""},
		{map[string]string{"codec": "int8"}, "--codec=int8 (the run has none)"},
		{map[string]string{"checksum-every": "7"}, "--checksum-every=7 (the run has 50)"},
		{map[string]string{"bucket-mb": "4"}, "--bucket-mb=4 (the run has 25)"},
		{map[string]string{"min-nodes": "1", "layers": "4"}, "--layers=4 (the run has 2), --min-nodes=1 (the run has 2)"},
		{map[string]string{"lr": "0.5000"}, ""},
	} {
		err := rc.Conflicts(tc.flags)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.flags, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v, want %q", tc.flags, err, tc.want)
		}
	}
}

func TestDecodeRunConfigRefusesGarbage(t *testing.T) {
	good, _ := json.Marshal(RunConfig{Train: tinyRun(10, 4), Ring: RingSettings{Codec: "none", MinNodes: 1}})
	if _, err := decodeRunConfig(good); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{nil, []byte("{"), []byte(`{"train":{}}`), []byte(`{"train":` + string(good[9:len(good)-1]) + `,"ring":{"min_nodes":-1}}`)} {
		if _, err := decodeRunConfig(b); err == nil {
			t.Errorf("%q accepted", b)
		}
	}
}

func FuzzRunConfig(f *testing.F) {
	good, _ := json.Marshal(RunConfig{Train: tinyRun(10, 4), Ring: RingSettings{Codec: "none", MinNodes: 1}})
	f.Add(good)
	f.Add([]byte(`{"ring":{"bucket_bytes":-1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := decodeRunConfig(b)
		if err == nil {
			if err := rc.Train.Validate(); err != nil {
				t.Fatalf("accepted an invalid config: %v", err)
			}
		}
	})
}

// TestConflictingJoinerRefused is the reported failure: a joiner with
// --codec int8 on a --codec none ring was admitted and every step failed.
// Now it is refused before admission, naming the field and both values, and
// a joiner that only differs in flags it did not give adopts the ring's.
func TestConflictingJoinerRefused(t *testing.T) {
	dir := t.TempDir()
	seed := start(t, childSpec{Name: "n0", Data: testData(t), RunDir: filepath.Join(dir, "n0"),
		Steps: testSteps, Batch: testBatch, MinNodes: 1, ChecksumEvery: 10})
	seed.waitStep(t, 5, time.Minute)
	bad := start(t, childSpec{Name: "n1", Join: true, Seeds: []string{seed.spec.Gossip}, RunDir: filepath.Join(dir, "n1"),
		Steps: testSteps, Batch: testBatch, Codec: "int8", Explicit: map[string]string{"codec": "int8"}})
	select {
	case err := <-bad.done:
		if err == nil {
			t.Fatal("conflicting joiner exited 0")
		}
	case <-time.After(time.Minute):
		t.Fatal("conflicting joiner still running")
	}
	b, _ := os.ReadFile(filepath.Join(bad.spec.RunDir, "node.log"))
	if !strings.Contains(string(b), "--codec=int8 (the run has none)") {
		t.Fatalf("joiner's error does not name the conflict:\n%s", tail(string(b), 2000))
	}
	// Not given explicitly: adopted (a different --checksum-every once
	// stopped the run with a false "replicas have diverged").
	good := start(t, childSpec{Name: "n2", Join: true, Seeds: []string{seed.spec.Gossip}, RunDir: filepath.Join(dir, "n2"),
		Steps: testSteps, Batch: testBatch, Codec: "int8", ChecksumEvery: 3})
	seed.wait(t, 2*time.Minute)
	good.wait(t, 2*time.Minute)
	// One admission (n2's) interrupts one step; the refused joiner none.
	retries := 0
	for _, r := range seed.records(t) {
		retries += r.Retries
	}
	if retries > 1 {
		t.Errorf("%d step attempts failed, want at most 1 (the admission of n2)", retries)
	}
	if recs := good.records(t); len(recs) == 0 || recs[len(recs)-1].Step != testSteps || recs[len(recs)-1].Members != 2 {
		t.Fatalf("adopting joiner's records end with %+v", recs[len(recs)-1:])
	}
	checkExactlyOnce(t, sampleRanges(t, seed.spec.RunDir, good.spec.RunDir), testSteps, testBatch)
}

// TestRestartedSeedRejoins is the reported failure: a killed seed restarted
// on its old address (as Kubernetes restarts pod 0), without --data, never
// got back in. Now it finds the ring through the last ring's members
// (RUN_DIR/peers.json), joins it instead of resuming its older checkpoint,
// streams the shards from a member, and the run ends with every sample of
// every step trained exactly once.
func TestRestartedSeedRejoins(t *testing.T) {
	ref := reference(t)
	ps := cluster3(t, 2)
	killAt(t, ps, 0, 20)
	ps[0].reap(t)
	s := ps[0].spec
	s.Data = ""
	again := start(t, s)
	for _, p := range append(ps[1:], again) {
		p.wait(t, 2*time.Minute)
	}
	b, _ := os.ReadFile(filepath.Join(s.RunDir, "node.log"))
	for _, want := range []string{"a ring is running: joining it", "took state from the ring"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("restarted seed's log lacks %q", want)
		}
	}
	recs := again.records(t)
	if last := recs[len(recs)-1]; last.Step != testSteps || last.Members != 3 {
		t.Errorf("restarted seed's last record %+v, want step %d with 3 members", last, testSteps)
	}
	compareLosses(t, losses(ps[1].records(t)), ref, 1, 1e-4)
	checkExactlyOnce(t, sampleRanges(t, dirs(append(ps, again))...), testSteps, testBatch)
}

// TestRestartedJoinerRejoins: a joiner killed and restarted with
// `join --seed <a survivor>`, twice, gets back in each time.
func TestRestartedJoinerRejoins(t *testing.T) {
	ref := reference(t)
	ps := cluster3(t, 2)
	all := append([]*proc{}, ps...)
	victim := ps[2]
	for i, at := range []int64{15, 35} {
		ps[0].waitStep(t, at, time.Minute)
		victim.cmd.Process.Signal(syscall.SIGKILL)
		victim.reap(t)
		s := victim.spec
		s.Seeds = []string{ps[1].spec.Gossip} // a survivor, not the seed
		victim = start(t, s)
		all = append(all, victim)
		if i == 0 {
			victim.waitStep(t, at+3, time.Minute)
		}
	}
	for _, p := range []*proc{ps[0], ps[1], victim} {
		p.wait(t, 2*time.Minute)
	}
	compareLosses(t, losses(ps[0].records(t)), ref, 1, 1e-4)
	checkExactlyOnce(t, sampleRanges(t, dirs(all)...), testSteps, testBatch)
}

// reap waits for a killed process to be gone.
func (p *proc) reap(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit after SIGKILL", p.spec.Name)
	}
}
