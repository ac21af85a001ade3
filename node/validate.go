package node

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/checkpoint"
)

// Validate checks everything in the options that can be checked without
// the data, the network or a backend, and names the flag of the first
// problem. The CLI calls it before it creates a directory or binds a port;
// Run calls it first. The model's vocabulary and sequence length, when
// left 0 for the dataset to fill in, are checked with stand-ins.
func (o *Options) Validate() error {
	nonNeg := []struct {
		flag string
		v    int64
	}{{"--checkpoint-every", int64(o.CheckpointEvery)}, {"--keep-every", o.KeepEvery},
		{"--checksum-every", int64(o.ChecksumEvery)}, {"--log-every", int64(o.LogEvery)},
		{"--max-bad-steps", int64(o.MaxBadSteps)}, {"--checkpoint-max-failures", int64(o.CheckpointMaxFailures)},
		{"--max-duration", int64(o.MaxDuration)}, {"--allreduce-timeout", int64(o.AllreduceTimeout)},
		{"--bucket-mb", int64(o.BucketBytes)}, {"--min-nodes", int64(o.Cluster.MinNodes)}, {"--max-nodes", int64(o.Cluster.MaxNodes)}}
	for _, p := range nonNeg {
		if p.v < 0 {
			v := fmt.Sprint(p.v)
			if p.flag == "--max-duration" || p.flag == "--allreduce-timeout" {
				v = time.Duration(p.v).String()
			}
			return fmt.Errorf("%s %s: must not be negative", p.flag, v)
		}
	}
	switch {
	case o.Keep == 1:
		return fmt.Errorf("--keep 1: the newest checkpoint may be damaged or still in flight when the previous one goes; keep at least 2")
	case o.Codec != "" && !slices.Contains(allreduce.Codecs, o.Codec):
		return fmt.Errorf("--codec %q: want one of %v", o.Codec, allreduce.Codecs)
	case o.PowerSGDStart < -1:
		return fmt.Errorf("--powersgd-start %d: want a step (0 or more) or -1 (10%% of --steps, at least --warmup)", o.PowerSGDStart)
	case o.BucketBytes > 0 && o.BucketBytes < 4:
		return fmt.Errorf("--bucket-mb: a bucket of %d bytes is smaller than one float32", o.BucketBytes)
	case !slices.Contains([]string{"", "auto", "bar", "log", "none"}, o.Progress):
		return fmt.Errorf("--progress %q: want auto, bar, log or none", o.Progress)
	case o.Cluster.MaxNodes > 0 && o.Cluster.MaxNodes < max(1, o.Cluster.MinNodes):
		return fmt.Errorf("--max-nodes %d is below --min-nodes %d: no ring could form", o.Cluster.MaxNodes, o.Cluster.MinNodes)
	}
	if o.Join {
		return nil
	}
	switch o.Resume {
	case "", checkpoint.ResumeAuto, checkpoint.ResumeNever:
	default:
		if _, err := os.Stat(o.Resume); err != nil {
			return fmt.Errorf("--resume %s: %w", o.Resume, err)
		}
	}
	c := o.Train
	if c.Model.Vocab == 0 {
		c.Model.Vocab = max(2, c.Model.MaskID+1)
	}
	if c.Model.SeqLen == 0 {
		c.Model.SeqLen = 1
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("training config: %w", err)
	}
	return nil
}
