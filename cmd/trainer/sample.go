package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/difftrain/difftrain/compute/device"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/train"
)

func init() {
	var (
		ckpt, prompt, sampler, grid, prior, dev, data string
		steps, completion, topK, n, threads           int
		temp                                          float64
		seed                                          uint64
		showSpecial                                   bool
	)
	cmd := &cobra.Command{
		Use:   "sample --checkpoint PATH",
		Short: "Generate text from a checkpoint with the adaptive or ancestral GIDD sampler",
		Long: `sample loads a checkpoint (a step-NNNNNNNN directory, or a checkpoint directory whose
newest valid checkpoint is used), writes the prompt at the start of the model's window,
fills the next --completion positions from the noise prior and denoises them in --steps
steps (gidd-spec §7), then prints each sample: the prompt as the model saw it (its
tokens decoded) and the completion, cut at the first end-of-text token.

The prompt is encoded and the output decoded with the checkpoint's tokenizer: the
tokenizer.json a checkpoint of a run on a Hugging Face tokenizer carries, or, for a
checkpoint without one, the tokenizer of the dataset --data (checked against the
checkpoint's record of it). Special tokens (BOS, EOS, PAD, MASK: a position the sampler
left masked) are skipped, as Hugging Face's decode(skip_special_tokens=True) does;
--special writes them as their strings instead and does not cut at end-of-text.`,
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
			cfg, m, err := loadModel(b, st, max(1, min(n, 8)))
			if err != nil {
				return err
			}
			defer m.Close()
			tok, err := dataset.CheckpointTokenizer(st.Tokenizer, st.TokenizerJSON, st.TokenizerSHA256, data)
			if err != nil {
				return fmt.Errorf("checkpoint %s: %w", st.Dir, err)
			}
			g := diffusion.DefaultGenConfig(cfg.Model.SeqLen)
			g.Steps, g.TopK, g.Temperature = steps, topK, temp
			g.Completion = min(completion, cfg.Model.SeqLen-1)
			if g.Sampler, err = diffusion.ParseSampler(sampler); err != nil {
				return err
			}
			if g.Grid, err = diffusion.ParseGrid(grid); err != nil {
				return err
			}
			if g.Prior, err = diffusion.ParsePrior(prior); err != nil {
				return err
			}
			dc, err := cfg.Diffusion()
			if err != nil {
				return err
			}
			p := tok.Encode(nil, []byte(prompt))
			// Generate keeps the prompt's last SeqLen-Completion tokens.
			p = p[max(0, len(p)-(cfg.Model.SeqLen-g.Completion)):]
			seen := tok.Decode(nil, p)
			if string(seen) != prompt {
				slog.Info("sample: the model sees the prompt as decoded here (cut to the window, or normalized by the tokenizer)", "prompt_tokens", len(p))
			}
			prompts := make([][]int32, n)
			for i := range prompts {
				prompts[i] = p
			}
			d := &train.Denoiser{M: m, CausalPrompt: cfg.CausalPrompt}
			out, err := diffusion.Generate(d, dc.Noise, dc.Schedule, g, diffusion.RNG{Seed: seed}, 0, prompts)
			if err != nil {
				return err
			}
			for i, ids := range out {
				var text []byte
				if showSpecial {
					text = dataset.DecodeShowingSpecial(tok, text, append(slices.Clone(p), ids...))
				} else {
					if end := indexOf(ids, dataset.EOS); end >= 0 {
						ids = ids[:end]
					}
					text = tok.Decode(append([]byte(nil), seen...), ids)
				}
				if n > 1 {
					fmt.Fprintf(cmd.OutOrStdout(), "--- sample %d ---\n", i+1)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", strings.ToValidUTF8(string(text), "�"))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&ckpt, "checkpoint", "", "checkpoint directory (step-N), or a checkpoint root to use its newest")
	fs.StringVar(&prompt, "prompt", "", "text the completion continues")
	fs.IntVar(&steps, "steps", 128, "denoising steps T")
	fs.IntVar(&completion, "completion", 128, "tokens to generate")
	fs.StringVar(&sampler, "sampler", "adaptive", "sampler: adaptive (greedy confidence, §7.3) or ancestral (exact posterior, §7.2)")
	fs.IntVar(&topK, "top-k", 1, "adaptive sampler: tokens committed per step")
	fs.Float64Var(&temp, "temperature", 0, "sampling temperature (0: argmax for adaptive)")
	fs.StringVar(&grid, "grid", "cosine", "λ grid: cosine or linear")
	fs.StringVar(&prior, "prior", "hybrid", "noise prior: hybrid, mask or uniform")
	fs.IntVar(&n, "n", 1, "number of samples")
	fs.Uint64Var(&seed, "seed", 1, "sampling seed")
	fs.StringVar(&data, "data", "", "dataset whose tokenizer to use if the checkpoint carries none (checked against the checkpoint's)")
	fs.BoolVar(&showSpecial, "special", false, "write special tokens (BOS, EOS, PAD, MASK) as their strings instead of skipping them, and do not cut at end-of-text")
	fs.StringVar(&dev, "device", "auto", "compute device: "+device.Kinds)
	fs.IntVar(&threads, "threads", 0, "CPU threads (0: all cores)")
	root.AddCommand(cmd)
}

func indexOf(ids []int32, v int32) int {
	for i, x := range ids {
		if x == v {
			return i
		}
	}
	return -1
}
