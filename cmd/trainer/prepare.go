package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/difftrain/difftrain/dataset"
)

var prepareFlags struct {
	inputs      []string
	out         string
	seqLen      int
	format      string
	field       string
	tokensField string
	tokenizer   string
	valFraction float64
	shardMB     float64
	maxMB       float64
	ext         []string
	skipDirs    []string
	workers     int
	progress    bool
}

var prepareCmd = &cobra.Command{
	Use:   "prepare",
	Short: "Tokenize text, JSONL or Parquet into Arrow token shards",
	Long: `prepare turns text files, directories of them, JSONL files (also .gz, .zst) or
Parquet files (a file, a directory, a Hugging Face dataset folder) into a dataset of
Arrow token shards: byte-level tokens (BOS=0 EOS=1 PAD=2 MASK=3, byte b = 4+b),
documents packed into sequences of --seq-len tokens with an EOS between them
(gidd-spec.md §8.4), a held-out validation split chosen per document, shards of
about --shard-mb MiB, and manifest.json written last. The same input and flags
give byte-identical output; an interrupted run leaves no dataset a reader would
accept, and running it again completes it.

With no --input, the corpus is the Go standard library source of the installed
toolchain ($(go env GOROOT)/src, *.go outside testdata: about 88 MB).

Parquet is streamed row group by row group in record batches of about 1 MiB.
--field names a string or binary column; --tokens-field reads a column of
integer lists (already tokenized documents), each id checked against the
vocabulary. Null rows are skipped and counted. In a Hugging Face dataset
folder (data/train-*.parquet, data/validation-*.parquet) the validation files
make the val split instead of --val-fraction, and test files are not read.`,
	Args: cobra.NoArgs,
	RunE: runPrepare,
}

func init() {
	f := prepareCmd.Flags()
	f.StringSliceVar(&prepareFlags.inputs, "input", nil, "input files or directories (repeatable; default: the Go standard library source)")
	f.StringVar(&prepareFlags.out, "out", "data", "output dataset directory")
	f.IntVar(&prepareFlags.seqLen, "seq-len", 256, "tokens per training sequence")
	f.StringVar(&prepareFlags.format, "format", "auto", "input format: auto (by file name: .parquet, .jsonl[.gz|.zst], else text), text (a file is a document), jsonl (a line is a document) or parquet (a row is a document)")
	f.StringVar(&prepareFlags.field, "field", "text", "JSONL field or Parquet column holding the document text")
	f.StringVar(&prepareFlags.tokensField, "tokens-field", "", "Parquet column of already tokenized documents (lists of integer ids), read instead of --field")
	f.StringVar(&prepareFlags.tokenizer, "tokenizer", "", "Hugging Face tokenizer.json, or a directory holding one, with ids 0-3 BOS/EOS/PAD/MASK (default: byte-level tokens); copied beside the shards")
	f.Float64Var(&prepareFlags.valFraction, "val-fraction", 0.01, "share of documents held out as the validation split")
	f.Float64Var(&prepareFlags.shardMB, "shard-mb", 64, "target shard size in MiB")
	f.Float64Var(&prepareFlags.maxMB, "max-mb", 0, "stop reading input after this many MiB (0: all)")
	f.StringSliceVar(&prepareFlags.ext, "ext", nil, "in directories, keep only files with these extensions, e.g. .txt,.md (default: all; .go for the default corpus)")
	f.StringSliceVar(&prepareFlags.skipDirs, "skip-dir", nil, "in directories, skip subdirectories with these names (default: none; testdata for the default corpus)")
	f.IntVar(&prepareFlags.workers, "workers", 0, "tokenizer goroutines (default GOMAXPROCS)")
	f.BoolVar(&prepareFlags.progress, "progress", true, "show a progress bar when stderr is a terminal")
	root.AddCommand(prepareCmd)
}

