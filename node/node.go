package node

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/checkpoint"
	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/shard"
	"github.com/difftrain/difftrain/train"
)

// Version is written into checkpoints and gossip metadata.
var Version = "dev"

// statsLen is the length of the per-step statistics vector summed over the
// ring next to the gradients: the diffusion metrics, then 8 checksum bytes
// and their squares (see checksumStats).
const (
	nMetrics = 5
	statsLen = nMetrics + 16
)

// Node is one running worker.
type Node struct {
	opt  Options
	log  *slog.Logger
	cl   *cluster.Cluster
	srv  *grpc.Server
	lis  net.Listener
	dial []grpc.DialOption

	tr      *train.Trainer
	cfg     train.Config
	src     *dataset.Loader
	flight  *shard.FlightServer
	grad    *allreduce.Reducer
	stats   *allreduce.Reducer
	gradT   *allreduce.GRPCTransport
	statsT  *allreduce.GRPCTransport
	states  stateServer
	ckpt    *checkpoint.Writer
	obs     *observer
	step    int64 // steps completed
	ckState checkpoint.State
	hostSt  train.State
	samples *os.File
	rs      runState // ckpt.go: skipped steps, checkpoint health
	runSrv  runServer

	stopServe context.CancelFunc // ends announceShards' wait
	late      bool               // the run completed without this node
}

// Run runs a node until the configured number of steps is done, ctx ends
// (a clean stop: the node checkpoints and leaves) or a fatal error.
func Run(ctx context.Context, opt Options) error {
	if err := opt.Validate(); err != nil {
		return err
	}
	n := &Node{opt: opt, log: slog.Default()}
	defer n.close()
	if err := n.start(ctx); err != nil {
		if n.doneEarly(err) {
			return nil
		}
		return err
	}
	return n.loop(ctx)
}

func (n *Node) start(ctx context.Context) error {
	o := &n.opt
	if o.RunDir != "" {
		if err := os.MkdirAll(o.RunDir, 0o755); err != nil {
			return fmt.Errorf("run dir: %w", err)
		}
	}
	sec := o.Cluster.Security
	n.dial = cluster.DialOptions(sec)
	lis, err := net.Listen("tcp", o.GRPCListen)
	if err != nil {
		return fmt.Errorf("grpc listen %s: %w", o.GRPCListen, err)
	}
	n.lis = lis
	if o.Cluster.GRPCAddr == "" {
		o.Cluster.GRPCAddr = lis.Addr().String()
	}
	sopts := append(allreduce.ServerOptions(), cluster.ServerOptions(sec)...)
	n.srv = grpc.NewServer(sopts...)
	n.gradT = allreduce.NewGRPCService(o.Cluster.GRPCAddr, "Grad", n.dial...)
	n.statsT = allreduce.NewGRPCService(o.Cluster.GRPCAddr, "Stats", n.dial...)
	n.gradT.Register(n.srv)
	n.statsT.Register(n.srv)
	n.states.register(n.srv)
	n.runSrv.register(n.srv)

	// The configuration and starting state: a checkpoint or a fresh start
	// for the seed; a ring member's state for a joiner (fetched later, once
	// a generation names a donor).
	var resume *checkpoint.State
	if !o.Join {
		n.cfg = o.Train
		if o.CheckpointDir != "" {
			resume, err = checkpoint.Resolve(o.CheckpointDir, o.Resume, o.Force, n.log)
			if err != nil {
				return err
			}
		}
		if resume != nil {
			if err := n.adoptCheckpointConfig(resume); err != nil {
				return err
			}
		}
	}
	cc := o.Cluster
	cc.Data = "" // announced once this node holds every shard (announceShards)
	cc.Backend = o.Backend.Name()
	cc.Version = Version
	cc.Logger = n.log
	if resume != nil {
		cc.Step = uint64(resume.Step)
	}
	n.cl, err = cluster.New(cc)
	if err != nil {
		return err
	}
	n.cl.Register(n.srv)
	// Every node serves its shards: its dataset, or the cache it fills
	// from a peer or URL, so the data outlives any one member.
	if dir := n.shardDir(); dir != "" {
		n.flight = shard.RegisterFlight(n.srv, dir)
	}
	go n.srv.Serve(lis)
	n.obs, err = newObserver(o, n.cl)
	if err != nil {
		return err
	}
	if o.SampleLog != "" {
		if n.samples, err = os.OpenFile(o.SampleLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return fmt.Errorf("sample log: %w", err)
		}
	}
	if err := n.cl.Join(ctx); err != nil {
		return err
	}
	if !o.Join && n.findRunningRing(ctx) {
		// A restarted seed: the run went on without it, so its
		// checkpoint is behind. It joins like any other node.
		step := int64(-1)
		if resume != nil {
			step = resume.Step
		}
		n.log.Info("a ring is running: joining it instead of resuming from this node's checkpoint", "checkpoint_step", step)
		o.Join, resume = true, nil
	}
	if o.Join {
		return n.startJoiner(ctx)
	}
	if err := n.build(ctx); err != nil {
		return err
	}
	if resume != nil {
		if err := n.restoreCheckpoint(resume); err != nil {
			return err
		}
	}
	n.runSrv.set(RunConfig{Train: n.cfg, Ring: o.ringSettings()})
	n.cl.SetReady()
	return nil
}

