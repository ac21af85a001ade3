package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/compute/cpu"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

// The node tests run real processes: the test binary re-executes itself as a
// node when childEnv holds a childSpec, so `kill -9` and state transfer go
// through real sockets on 127.0.0.1.
const childEnv = "DIFFTRAIN_NODE_TEST_CHILD"

type childSpec struct {
	Name            string
	Join            bool
	Seeds           []string
	Data            string
	RunDir          string
	Gossip, GRPC    string
	Steps, Batch    int
	MinNodes        int
	Codec           string
	PowerSGDRank    int // with Codec powersgd
	PowerSGDStart   int
	CheckpointEvery int
	ChecksumEvery   int
	Resume          string
	Explicit        map[string]string // flags "given on the command line"
	Rejoin          []string          // a seed's --peer list
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// tinyRun is the training configuration every node test uses.
func tinyRun(steps, batch int) train.Config {
	c := train.Default(model.Default(260, 2, 32, 2, 32))
	c.Steps, c.Warmup, c.Batch, c.MicroBatch, c.LR, c.Seed = steps, 5, batch, batch, 0.1, 11
	return c
}

func runChild(raw string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	b, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	host, port, _ := net.SplitHostPort(s.Gossip)
	p, _ := strconv.Atoi(port)
	timing := cluster.FastTiming()
	o := Options{
		Join: s.Join, Train: tinyRun(s.Steps, s.Batch), Backend: b,
		Data:          dataset.Options{Dir: s.Data},
		CheckpointDir: filepath.Join(s.RunDir, "checkpoints"), CheckpointEvery: s.CheckpointEvery, Keep: 2,
		Resume: s.Resume, RunDir: s.RunDir, GRPCListen: s.GRPC,
		Cluster: cluster.Config{Name: s.Name, BindAddr: host, BindPort: p, GRPCAddr: s.GRPC, Seeds: s.Seeds,
			MinNodes: s.MinNodes, JoinTimeout: 30 * time.Second, Timing: timing, Data: s.Data},
		Codec: s.Codec, PowerSGDRank: s.PowerSGDRank, PowerSGDStart: s.PowerSGDStart, AllreduceTimeout: 3 * time.Second, ChecksumEvery: s.ChecksumEvery,
		Progress: "log", LogEvery: 10, SampleLog: filepath.Join(s.RunDir, "samples.log"),
		Explicit: s.Explicit, Rejoin: s.Rejoin, RejoinWait: 3 * time.Second,
	}
	if s.Join {
		o.Data.Dir = ""
		o.Data.CacheDir = filepath.Join(s.RunDir, "cache")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
		return 1
	}
	return 0
}

// testData prepares a small byte-level dataset once per test binary.
var (
	dataOnce sync.Once
	dataDir  string
	dataErr  error
)

func testData(t *testing.T) string {
	t.Helper()
	dataOnce.Do(func() {
		dir, err := os.MkdirTemp("", "difftrain-node-data")
		if err != nil {
			dataErr = err
			return
		}
		in := filepath.Join(dir, "in.txt")
		var sb strings.Builder
		for i := 0; sb.Len() < 200<<10; i++ {
			fmt.Fprintf(&sb, "line %d: the quick brown fox jumps over the lazy dog %d times.\n", i, i*7%13)
		}
		if err := os.WriteFile(in, []byte(sb.String()), 0o644); err != nil {
			dataErr = err
			return
		}
		dataDir = filepath.Join(dir, "data")
		_, dataErr = dataset.Prepare(context.Background(), dataset.PrepareOptions{Inputs: []string{in}, Out: dataDir, SeqLen: 32, ValFraction: 0})
	})
	if dataErr != nil {
		t.Fatal(dataErr)
	}
	return dataDir
}

// handedOut holds the ports freeAddr has returned in this test binary.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freeAddr returns an address on 127.0.0.1 whose port is free for both TCP
// and UDP (gossip binds both). It picks below Linux's ephemeral range
// (32768 and up): a port the kernel hands out for ":0" can be taken by any
// outgoing connection between this check and the child's bind, which made
// a child fail with "address already in use" now and then. It never hands
// out a port twice: two draws of the same free port (a node's gossip and
// gRPC ports, or two nodes') made the second bind fail, as in a CI run of
// TestKillCoordinator where the seed's gRPC server held its gossip port.
func freeAddr(t *testing.T) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if handedOut.ports[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		handedOut.ports[port] = true
		return addr
	}
	t.Fatal("no free port for both TCP and UDP in 20000-31999")
	return ""
}