func runPrepare(cmd *cobra.Command, _ []string) error {
	pf := prepareFlags
	o := dataset.PrepareOptions{
		Inputs: pf.inputs, Out: pf.out, Format: pf.format, Field: pf.field, TokensField: pf.tokensField, SeqLen: pf.seqLen,
		ValFraction: pf.valFraction, ShardMB: pf.shardMB, MaxMB: pf.maxMB,
		Ext: pf.ext, SkipDirs: pf.skipDirs, Workers: pf.workers,
	}
	if pf.tokenizer != "" {
		t, err := dataset.LoadTokenizer(pf.tokenizer)
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		o.Tokenizer = t
	}
	if len(o.Inputs) == 0 {
		if err := defaultCorpus(cmd, &o); err != nil {
			return err
		}
		slog.Info("prepare: no --input; using the Go standard library source", "dir", o.Inputs[0])
	}
	var bar *progressBar
	if pf.progress && term.IsTerminal(int(os.Stderr.Fd())) {
		bar = newProgressBar("prepare")
		o.Progress = bar.update
	}
	start := time.Now()
	st, err := dataset.Prepare(cmd.Context(), o)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	el := time.Since(start)
	m := st.Manifest
	slog.Info("prepare: done",
		"out", pf.out, "files", st.Files, "binary_skipped", st.Binary, "null_rows_skipped", st.Nulls, "capped", st.MaxMBCapped,
		"docs_train", st.Documents[dataset.SplitTrain], "docs_val", st.Documents[dataset.SplitVal],
		"seqs_train", st.Sequences[dataset.SplitTrain], "seqs_val", st.Sequences[dataset.SplitVal],
		"shards", len(m.Shards), "tokens", st.Tokens,
		"dropped_tail_tokens", st.Dropped[dataset.SplitTrain]+st.Dropped[dataset.SplitVal])
	fmt.Fprintf(cmd.OutOrStdout(), "prepared %s: %d train + %d val sequences of %d tokens in %d shards from %.1f MB of text in %.2fs (%.1f MB/s)\n",
		pf.out, st.Sequences[dataset.SplitTrain], st.Sequences[dataset.SplitVal], m.SeqLen, len(m.Shards),
		float64(st.InputBytes)/1e6, el.Seconds(), float64(st.InputBytes)/1e6/el.Seconds())
	return nil
}

// progressBar draws one self-overwriting line on a terminal.
type progressBar struct {
	label string
	start time.Time
	last  time.Time
	width int
}

func newProgressBar(label string) *progressBar {
	w := 80
	if tw, _, err := term.GetSize(int(os.Stderr.Fd())); err == nil && tw > 40 {
		w = tw
	}
	return &progressBar{label: label, start: time.Now(), width: w}
}

func (b *progressBar) update(done, total int64) {
	now := time.Now()
	if now.Sub(b.last) < 100*time.Millisecond && done < total {
		return
	}
	b.last = now
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	secs := now.Sub(b.start).Seconds()
	rate := float64(done) / 1e6 / max(secs, 1e-9)
	eta := "--"
	if rate > 0 && frac > 0 {
		eta = fmt.Sprintf("%.0fs", float64(total-done)/1e6/rate)
	}
	info := fmt.Sprintf(" %3.0f%% %.1f/%.1f MB %.1f MB/s ETA %s", 100*frac, float64(done)/1e6, float64(total)/1e6, rate, eta)
	cells := max(10, b.width-len(b.label)-len(info)-4)
	fill := min(cells, int(frac*float64(cells)))
	fmt.Fprintf(os.Stderr, "\r%s [%s%s]%s", b.label, strings.Repeat("=", fill), strings.Repeat(" ", cells-fill), info)
}

func (b *progressBar) finish() { fmt.Fprintln(os.Stderr) }

// defaultCorpus points o at the Go standard library source, with its
// extension and skip lists unless --ext or --skip-dir were given.
func defaultCorpus(cmd *cobra.Command, o *dataset.PrepareOptions) error {
	dir, ext, skip, err := dataset.DefaultCorpus()
	if err != nil {
		return err
	}
	o.Inputs = []string{dir}
	if !cmd.Flags().Changed("ext") {
		o.Ext = ext
	}
	if !cmd.Flags().Changed("skip-dir") {
		o.SkipDirs = skip
	}
	return nil
}
