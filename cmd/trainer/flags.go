package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/node"
	"github.com/difftrain/difftrain/shard"
	"github.com/difftrain/difftrain/train"
)

// runFlags are the flags of `trainer train` and `trainer join`.
type runFlags struct {
	config string // YAML or JSON file with a train.Config; flags override it

	// model and training (train.Config)
	vocab, layers, dim, heads, seqLen int
	noise                             string
	optimizer                         string
	lr, cooldown                      float64
	warmup, steps                     int
	batch, micro                      int
	seed                              uint64
	promptP                           float64

	// data
	data, dataURL, dataPeer, cacheDir string

	// checkpoints
	ckptDir     string
	ckptEvery   int
	keep        int
	keepEvery   int
	resume      string
	force       bool
	ckptLocal   bool
	runDir      string
	maxDuration time.Duration

	// steps that go wrong
	ckptMaxFailures int
	maxBadSteps     int

	// compute
	device, precision string
	threads           int

	// cluster
	name, bind, advertise, grpcAddr, grpcAdvertise string
	seeds                                          []string
	minNodes, maxNodes                             int
	security                                       cluster.SecurityFlags
	joinTimeout, rejoinWait                        time.Duration

	// allreduce
	codec             string
	bucketMB          float64
	powersgdRank      int
	powersgdStart     int
	powersgdEmb       bool
	allreduceTimeout  time.Duration
	allreduceChecksum bool

	// observability
	metricsAddr   string
	checksumEvery int
	progress      string
	logEvery      int
	sampleLog     string
}

