package node

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/compute/cpu"
	"github.com/difftrain/difftrain/dataset"
)

// runAlone runs one node in this process, a ring of itself on 127.0.0.1,
// with the test's data and tinyRun, after edit changes its options. It
// returns Run's error; the run directory is o.RunDir.
func runAlone(t *testing.T, runDir string, steps int, edit func(o *Options)) error {
	t.Helper()
	return runNodeIn(t, runDir, steps, "solo", nil, edit)
}

// runNodeIn runs one node in this process; with seeds it joins them.
func runNodeIn(t *testing.T, runDir string, steps int, name string, seeds []string, edit func(o *Options)) error {
	t.Helper()
	b, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Error(err)
		return err
	}
	defer b.Close()
	gossip := freeAddr(t)
	host, port, _ := net.SplitHostPort(gossip)
	p, _ := strconv.Atoi(port)
	grpcAddr := freeAddr(t)
	o := Options{
		Train: tinyRun(steps, 4), Backend: b, Data: dataset.Options{Dir: testData(t)},
		CheckpointDir: filepath.Join(runDir, "checkpoints"), CheckpointEvery: 2, Keep: -1,
		RunDir: runDir, GRPCListen: grpcAddr, Progress: "none",
		Cluster: cluster.Config{Name: name, BindAddr: host, BindPort: p, GRPCAddr: grpcAddr, Seeds: seeds,
			MinNodes: 1, JoinTimeout: 10 * time.Second, Timing: cluster.FastTiming(), Data: testData(t)},
		AllreduceTimeout: 3 * time.Second,
	}
	o.Join = len(seeds) > 0
	if edit != nil {
		edit(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return Run(ctx, o)
}

// TestJoinerWaitsForShardAnnouncement is the CI failure of
// TestThreeNodesMatchOneProcess: a joiner without data learned the run's
// configuration from the seed before the seed's shard announcement reached
// it, and exited at once with "no dataset". The seed announces its shards
// only once they are all in place, after it serves the configuration; the
// joiner now waits for the announcement.
func TestJoinerWaitsForShardAnnouncement(t *testing.T) {
	announceDelay = 2 * time.Second
	t.Cleanup(func() { announceDelay = 0 })
	dir := t.TempDir()
	gossip := make(chan string, 1)
	seedErr := make(chan error, 1)
	go func() {
		seedErr <- runNodeIn(t, filepath.Join(dir, "n0"), 10, "n0", nil, func(o *Options) {
			o.Cluster.MinNodes = 2
			gossip <- net.JoinHostPort(o.Cluster.BindAddr, strconv.Itoa(o.Cluster.BindPort))
		})
	}()
	err := runNodeIn(t, filepath.Join(dir, "n1"), 10, "n1", []string{<-gossip}, func(o *Options) {
		o.Data.Dir, o.Cluster.Data = "", ""
		o.Data.CacheDir = filepath.Join(dir, "n1", "cache")
	})
	if err != nil {
		t.Fatalf("joiner: %v", err)
	}
	if err := <-seedErr; err != nil {
		t.Fatalf("seed: %v", err)
	}
	recs, err := ReadRecordsFile(filepath.Join(dir, "n1", "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || recs[len(recs)-1].Step != 10 || recs[len(recs)-1].Members != 2 {
		t.Fatalf("joiner's records end with %+v, want step 10 with 2 members", recs[max(0, len(recs)-1):])
	}
}