// proc is one node process.
type proc struct {
	spec childSpec
	cmd  *exec.Cmd
	done chan error
	log  *os.File
}

func start(t *testing.T, s childSpec) *proc {
	t.Helper()
	if testing.Short() {
		// The race pass of `make test` runs with -short: race-built node
		// processes are too slow for these timing-bound tests, which the
		// normal pass runs.
		t.Skip("multi-process node test")
	}
	if s.Gossip == "" {
		s.Gossip = freeAddr(t)
	}
	if s.GRPC == "" {
		s.GRPC = freeAddr(t)
	}
	if err := os.MkdirAll(s.RunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(s)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	lf, err := os.Create(filepath.Join(s.RunDir, "node.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{spec: s, cmd: cmd, done: make(chan error, 1), log: lf}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		lf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(lf.Name())
			t.Logf("log of %s:\n%s", s.Name, tail(string(b), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// wait waits for the process to exit successfully.
func (p *proc) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s exited: %v", p.spec.Name, err)
		}
	case <-time.After(d):
		t.Fatalf("%s still running after %v", p.spec.Name, d)
	}
}

// records reads the node's metrics.jsonl.
func (p *proc) records(t *testing.T) []Record {
	t.Helper()
	recs, err := ReadRecordsFile(filepath.Join(p.spec.RunDir, "metrics.jsonl"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return recs
}

// waitStep polls until the node has completed step.
func (p *proc) waitStep(t *testing.T, step int64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if r := p.records(t); len(r) > 0 && r[len(r)-1].Step >= step {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not reach step %d within %v", p.spec.Name, step, d)
}

// losses maps step to loss.
func losses(recs []Record) map[int64]float64 {
	m := map[int64]float64{}
	for _, r := range recs {
		m[r.Step] = r.Loss
	}
	return m
}

// sampleRanges reads every node's sample log: step -> the distinct ranges
// logged for it. Every node logs the whole ring's split, so a step trained
// once yields the same lines everywhere; a step trained twice (in two
// generations) yields overlapping ranges.
func sampleRanges(t *testing.T, dirs ...string) map[int64][][2]int64 {
	t.Helper()
	out := map[int64][][2]int64{}
	seen := map[[4]int64]bool{}
	// A node restarted in its run directory appears once per process:
	// read each directory once, or Orphans counts its records twice and
	// takes a step only it completed for one the whole ring did.
	dirs = slices.Compact(slices.Sorted(slices.Values(dirs)))
	orphan := orphanSteps(t, dirs)
	for _, d := range dirs {
		f, err := os.Open(filepath.Join(d, "samples.log"))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var step, lo, hi, gen, rank int64
			if _, err := fmt.Sscan(sc.Text(), &step, &lo, &hi, &gen, &rank); err != nil {
				t.Fatalf("%s: %q: %v", d, sc.Text(), err)
			}
			if k := [4]int64{step, lo, hi, gen}; !seen[k] && !orphan[[2]int64{step, gen}] {
				seen[k] = true
				out[step] = append(out[step], [2]int64{lo, hi})
			}
		}
		f.Close()
	}
	return out
}

// orphanSteps lists the (sample-log step, generation) pairs of steps that
// only a member killed right after completed (see Orphans).
func orphanSteps(t *testing.T, dirs []string) map[[2]int64]bool {
	t.Helper()
	var nodes [][]Record
	for _, d := range dirs {
		recs, err := ReadRecordsFile(filepath.Join(d, "metrics.jsonl"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		nodes = append(nodes, recs)
	}
	out := map[[2]int64]bool{}
	for k := range Orphans(nodes) {
		out[[2]int64{k.Step - 1, int64(k.Gen)}] = true // the sample log counts steps from 0
	}
	return out
}

// checkExactlyOnce checks that the ranges of each step tile [s·B, (s+1)·B).
func checkExactlyOnce(t *testing.T, ranges map[int64][][2]int64, steps, batch int) {
	t.Helper()
	for s := int64(0); s < int64(steps); s++ {
		seen := make([]int, batch)
		for _, r := range ranges[s] {
			for k := r[0]; k < r[1]; k++ {
				i := k - s*int64(batch)
				if i < 0 || i >= int64(batch) {
					t.Fatalf("step %d: sample %d is outside the step's range", s, k)
				}
				seen[i]++
			}
		}
		for i, c := range seen {
			if c != 1 {
				t.Errorf("step %d: sample %d consumed %d times (ranges %v)", s, s*int64(batch)+int64(i), c, ranges[s])
			}
		}
	}
}

func compareLosses(t *testing.T, got, want map[int64]float64, from int64, tol float64) {
	t.Helper()
	n := 0
	for s, w := range want {
		if s < from {
			continue
		}
		g, ok := got[s]
		if !ok {
			continue
		}
		n++
		if d := abs(g-w) / max(abs(w), 1e-12); d > tol {
			t.Errorf("step %d: loss %.8g, reference %.8g (rel %.2g > %g)", s, g, w, d, tol)
		}
	}
	if n == 0 {
		t.Fatalf("no steps in common with the reference from step %d", from)
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// textSource is the test dataset as an in-process Source.
func textSource(t *testing.T) dataset.Source {
	t.Helper()
	l, err := dataset.Open(context.Background(), dataset.Options{Dir: testData(t), Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestSampleRangesReadsEachDirOnce is the flake CI met in
// TestRestartedJoinerRejoins: the restarted victim's run directory was
// listed once per process, Orphans counted its lone record of a step three
// times, took the step for one its whole three-member ring completed, and
// the survivors' redo of it looked like a second training of its samples.
func TestSampleRangesReadsEachDirOnce(t *testing.T) {
	root := t.TempDir()
	write := func(name string, recs []Record, samples string) string {
		d := filepath.Join(root, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		w, err := CreateRecords(filepath.Join(d, "metrics.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if err := w.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		if err := os.WriteFile(filepath.Join(d, "samples.log"), []byte(samples), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Step 0 (record step 1), batch 6: generation 1 (three members) was
	// completed by the victim only; generation 2 (the pair) redid it.
	victim := write("victim", []Record{{Step: 1, Generation: 1, Members: 3}}, "0 4 6 1 2\n")
	a := write("a", []Record{{Step: 1, Generation: 2, Members: 2}}, "0 0 2 1 0\n0 0 3 2 0\n")
	b := write("b", []Record{{Step: 1, Generation: 2, Members: 2}}, "0 2 4 1 1\n0 3 6 2 1\n")
	got := sampleRanges(t, a, b, victim, victim, victim)
	if want := [][2]int64{{0, 3}, {3, 6}}; !slices.Equal(got[0], want) {
		t.Fatalf("step 0 ranges %v, want %v (generation 1 is an orphan)", got[0], want)
	}
}

// TestFreeAddrNeverRepeats: 1,000 draws from 12,000 ports repeat one with
// near certainty unless freeAddr remembers what it handed out.
func TestFreeAddrNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		a := freeAddr(t)
		if seen[a] {
			t.Fatalf("freeAddr handed out %s twice", a)
		}
		seen[a] = true
	}
}
