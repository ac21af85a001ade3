package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/shard"
)

var benchDataFlags struct {
	dir     string
	input   []string
	maxMB   float64
	seqLen  int
	batch   int
	seconds float64
	consume float64
	keep    bool
}

var benchDataCmd = &cobra.Command{
	Use:   "data",
	Short: "Measure prepare throughput and how fast a node draws sequences from local shards and from a peer",
	Long: `bench data measures the data pipeline in one run:

 1. prepare: tokenizes and packs the input (default: the Go standard library
    source, as 'trainer prepare' does) into a temporary dataset; MB/s of text.
    Skipped when --dir names an existing dataset.
 2. local: a Loader over the shards on disk draws global steps of --batch
    sequences, each step prefetching the next, for --seconds; sequences/s.
 3. peer: a second Loader with an empty directory fetches the shards from a
    Flight server on 127.0.0.1 (as a joining node does): seconds to its first
    batch, then sequences/s and MB/s until every shard has arrived, then
    sequences/s drawn as in 2.

Rates are also given as multiples of --consume, the sequences per second one
training step consumes (L8-d512: batch 4 x 256 tokens at 700-2000 tokens/s is
about 3-8 sequences/s; default 8).`,
	Args: cobra.NoArgs,
	RunE: runBenchData,
}

func init() {
	f := benchDataCmd.Flags()
	f.StringVar(&benchDataFlags.dir, "dir", "", "existing dataset to read (default: prepare one in a temporary directory)")
	f.StringSliceVar(&benchDataFlags.input, "input", nil, "input to prepare (default: the Go standard library source)")
	f.Float64Var(&benchDataFlags.maxMB, "max-mb", 0, "cap on the input to prepare in MiB (0: all)")
	f.IntVar(&benchDataFlags.seqLen, "seq-len", 256, "sequence length of the prepared dataset")
	f.IntVar(&benchDataFlags.batch, "batch", 4, "global batch in sequences")
	f.Float64Var(&benchDataFlags.seconds, "seconds", 3, "seconds to draw sequences in each phase")
	f.Float64Var(&benchDataFlags.consume, "consume", 8, "sequences per second a training step consumes")
	f.BoolVar(&benchDataFlags.keep, "keep", false, "keep the temporary directories")
	benchCmd.AddCommand(benchDataCmd)
}

func runBenchData(cmd *cobra.Command, _ []string) error {
	bf := benchDataFlags
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if bf.batch <= 0 || bf.seconds <= 0 || bf.consume <= 0 {
		return fmt.Errorf("bench data: --batch, --seconds and --consume must be positive")
	}
	tmp, err := os.MkdirTemp("", "trainer-bench-data-")
	if err != nil {
		return err
	}
	if !bf.keep {
		defer os.RemoveAll(tmp)
	}
	out := cmd.OutOrStdout()
	x := func(rate float64) string { return fmt.Sprintf("%.0fx", rate/bf.consume) }

	dir := bf.dir
	if dir == "" {
		dir = filepath.Join(tmp, "data")
		o := dataset.PrepareOptions{Inputs: bf.input, Out: dir, SeqLen: bf.seqLen, ValFraction: 0.01, MaxMB: bf.maxMB}
		if len(o.Inputs) == 0 {
			in, ext, skip, err := dataset.DefaultCorpus()
			if err != nil {
				return err
			}
			o.Inputs, o.Ext, o.SkipDirs = []string{in}, ext, skip
		}
		start := time.Now()
		st, err := dataset.Prepare(ctx, o)
		if err != nil {
			return err
		}
		el := time.Since(start).Seconds()
		fmt.Fprintf(out, "prepare: %.1f MB of text -> %d sequences in %d shards in %.2fs: %.1f MB/s\n",
			float64(st.InputBytes)/1e6, st.Sequences[dataset.SplitTrain]+st.Sequences[dataset.SplitVal], len(st.Manifest.Shards), el, float64(st.InputBytes)/1e6/el)
	}

	// Local shards.
	start := time.Now()
	local, err := dataset.Open(ctx, dataset.Options{Dir: dir, Seed: 1})
	if err != nil {
		return err
	}
	defer local.Close()
	fmt.Fprintf(out, "local: opened and verified %d sequences in %.2fs\n", local.Len(), time.Since(start).Seconds())
	n, el, err := draw(local, bf.batch, bf.seconds)
	if err != nil {
		return err
	}
	rate := float64(n) / el
	fmt.Fprintf(out, "local: %d sequences in %.2fs: %.0f sequences/s = %s the step's %.0f sequences/s (prefetch %+v)\n",
		n, el, rate, x(rate), bf.consume, local.Stats())

	// A peer over loopback.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	fs := shard.RegisterFlight(srv, dir)
	go srv.Serve(lis)
	defer func() { srv.Stop(); fs.Close() }()
	fs.Warm() // a serving node has verified its shards long before a peer joins
	cache := filepath.Join(tmp, "peer-cache")
	start = time.Now()
	peer, err := dataset.Open(ctx, dataset.Options{Dir: cache, Peer: lis.Addr().String(), Seed: 1})
	if err != nil {
		return err
	}
	defer peer.Close()
	opened := time.Since(start).Seconds()
	peer.Prefetch(0, int64(bf.batch))
	dst := make([]int32, peer.SeqLen())
	for k := range int64(bf.batch) {
		if err := peer.Sample(k, dst); err != nil {
			return err
		}
	}
	first := time.Since(start).Seconds()
	if err := peer.Ready(ctx); err != nil {
		return err
	}
	all := time.Since(start).Seconds()
	var bytes int64
	for _, s := range peer.Manifest().Split(dataset.SplitTrain) {
		bytes += s.Bytes
	}
	srate := float64(peer.Len()) / all
	fmt.Fprintf(out, "peer: manifest after %.3fs, first batch (%d sequences fetched row by row) after %.3fs\n", opened, bf.batch, first)
	fmt.Fprintf(out, "peer: all %d shards (%.1f MB, %d sequences) streamed in %.2fs: %.1f MB/s, %.0f sequences/s = %s\n",
		peer.Stats().Fetched, float64(bytes)/1e6, peer.Len(), all, float64(bytes)/1e6/all, srate, x(srate))
	n, el, err = draw(peer, bf.batch, bf.seconds)
	if err != nil {
		return err
	}
	rate = float64(n) / el
	fmt.Fprintf(out, "peer: then %.0f sequences/s drawn = %s (%+v)\n", rate, x(rate), peer.Stats())
	return nil
}

// draw runs global steps of batch sequences from position 0 for about
// seconds, prefetching the next step while drawing the current one, and
// returns the sequences drawn and the time taken.
func draw(l *dataset.Loader, batch int, seconds float64) (int64, float64, error) {
	dst := make([]int32, l.SeqLen())
	start := time.Now()
	var k int64
	for step := int64(0); ; step++ {
		if step%256 == 0 && time.Since(start).Seconds() >= seconds {
			break
		}
		l.Prefetch((step+1)*int64(batch), (step+2)*int64(batch))
		for range batch {
			if err := l.Sample(k, dst); err != nil {
				return 0, 0, err
			}
			k++
		}
	}
	return k, time.Since(start).Seconds(), nil
}
