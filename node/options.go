package node

import (
	"time"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/train"
)

// Options configure a node. A seed node (Join false) brings the run's
// configuration; a joiner takes configuration, weights, optimizer state and
// data cursor from a member of the ring.
type Options struct {
	Join  bool
	Train train.Config // the seed's configuration; ignored when joining

	// Rejoin are gossip addresses a seed looks for a running ring at (its
	// --seed list), besides the last ring's members recorded in the run
	// directory; when one is training, the seed joins it instead of
	// starting from its checkpoint (--peer on `trainer train`). RejoinWait bounds the search.
	Rejoin     []string
	RejoinWait time.Duration

	// Explicit holds the flags given on the command line (name → value).
	// A joiner refuses to start when one that the ring must agree on
	// (RunConfig) differs from the running ring's.
	Explicit map[string]string

	Backend compute.Backend // opened by the caller; the node closes nothing of it

	// Data: where this node reads shards. A joiner with no Dir and no URL
	// streams shards from a ring member's Flight service into its cache.
	Data dataset.Options

	// Checkpoints.
	CheckpointDir   string
	CheckpointEvery int    // steps between saves (0: only at the end)
	Keep            int    // newest checkpoints kept (>= 2)
	KeepEvery       int64  // also keep every M-th step (0: off)
	Resume          string // auto, never or a checkpoint path (seed only)
	Force           bool   // with Resume never: start over in a non-empty directory
	CheckpointLocal bool   // every node writes its own checkpoints
	// CheckpointMaxFailures consecutive failed saves stop the run (0: 3).
	CheckpointMaxFailures int
	// MaxBadSteps steps with a non-finite loss or gradient are skipped
	// (not applied); the next one stops the run.
	MaxBadSteps int

	RunDir      string        // metrics.jsonl
	MaxDuration time.Duration // stop cleanly after this long (0: no limit)

	// Cluster membership; GRPCAddr in it is what peers dial, GRPCListen is
	// what this node binds.
	Cluster    cluster.Config
	GRPCListen string

	// Allreduce.
	Codec         string
	BucketBytes   int
	PowerSGDRank  int // rank of codec powersgd (0: 1)
	PowerSGDStart int // first step powersgd compresses, plain sums before (-1: allreduce.PowerSGDStartFor's auto)
	// PowerSGDEmbeddings compresses the embedding and the head too
	// (train.PowerSGDTensors); by default they are summed uncompressed.
	PowerSGDEmbeddings bool
	AllreduceTimeout   time.Duration
	// AllreduceChecksum adds a CRC-32C to every gradient message.
	AllreduceChecksum bool

	// Observability.
	MetricsAddr   string // /metrics, /healthz, /readyz; empty: off
	ChecksumEvery int    // compare weight checksums every K steps (0: off)
	Progress      string // auto, bar, log or none
	LogEvery      int
	// SampleLog, when set, gets for every step this node completed one line
	// "step lo hi generation rank" per ring member: the global sample
	// positions [lo, hi) that member trained on. The logs of all nodes
	// together show that every sample of every step was consumed exactly
	// once, in one generation, across failures and joins.
	SampleLog string

	// Hooks for tests and the CLI.
	OnStep   func(Record)                   // after every completed step
	OnSample func(step int64, lo, hi int64) // the global positions this node trained on in a step
}
