package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/tokenizer"
)

var tokenizerCmd = &cobra.Command{
	Use:   "tokenizer",
	Short: "Train a byte-level BPE tokenizer, or encode and decode with a tokenizer.json",
}

var tokTrainFlags struct {
	vocab    int
	maxWords int
	minFreq  int64
	out      string
	inputs   []string
	format   string
	field    string
	ext      []string
	skipDirs []string
	maxMB    float64
	workers  int
}

var tokTrainCmd = &cobra.Command{
	Use:   "train",
	Short: "Train a byte-level BPE on the inputs prepare reads and write a tokenizer.json",
	Long: `train learns a byte-level BPE in the layout of gidd-spec.md §8.1: ids 0-3 are
<|begin_of_text|>, <|end_of_text|>, <|padding|> and <|mask|>, then 12 tokens of
2, 4, ..., 24 spaces, then the 256 byte symbols, then the merges, with an NFC
normalizer, the §8.1 split and a BOS ... EOS template. The file loads in the
Hugging Face tokenizers library and in prepare --tokenizer. Words are counted in
a table of at most --max-words entries, so memory stays bounded on any corpus.

With no --input, the corpus is the Go standard library source, as for prepare.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		f := tokTrainFlags
		o := dataset.PrepareOptions{Inputs: f.inputs, Format: f.format, Field: f.field, Ext: f.ext,
			SkipDirs: f.skipDirs, MaxMB: f.maxMB, Workers: f.workers}
		if len(o.Inputs) == 0 {
			if err := defaultCorpus(cmd, &o); err != nil {
				return err
			}
		}
		data, err := dataset.TrainTokenizer(cmd.Context(), o,
			tokenizer.TrainOptions{Vocab: f.vocab, MaxWords: f.maxWords, MinFrequency: f.minFreq})
		if err != nil {
			return err
		}
		t, err := tokenizer.Parse(data)
		if err != nil {
			return fmt.Errorf("tokenizer train: the trained file does not load: %w", err)
		}
		if err := writeFileAtomic(f.out, data); err != nil {
			return err
		}
		if t.Vocab() < f.vocab {
			slog.Warn("tokenizer train: the corpus ran out of pairs seen --min-frequency times before --vocab",
				"vocab", t.Vocab(), "asked", f.vocab)
		}
		slog.Info("tokenizer train: wrote", "out", f.out, "vocab", t.Vocab(), "sha256", t.SHA256())
		return nil
	},
}

var tokCodecFlags struct {
	path    string
	special bool
}

var tokEncodeCmd = &cobra.Command{
	Use:   "encode",
	Short: "Read text on stdin, write its token ids on stdout, separated by spaces",
	Long: `encode reads all of stdin as bytes (any bytes: invalid UTF-8 round-trips), encodes
them with the tokenizer.json given by --tokenizer exactly as the Hugging Face tokenizers
library does, and writes the ids on one line. No special tokens are added unless
--special (the tokenizer's post-processor template, e.g. BOS ... EOS).`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		t, err := tokenizer.Load(tokCodecFlags.path)
		if err != nil {
			return err
		}
		text, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return fmt.Errorf("tokenizer encode: stdin: %w", err)
		}
		var ids []int32
		if tokCodecFlags.special {
			ids = t.EncodeSpecial(nil, text)
		} else {
			ids = t.Encode(nil, text)
		}
		w := bufio.NewWriter(cmd.OutOrStdout())
		w.Write(tokenizer.FormatIDs(nil, ids))
		w.WriteByte('\n')
		return w.Flush()
	},
}

var tokDecodeCmd = &cobra.Command{
	Use:   "decode",
	Short: "Read token ids on stdin (separated by white space), write their text on stdout",
	Long: `decode reads token ids separated by white space on stdin and writes their bytes on
stdout, skipping special tokens. An id outside the vocabulary is an error that names it.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		t, err := tokenizer.Load(tokCodecFlags.path)
		if err != nil {
			return err
		}
		in, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return fmt.Errorf("tokenizer decode: stdin: %w", err)
		}
		ids, err := tokenizer.ParseIDs(in, t.Vocab())
		if err != nil {
			return fmt.Errorf("tokenizer decode: %w", err)
		}
		_, err = cmd.OutOrStdout().Write(t.Decode(nil, ids))
		return err
	},
}

// writeFileAtomic writes data to path through a temporary file beside it.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func init() {
	f := tokTrainCmd.Flags()
	f.IntVar(&tokTrainFlags.vocab, "vocab", 32768, "vocabulary size, the 272 fixed ids included")
	f.IntVar(&tokTrainFlags.maxWords, "max-words", 1<<21, "most distinct words kept while counting (the rarest are dropped past it)")
	f.Int64Var(&tokTrainFlags.minFreq, "min-frequency", 2, "stop merging when no pair occurs this often")
	f.StringVar(&tokTrainFlags.out, "out", "tokenizer.json", "output file")
	f.StringSliceVar(&tokTrainFlags.inputs, "input", nil, "input files or directories, as for prepare (default: the Go standard library source)")
	f.StringVar(&tokTrainFlags.format, "format", "auto", "input format, as for prepare")
	f.StringVar(&tokTrainFlags.field, "field", "text", "JSONL field or Parquet column holding the text")
	f.StringSliceVar(&tokTrainFlags.ext, "ext", nil, "in directories, keep only files with these extensions (.go for the default corpus)")
	f.StringSliceVar(&tokTrainFlags.skipDirs, "skip-dir", nil, "in directories, skip subdirectories with these names")
	f.Float64Var(&tokTrainFlags.maxMB, "max-mb", 0, "stop reading input after this many MiB (0: all)")
	f.IntVar(&tokTrainFlags.workers, "workers", 0, "reader goroutines (default GOMAXPROCS)")
	for _, c := range []*cobra.Command{tokEncodeCmd, tokDecodeCmd} {
		c.Flags().StringVar(&tokCodecFlags.path, "tokenizer", "", "tokenizer.json, or a directory holding one (required)")
		c.MarkFlagRequired("tokenizer")
	}
	tokEncodeCmd.Flags().BoolVar(&tokCodecFlags.special, "special", false, "add the post-processor's special tokens (BOS ... EOS)")
	tokenizerCmd.AddCommand(tokTrainCmd, tokEncodeCmd, tokDecodeCmd)
	root.AddCommand(tokenizerCmd)
}
