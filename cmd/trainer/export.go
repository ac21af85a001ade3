package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/difftrain/difftrain/checkpoint"
	"github.com/difftrain/difftrain/tokenizer"
	"github.com/spf13/cobra"
)

// exportCmd writes a checkpoint's weights as model.safetensors with a
// config.json and the run's tokenizer, for inspection or loading from
// Python.
var exportCmd = &cobra.Command{
	Use:   "export --checkpoint PATH --out DIR",
	Short: "Export a checkpoint's weights as safetensors with a config.json and its tokenizer",
	Long: `export verifies a checkpoint (every file against its manifest), then writes
DIR/model.safetensors (the weights, dtype F32) and DIR/config.json (the architecture:
layers, width, heads, vocabulary, norms, multipliers and noise type, the special token
ids, plus the run's identity), which Python loads with safetensors.torch.load_file and
json.load.

For a run on a Hugging Face tokenizer it also writes DIR/tokenizer.json (byte for byte
the file the run was trained with, which the checkpoint carries), tokenizer_config.json
and special_tokens_map.json (BOS, EOS, PAD and MASK, ids 0-3), so that
AutoTokenizer.from_pretrained(DIR) loads it. A checkpoint that carries no tokenizer file
(written before checkpoints carried one) needs --tokenizer: the dataset's copy, checked
against the checkpoint's record of it. The byte-level tokenizer has no file.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		if exportFlags.checkpoint == "" || exportFlags.out == "" {
			return errors.New("export: --checkpoint and --out are required")
		}
		opt := checkpoint.ExportOptions{Force: exportFlags.force}
		if exportFlags.tokenizer != "" {
			t, err := tokenizer.Load(exportFlags.tokenizer)
			if err != nil {
				return fmt.Errorf("export: --tokenizer: %w", err)
			}
			opt.Tokenizer = t.File()
		}
		files, err := checkpoint.ExportWith(exportFlags.checkpoint, exportFlags.out, opt)
		if err != nil {
			return err
		}
		slog.Info("exported checkpoint", "checkpoint", exportFlags.checkpoint, "out", exportFlags.out, "files", files)
		return nil
	},
}

var exportFlags struct {
	checkpoint, out, tokenizer string
	force                      bool
}

func init() {
	f := exportCmd.Flags()
	f.StringVar(&exportFlags.checkpoint, "checkpoint", "", "checkpoint directory (step-NNNNNNNN) to export")
	f.StringVar(&exportFlags.out, "out", "", "output directory for model.safetensors, config.json and the tokenizer files")
	f.StringVar(&exportFlags.tokenizer, "tokenizer", "", "tokenizer.json (or a dataset directory holding one) for a checkpoint that carries none")
	f.BoolVar(&exportFlags.force, "force", false, "replace existing files in --out")
	root.AddCommand(exportCmd)
}
