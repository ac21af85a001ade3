package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"github.com/difftrain/difftrain/compute/device"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/train"
)

func init() {
	var (
		ckpt, data, split, dev string
		samples, lsamples      int
		steps, threads         int
		seed                   uint64
	)
	cmd := &cobra.Command{
		Use:   "eval --checkpoint PATH --data DIR",
		Short: "Print ELBO and perplexity of a checkpoint on a dataset split",
		Long: `eval reports two estimates on sequences of a dataset split (default "val"):
  - the training ELBO (gidd-spec §2.6): one noise sample per token, as logged during
    training, over --samples sequences;
  - the likelihood bound of gidd-spec §7.6: a deterministic quadrature over --steps
    log-SNR points with the effective SNR, on --likelihood-samples sequences, each
    split into a first-half prompt and a second-half completion.
Perplexity is exp(nats per token).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := loadCheckpoint(ckpt)
			if err != nil {
				return err
			}
			b, err := device.Open(dev, "fp32", threads)
			if err != nil {
				return err
			}
			defer b.Close()
			src, err := dataset.Open(context.Background(), dataset.Options{Dir: data, Split: split, Seed: seed})
			if err != nil {
				return err
			}
			defer src.Close()
			var cfg train.Config
			if err := json.Unmarshal(st.Config, &cfg); err != nil {
				return fmt.Errorf("checkpoint %s: config: %w", st.Dir, err)
			}
			// The training estimator runs through a trainer holding the
			// checkpoint's weights.
			tc := cfg
			tc.Batch, tc.MicroBatch = 8, 8
			tr, err := train.New(b, tc)
			if err != nil {
				return err
			}
			defer tr.Close()
			if err := setParams(tr.Model, st); err != nil {
				return err
			}
			n := min(int64(samples), src.Len())
			// Positions far from any training step draw fresh noise.
			const far = 1 << 40
			mt, err := tr.Evaluate(offsetSource{src, far}, far, far+n)
			if err != nil {
				return err
			}
			s := mt.Summary(1)
			fmt.Printf("checkpoint   %s (step %d)\n", st.Dir, st.Step)
			fmt.Printf("data         %s split %s: %d sequences of %d tokens\n", data, split, src.Len(), src.SeqLen())
			fmt.Printf("train ELBO   %.4f nats/token  perplexity %.2f  (%d sequences, %.0f noised tokens)\n", s.Elbo, s.PPL, n, s.Tokens)

			dc, err := cfg.Diffusion()
			if err != nil {
				return err
			}
			ec := diffusion.DefaultEvalConfig(cfg.Model.SeqLen)
			ec.Steps, ec.Batch = steps, 8
			d := &train.Denoiser{M: tr.Model, CausalPrompt: cfg.CausalPrompt}
			N := cfg.Model.SeqLen
			seq := make([]int32, N)
			var nll float64
			var tokens int
			for i := 0; i < lsamples && int64(i) < src.Len(); i++ {
				if err := src.Sample(int64(i), seq); err != nil {
					return err
				}
				l, err := diffusion.Evaluate(d, dc.Noise, dc.Schedule, ec, diffusion.RNG{Seed: seed}, uint64(i), seq[:N/2], seq[N/2:])
				if err != nil {
					return err
				}
				nll += l.NLL
				tokens += l.Tokens
			}
			if tokens > 0 {
				avg := nll / float64(tokens)
				fmt.Printf("likelihood   %.4f nats/token  perplexity %.2f  (§7.6, %d steps, %d sequences)\n", avg, math.Exp(avg), steps, lsamples)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&ckpt, "checkpoint", "", "checkpoint directory (step-N), or a checkpoint root to use its newest")
	fs.StringVar(&data, "data", "", "dataset directory")
	fs.StringVar(&split, "split", "val", "dataset split")
	fs.IntVar(&samples, "samples", 64, "sequences for the training-ELBO estimate")
	fs.IntVar(&lsamples, "likelihood-samples", 4, "sequences for the §7.6 likelihood bound")
	fs.IntVar(&steps, "steps", 32, "log-SNR points of the §7.6 quadrature (the paper uses 128)")
	fs.Uint64Var(&seed, "seed", 1, "seed of the evaluation noise and sequence order")
	fs.StringVar(&dev, "device", "auto", "compute device: "+device.Kinds)
	fs.IntVar(&threads, "threads", 0, "CPU threads (0: all cores)")
	root.AddCommand(cmd)
}

// offsetSource maps positions [off, off+n) onto [0, n) of a source.
type offsetSource struct {
	dataset.Source
	off int64
}

func (o offsetSource) Sample(k int64, dst []int32) error { return o.Source.Sample(k-o.off, dst) }
