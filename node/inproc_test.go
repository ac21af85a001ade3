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