func (f *runFlags) register(fs *pflag.FlagSet, join bool) {
	if join {
		// A joiner takes the run's configuration, weights and data cursor
		// from the cluster; it needs only where the cluster is.
		fs.StringSliceVar(&f.seeds, "seed", nil, "gossip address host:port of a member to join (repeatable)")
	} else {
		fs.StringSliceVar(&f.seeds, "peer", nil, "gossip address host:port of another member of this run (repeatable): if a ring is training there at start, this node joins it instead of resuming from its own checkpoint (a restarted seed)")
		d := train.Defaults()
		fs.StringVar(&f.config, "config", "", "training config file (YAML or JSON, the JSON names of train.Config), read on top of the defaults; flags given explicitly override it")
		fs.IntVar(&f.vocab, "vocab", d.Model.Vocab, "vocabulary size (0: the dataset's)")
		fs.IntVar(&f.layers, "layers", d.Model.Layers, "transformer blocks L")
		fs.IntVar(&f.dim, "dim", d.Model.Dim, "hidden size d")
		fs.IntVar(&f.heads, "heads", d.Model.Heads, "attention heads H")
		fs.IntVar(&f.seqLen, "seq-len", d.Model.SeqLen, "sequence length N (0: the dataset's)")
		fs.StringVar(&f.noise, "noise", d.Noise, "noise type: masked, low-uniform, balanced, high-uniform, uniform, or a mixing shift")
		fs.StringVar(&f.optimizer, "optimizer", d.Optimizer, "optimizer: laprop or adamw")
		fs.Float64Var(&f.lr, "lr", d.LR, "base learning rate η (bulk LR η/d, aux LR 0.02η)")
		fs.IntVar(&f.warmup, "warmup", d.Warmup, "warmup steps")
		fs.Float64Var(&f.cooldown, "cooldown", d.Cooldown, "cooldown: fraction of the steps (< 1) or a step count")
		fs.IntVar(&f.steps, "steps", d.Steps, "training steps (optimizer updates)")
		fs.IntVar(&f.batch, "batch", d.Batch, "global batch size in sequences (independent of the number of nodes)")
		fs.IntVar(&f.micro, "micro-batch", d.MicroBatch, "sequences per forward/backward on a node (0: the global batch)")
		fs.Uint64Var(&f.seed, "seed", d.Seed, "run seed: initialisation, data order and noise are pure functions of it")
		fs.Float64Var(&f.promptP, "prompt-p", d.PPrompt, "share of sequences with a clean prompt (noise_mask_p_prompt)")
	}
	fs.StringVar(&f.data, "data", "", "dataset directory with manifest.json (made by trainer prepare)")
	fs.StringVar(&f.dataURL, "data-url", "", "HTTP(S) base URL serving manifest.json and the shards")
	fs.StringVar(&f.dataPeer, "data-peer", "", "gRPC address of a node to stream shards from (joiners use a member when no data is given)")
	fs.StringVar(&f.cacheDir, "cache-dir", "", "where downloaded shards are kept (default RUN_DIR/cache)")

	fs.StringVar(&f.ckptDir, "checkpoint-dir", "", "checkpoint directory (default RUN_DIR/checkpoints)")
	fs.IntVar(&f.ckptEvery, "checkpoint-every", 100, "save a checkpoint every K steps (0: only at the end)")
	fs.IntVar(&f.keep, "keep", 3, "keep the newest K checkpoints (K >= 2)")
	fs.IntVar(&f.keepEvery, "keep-every", 0, "also keep every M-th step forever (0: off)")
	fs.StringVar(&f.resume, "resume", "auto", "auto (newest valid checkpoint), never, or a checkpoint directory")
	fs.BoolVar(&f.force, "force", false, "with --resume never, start over in a non-empty checkpoint directory")
	fs.BoolVar(&f.ckptLocal, "checkpoint-local", false, "every node writes its own checkpoints (default: only the coordinator, for a shared volume)")
	fs.StringVar(&f.runDir, "run-dir", "run", "run directory: metrics.jsonl, checkpoints, cache")
	fs.DurationVar(&f.maxDuration, "max-duration", 0, "stop cleanly (with a checkpoint) after this long (0: no limit)")
	fs.IntVar(&f.ckptMaxFailures, "checkpoint-max-failures", 3, "stop the run after this many checkpoint saves in a row have failed (each failure is retried at the next step)")
	fs.IntVar(&f.maxBadSteps, "max-bad-steps", 0, "skip (do not apply) up to this many steps whose loss or gradient is not finite; the next one stops the run")

	fs.StringVar(&f.device, "device", "auto", "compute device: cpu, cuda or auto")
	fs.StringVar(&f.precision, "precision", "fp32", "GEMM precision on CUDA: fp32, tf32 or bf16")
	fs.IntVar(&f.threads, "threads", 0, "CPU threads for kernels and BLAS (0: all cores)")

	fs.StringVar(&f.name, "name", "", "node name prefix (default: host name; a random suffix is always added)")
	fs.StringVar(&f.bind, "bind", ":7946", "gossip bind address host:port (no host: 0.0.0.0 with a cluster key, else 127.0.0.1)")
	fs.StringVar(&f.advertise, "advertise", "", "gossip address peers use, host:port (default: the bind address; in Kubernetes the pod IP)")
	fs.StringVar(&f.grpcAddr, "grpc", ":7947", "gRPC bind address host:port for control, allreduce, data and state transfer (no host: as --bind)")
	fs.StringVar(&f.grpcAdvertise, "grpc-advertise", "", "gRPC address peers dial (default: the advertise host with the --grpc port)")
	fs.IntVar(&f.minNodes, "min-nodes", 1, "fewest members a ring may train with")
	fs.IntVar(&f.maxNodes, "max-nodes", 0, "most members a ring admits (0: no limit)")
	f.security.Register(fs) // --cluster-key (or $DIFFTRAIN_CLUSTER_KEY), --cluster-key-file, --tls-*, --insecure
	fs.DurationVar(&f.joinTimeout, "join-timeout", 2*time.Minute, "how long to retry reaching the seed")
	fs.DurationVar(&f.rejoinWait, "rejoin-wait", 5*time.Second, "how long a starting seed looks for a running ring at --peer and the last ring's members (RUN_DIR/peers.json)")

	fs.StringVar(&f.codec, "codec", "none", "gradient codec: none, bf16, bf16-zstd, int8 or powersgd")
	fs.Float64Var(&f.bucketMB, "bucket-mb", 25, "gradient bucket size in MiB")
	fs.IntVar(&f.powersgdRank, "powersgd-rank", 1, "rank of --codec powersgd's low-rank approximation (PyTorch's matrix_approximation_rank)")
	fs.IntVar(&f.powersgdStart, "powersgd-start", -1, "first step --codec powersgd compresses, plain sums before (PyTorch's start_powerSGD_iter; -1: 10% of --steps, at least --warmup)")
	fs.BoolVar(&f.powersgdEmb, "powersgd-embeddings", false, "--codec powersgd compresses the embedding and the head too, as PyTorch's hook would (default: summed uncompressed, their gradients are not low-rank)")
	fs.DurationVar(&f.allreduceTimeout, "allreduce-timeout", 10*time.Second, "abort a step when a ring neighbour is silent this long")
	fs.BoolVar(&f.allreduceChecksum, "allreduce-checksum", false, "CRC-32C every gradient message (catches corruption TCP cannot; every node must agree)")

	fs.StringVar(&f.metricsAddr, "metrics-addr", ":9090", "HTTP address for /metrics, /healthz and /readyz (empty: off; no host: as --bind)")
	fs.IntVar(&f.checksumEvery, "checksum-every", 50, "compare weight checksums across the ring every K steps (0: off)")
	fs.StringVar(&f.progress, "progress", "auto", "progress display: auto (bar on a terminal), bar, log or none")
	fs.IntVar(&f.logEvery, "log-every", 10, "log a line every K steps when not showing a bar")
	fs.StringVar(&f.sampleLog, "sample-log", "", "append \"step lo hi generation rank\" per ring member for every completed step: which global samples each member trained on")
}