// build makes the trainer, data loader, reducers and checkpoint writer for
// n.cfg.
func (n *Node) build(ctx context.Context) error {
	o := &n.opt
	if err := n.openData(ctx); err != nil {
		return err
	}
	if n.cfg.Model.Vocab == 0 {
		n.cfg.Model.Vocab = n.src.Vocab()
	}
	if n.cfg.Model.SeqLen == 0 {
		n.cfg.Model.SeqLen = n.src.SeqLen()
	}
	if err := n.checkData(); err != nil {
		return err
	}
	tr, err := train.New(o.Backend, n.cfg)
	if err != nil {
		return err
	}
	n.tr = tr
	np := tr.Model.Params.Len()
	arc := allreduce.Config{Codec: o.Codec, BucketBytes: o.BucketBytes, Deadline: o.AllreduceTimeout,
		Checksum: o.AllreduceChecksum, Logger: n.log}
	arc.PowerSGDRank, arc.Seed = o.PowerSGDRank, n.cfg.Seed
	arc.PowerSGDStart = allreduce.PowerSGDStartFor(o.PowerSGDStart, n.cfg.Steps, n.cfg.Warmup)
	arc.Tensors = train.PowerSGDTensors(tr.Model.Tensors, o.PowerSGDEmbeddings)
	if o.Codec == allreduce.CodecPowerSGD && !o.PowerSGDEmbeddings {
		n.log.Info("powersgd sums the embedding and the head uncompressed (--powersgd-embeddings compresses them)",
			"share_of_gradient", fmt.Sprintf("%.1f%%", 100*train.UncompressedShare(tr.Model.Tensors)))
	}
	if n.grad, err = allreduce.New(n.gradT, np, arc); err != nil {
		return err
	}
	if n.stats, err = allreduce.New(n.statsT, statsLen, allreduce.Config{Deadline: o.AllreduceTimeout, Logger: n.log}); err != nil {
		return err
	}
	if o.CheckpointDir != "" {
		n.ckpt, err = checkpoint.NewWriter(o.CheckpointDir, checkpoint.Options{Keep: o.Keep, KeepEvery: o.KeepEvery, Logger: n.log, OnDone: n.ckptDone})
		if err != nil {
			return err
		}
		// Touch the snapshot buffers now, so the first save does not stall
		// the step loop on fresh pages.
		if err := n.fillState(&n.ckState); err == nil {
			if err := n.ckpt.Prepare(&n.ckState); err != nil {
				n.log.Warn("preparing checkpoint buffers", "err", err)
			}
		}
	}
	if err := n.recordConfig(); err != nil {
		return err
	}
	n.log.Info("node ready", "name", n.cl.Name(), "backend", o.Backend.Name(),
		"params", np, "config", n.cfg.Hash(), "batch", n.cfg.Batch, "steps", n.cfg.Steps)
	return nil
}

// openData opens this node's view of the dataset. A node without local data
// streams shards from a ring member.
func (n *Node) openData(ctx context.Context) error {
	o := &n.opt
	d := o.Data
	d.Seed = n.cfg.Seed
	d.PeerDial = n.dial
	if d.Dir == "" && d.URL == "" && d.Peer == "" {
		return n.openFromPeers(ctx, d)
	}
	if (d.URL != "" || d.Peer != "") && d.CacheDir == "" && d.Dir == "" {
		d.CacheDir = n.shardDir()
	}
	src, err := dataset.Open(context.Background(), d)
	if err != nil {
		return err
	}
	n.src = src
	n.announceShards()
	return nil
}

