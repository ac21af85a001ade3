package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/difftrain/difftrain/cluster"
)

// peersFile, in the run directory, lists the gossip addresses of the last
// ring this node trained in. A node restarted on the same run directory
// looks for them before it starts a run of its own.
const peersFile = "peers.json"

// shardDir is the directory this node reads shards from and serves them
// out of: the dataset itself, or the cache a remote source fills.
func (n *Node) shardDir() string {
	d, o := n.opt.Data, &n.opt
	switch {
	case d.URL == "" && d.Peer == "" && d.Dir != "":
		return d.Dir
	case d.CacheDir != "":
		return d.CacheDir
	case d.Dir != "":
		return d.Dir
	case o.RunDir != "":
		return filepath.Join(o.RunDir, "cache")
	}
	return ""
}

// announceDelay holds back every shard announcement; tests set it to widen
// the window in which a member serves the run's configuration but has not
// yet announced its shards.
var announceDelay time.Duration

// announceShards tells the cluster once this node holds the whole dataset,
// so that joiners may stream it from here (any member, not only the seed).
func (n *Node) announceShards() {
	if n.flight == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.stopServe = cancel
	go func() {
		if err := n.src.Ready(ctx); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(announceDelay):
		}
		n.cl.SetData("shards")
	}()
}

// rejoinAddrs are the gossip addresses a starting seed tries: its --peer
// list and the peers of the last ring it trained in.
func (n *Node) rejoinAddrs() []string {
	addrs := slices.Clone(n.opt.Rejoin)
	if n.opt.RunDir != "" && n.opt.Resume != "never" { // --resume never starts over
		if b, err := os.ReadFile(filepath.Join(n.opt.RunDir, peersFile)); err == nil {
			var last []string
			if json.Unmarshal(b, &last) == nil && len(last) <= 1024 {
				addrs = append(addrs, last...)
			}
		}
	}
	self := n.cl.GossipAddr()
	addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == "" || a == self })
	slices.Sort(addrs)
	return slices.Compact(addrs)
}

// findRunningRing reports whether a ring is training among the rejoin
// addresses: then this node must join it, not start from its checkpoint.
// It looks for a few seconds; nobody answering means there is no run.
func (n *Node) findRunningRing(ctx context.Context) bool {
	addrs := n.rejoinAddrs()
	if len(addrs) == 0 {
		return false
	}
	deadline := time.Now().Add(n.opt.RejoinWait)
	for joined := false; time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
		if !joined {
			joined = n.cl.Probe(addrs) > 0
			if joined {
				n.log.Info("found cluster members", "peers", addrs)
			}
		}
		if !joined {
			continue
		}
		if _, done := n.cl.RunDone(); done {
			return true // startJoiner says so and exits cleanly
		}
		for _, m := range n.cl.Members() {
			if m.Name != n.cl.Name() && m.Gen > 0 && m.State == cluster.StateTraining {
				return true
			}
		}
	}
	return false
}

// startJoiner adopts the running ring's configuration before this node is
// admitted: a conflicting explicit flag is refused here, and the trainer and
// data are ready before the ring waits on this node.
func (n *Node) startJoiner(ctx context.Context) error {
	o := &n.opt
	jctx, cancel := context.WithTimeout(ctx, max(o.Cluster.JoinTimeout, 10*time.Second))
	defer cancel()
	rc, err := n.learnRunConfig(jctx)
	if err != nil {
		return err
	}
	if err := rc.Conflicts(o.Explicit); err != nil {
		return err
	}
	o.adoptRing(rc.Ring)
	n.cl.SetLimits(rc.Ring.MinNodes, rc.Ring.MaxNodes)
	n.cfg = rc.Train
	if err := n.build(ctx); err != nil {
		return err
	}
	n.runSrv.set(RunConfig{Train: n.cfg, Ring: o.ringSettings()})
	n.log.Info("adopted the run's configuration", "config", n.cfg.Hash(), "codec", o.Codec,
		"checksum_every", o.ChecksumEvery, "min_nodes", o.Cluster.MinNodes, "max_nodes", o.Cluster.MaxNodes)
	n.cl.SetReady()
	return nil
}

// writePeers records the gossip addresses of gen's other members.
func (n *Node) writePeers(gen cluster.Generation) {
	if n.opt.RunDir == "" {
		return
	}
	var addrs []string
	for _, m := range n.cl.Members() {
		if m.Name != n.cl.Name() && gen.Has(m.Name) && m.Gossip != "" {
			addrs = append(addrs, m.Gossip)
		}
	}
	b, _ := json.Marshal(addrs)
	path := filepath.Join(n.opt.RunDir, peersFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		err = os.Rename(tmp, path)
		if err != nil {
			n.log.Debug("peers file", "err", err)
		}
	}
}

// doneEarly reports whether err says the run was completed without this
// node: it then exits cleanly, saying so.
func (n *Node) doneEarly(err error) bool {
	var rd *runDoneError
	if errors.As(err, &rd) || errors.Is(err, cluster.ErrRunDone) {
		if !n.late {
			who, _ := n.cl.RunDone()
			n.log.Info("the run is complete without this node: exiting", "step", n.step, "announced_by", who)
		}
		n.late = true
		return true
	}
	return false
}

// maxStepRetries caps the attempts of one step on this node: a member that
// cannot complete a step in any ring stops with the last error instead of
// stalling the ring's retries forever.
const maxStepRetries = 20

func retryError(step int64, tries int, err error) error {
	return fmt.Errorf("step %d failed %d times in a row on this node; giving up (last error: %w)", step, tries, err)
}
