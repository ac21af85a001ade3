package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"github.com/difftrain/difftrain/checkpoint"
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
Perplexity is exp(nats per token). Each estimate is also given in bits per byte of the
evaluated text, so that runs with different tokenizers compare: total nats / total bytes
/ ln 2, the bytes being the UTF-8 text the tokens decode to with the dataset's tokenizer
(special tokens count no bytes). For the training ELBO, whose noise sample covers the
noised tokens only, the total is nats/token times the tokens of the sequences evaluated.
The dataset must have the checkpoint's tokenizer.`,
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
			tok, err := evalTokenizer(st, src)
			if err != nil {
				return err
			}
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
			seqTokens, seqBytes, err := textBytes(src, tok, 0, n, 0)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "checkpoint   %s (step %d)\n", st.Dir, st.Step)
			fmt.Fprintf(out, "data         %s split %s: %d sequences of %d tokens, tokenizer %s\n", data, split, src.Len(), src.SeqLen(), src.Manifest().Tokenizer)
			fmt.Fprintf(out, "train ELBO   %.4f nats/token  perplexity %.2f  %.4f bits/byte  (%d sequences, %.0f noised tokens; %d tokens, %d bytes of text, %.3f bytes/token)\n",
				s.Elbo, s.PPL, bitsPerByte(s.Elbo*float64(seqTokens), seqBytes), n, s.Tokens, seqTokens, seqBytes, float64(seqBytes)/float64(max(seqTokens, 1)))

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
			ln := min(int64(lsamples), src.Len())
			_, compBytes, err := textBytes(src, tok, 0, ln, N/2)
			if err != nil {
				return err
			}
			for i := 0; int64(i) < ln; i++ {
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
				fmt.Fprintf(out, "likelihood   %.4f nats/token  perplexity %.2f  %.4f bits/byte  (§7.6, %d steps, %d sequences; %d tokens, %d bytes of text)\n",
					avg, math.Exp(avg), bitsPerByte(nll, compBytes), steps, ln, tokens, compBytes)
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

// evalTokenizer returns the tokenizer of the dataset src, which must be the
// one the checkpoint st was trained with.
func evalTokenizer(st *checkpoint.State, src *dataset.Loader) (dataset.Tokenizer, error) {
	m := src.Manifest()
	if m.Tokenizer != st.Tokenizer || st.TokenizerSHA256 != "" && m.TokenizerSHA256 != st.TokenizerSHA256 {
		return nil, fmt.Errorf("eval: the dataset has tokenizer %s (sha256 %s), checkpoint %s was trained with %s (sha256 %s): its token ids mean other text",
			m.Tokenizer, cmp.Or(m.TokenizerSHA256, "none"), st.Dir, st.Tokenizer, cmp.Or(st.TokenizerSHA256, "none"))
	}
	tok, err := src.Tokenizer()
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	return tok, nil
}

// textBytes returns the tokens and the bytes of the text that positions
// [from, SeqLen) of sequences [lo, hi) of src decode to with tok.
func textBytes(src dataset.Source, tok dataset.Tokenizer, lo, hi int64, from int) (tokens, nbytes int64, err error) {
	seq := make([]int32, src.SeqLen())
	var buf []byte
	for k := lo; k < hi; k++ {
		if err := src.Sample(k, seq); err != nil {
			return 0, 0, err
		}
		buf = tok.Decode(buf[:0], seq[from:])
		tokens += int64(len(seq) - from)
		nbytes += int64(len(buf))
	}
	return tokens, nbytes, nil
}

// bitsPerByte is nats/bytes/ln 2 (NaN without bytes).
func bitsPerByte(nats float64, nbytes int64) float64 {
	if nbytes == 0 {
		return math.NaN()
	}
	return nats / float64(nbytes) / math.Ln2
}

// offsetSource maps positions [off, off+n) onto [0, n) of a source.
type offsetSource struct {
	dataset.Source
	off int64
}

func (o offsetSource) Sample(k int64, dst []int32) error { return o.Source.Sample(k-o.off, dst) }