// openFromPeers streams the dataset from the first member that serves it.
// A member announces its shards only once it holds them all, which can come
// after it serves the run's configuration (and by gossip, later still on a
// busy machine), so a joiner waits for the announcement (up to the join
// timeout) instead of giving up on its first look.
func (n *Node) openFromPeers(ctx context.Context, d dataset.Options) error {
	peers := n.dataPeers()
	if len(peers) == 0 && !n.opt.Join {
		return errors.New("no dataset: give --data or --data-url, or join a ring whose members serve one")
	}
	if len(peers) == 0 {
		limit := max(n.opt.Cluster.JoinTimeout, 10*time.Second)
		n.log.Info("waiting for a member that serves the dataset", "up_to", limit)
		wctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		for wait := 50 * time.Millisecond; len(peers) == 0; wait = min(2*wait, time.Second) {
			select {
			case <-wctx.Done():
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("no dataset: give --data or --data-url, or join a ring whose members serve one (none announced its shards within %v)", limit)
			case <-time.After(wait):
			}
			peers = n.dataPeers()
		}
	}
	d.CacheDir = cmp.Or(d.CacheDir, n.shardDir())
	var errs []error
	for _, p := range peers {
		d.Peer = p
		src, err := dataset.Open(context.Background(), d)
		if err == nil {
			n.src = src
			n.announceShards()
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no member served the dataset: %w", errors.Join(errs...))
}

// checkData checks the dataset against the model.
func (n *Node) checkData() error {
	if n.src.SeqLen() != n.cfg.Model.SeqLen {
		return fmt.Errorf("dataset has sequences of %d tokens, the run's model %d (--seq-len)", n.src.SeqLen(), n.cfg.Model.SeqLen)
	}
	if n.src.Vocab() > n.cfg.Model.Vocab {
		return fmt.Errorf("dataset vocabulary %d exceeds the model's %d (--vocab)", n.src.Vocab(), n.cfg.Model.Vocab)
	}
	return nil
}

// dataPeers lists the members that serve shards (they announce it in their
// gossip metadata once they hold every shard), members training in the
// newest generation first. A member gossiping this node's own address is a
// dead earlier incarnation of it and is left out.
func (n *Node) dataPeers() []string {
	self := n.opt.Cluster.GRPCAddr
	var ms []cluster.MemberInfo
	for _, m := range n.cl.Members() {
		if m.Name != n.cl.Name() && m.Data != "" && m.GRPCAddr != "" && m.GRPCAddr != self {
			ms = append(ms, m)
		}
	}
	slices.SortStableFunc(ms, func(a, b cluster.MemberInfo) int { return cmp.Compare(b.Gen, a.Gen) })
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.GRPCAddr
	}
	return out
}

func (n *Node) close() {
	// After a finished run every member leaves at once, so no ring without
	// this one will form: don't wait long for it.
	wait := 10 * time.Second
	if n.tr != nil && n.step >= int64(n.cfg.Steps) {
		wait = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if n.stopServe != nil {
		n.stopServe()
	}
	if n.ckpt != nil {
		if err := n.ckpt.Close(); err != nil {
			n.log.Error("checkpoint writer", "err", err)
		}
	}
	if n.cl != nil {
		if err := n.cl.Close(ctx); err != nil {
			n.log.Warn("leaving the cluster", "err", err)
		}
	}
	if n.gradT != nil {
		n.gradT.Close()
		n.statsT.Close()
	}
	if n.srv != nil {
		n.srv.Stop()
	}
	if n.flight != nil {
		n.flight.Close()
	}
	if n.src != nil {
		n.src.Close()
	}
	if n.tr != nil {
		n.tr.Close()
	}
	if n.obs != nil {
		n.obs.close()
	}
	if n.samples != nil {
		n.samples.Close()
	}
}

// checksumStats writes, for the weights' 64-bit FNV hash, its 8 bytes and
// their squares into dst[0:16]. Summed over the ring, the bytes agree on every
// member exactly when (Σx)² = n·Σx² for each byte; the sums stay below 2^24,
// so float32 adds them exactly.
func checksumStats(params []float32, dst []float32) uint64 {
	h := fnv.New64a()
	buf := make([]byte, 1<<16)
	for len(params) > 0 {
		k := min(len(params), len(buf)/4)
		for i, v := range params[:k] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		h.Write(buf[:4*k])
		params = params[k:]
	}
	sum := h.Sum64()
	for i := 0; i < 8; i++ {
		b := float32(sum >> (8 * i) & 0xff)
		dst[i], dst[8+i] = b, b*b
	}
	return sum
}

// checksumsAgree checks summed checksumStats of world members.
func checksumsAgree(sum []float32, world int) bool {
	for i := 0; i < 8; i++ {
		s, s2 := float64(sum[i]), float64(sum[8+i])
		if s*s != float64(world)*s2 {
			return false
		}
	}
	return true
}

// putMetrics writes the metric sums into the start of a stats vector.
func putMetrics(v []float32, m diffusion.Metrics) {
	for i, x := range m.Vector() {
		v[i] = float32(x)
	}
}

// metricsOf reads the metric sums back from a stats vector.
func metricsOf(v []float32) diffusion.Metrics {
	f := make([]float64, nMetrics)
	for i := range f {
		f[i] = float64(v[i])
	}
	m, _ := diffusion.MetricsFromVector(f)
	return m
}

// configJSON is the run's configuration as stored in checkpoints and sent to
// joiners.
func (n *Node) configJSON() json.RawMessage {
	b, _ := json.Marshal(n.cfg)
	return b
}