// trainConfig builds the training config: train.Defaults, the --config file
// decoded on top of them, then every flag that was set explicitly. The flag
// defaults are train.Defaults, so without a file this is the flags' values.
// A vocabulary or sequence length left 0 is filled in from the dataset by
// the node, which validates the result.
func (f *runFlags) trainConfig(cmd *cobra.Command) (train.Config, error) {
	c := train.Defaults()
	if f.config != "" {
		raw, err := os.ReadFile(f.config)
		if err != nil {
			return c, fmt.Errorf("--config: %w", err)
		}
		if c, err = train.ParseConfig(raw, c); err != nil {
			return c, fmt.Errorf("--config %s: %w", f.config, err)
		}
	}
	set := cmd.Flags().Changed
	m := &c.Model
	for _, p := range []struct {
		flag string
		dst  *int
		v    int
	}{{"vocab", &m.Vocab, f.vocab}, {"seq-len", &m.SeqLen, f.seqLen}, {"layers", &m.Layers, f.layers},
		{"dim", &m.Dim, f.dim}, {"heads", &m.Heads, f.heads}, {"warmup", &c.Warmup, f.warmup},
		{"steps", &c.Steps, f.steps}, {"batch", &c.Batch, f.batch}, {"micro-batch", &c.MicroBatch, f.micro}} {
		if set(p.flag) {
			*p.dst = p.v
		}
	}
	for _, p := range []struct {
		flag string
		dst  *float64
		v    float64
	}{{"lr", &c.LR, f.lr}, {"cooldown", &c.Cooldown, f.cooldown}, {"prompt-p", &c.PPrompt, f.promptP}} {
		if set(p.flag) {
			*p.dst = p.v
		}
	}
	if set("noise") {
		c.Noise = f.noise
	}
	if set("optimizer") {
		c.Optimizer = f.optimizer
	}
	if set("seed") {
		c.Seed = f.seed
	}
	c.Resolve()
	return c, nil
}

// validate checks the flags and the training config, everything that needs
// neither the data's contents nor the network, before the node binds a port
// or creates a directory.
func (f *runFlags) validate(o *node.Options) error {
	if f.data != "" {
		if _, err := os.Stat(filepath.Join(f.data, shard.ManifestName)); err != nil {
			return fmt.Errorf("--data %s: no dataset there (make one with trainer prepare): %w", f.data, err)
		}
	}
	return o.Validate()
}
