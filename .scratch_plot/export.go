package main

import (
	"errors"
	"log/slog"

	"github.com/difftrain/difftrain/checkpoint"
	"github.com/spf13/cobra"
)

// exportCmd writes a checkpoint's weights as model.safetensors with a
// config.json, for inspection or loading from Python.
var exportCmd = &cobra.Command{
	Use:   "export --checkpoint PATH --out DIR",
	Short: "Export a checkpoint's weights as safetensors with a config.json",
	Long: `export verifies a checkpoint (every file against its manifest), then writes
DIR/model.safetensors (the weights, dtype F32) and DIR/config.json (the architecture:
layers, width, heads, vocabulary, norms, multipliers and noise type, plus the run's
identity), which Python loads with safetensors.torch.load_file and json.load.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		if exportFlags.checkpoint == "" || exportFlags.out == "" {
			return errors.New("export: --checkpoint and --out are required")
		}
		if err := checkpoint.Export(exportFlags.checkpoint, exportFlags.out, exportFlags.force); err != nil {
			return err
		}
		slog.Info("exported checkpoint", "checkpoint", exportFlags.checkpoint, "out", exportFlags.out)
		return nil
	},
}

var exportFlags struct {
	checkpoint, out string
	force           bool
}

func init() {
	f := exportCmd.Flags()
	f.StringVar(&exportFlags.checkpoint, "checkpoint", "", "checkpoint directory (step-NNNNNNNN) to export")
	f.StringVar(&exportFlags.out, "out", "", "output directory for model.safetensors and config.json")
	f.BoolVar(&exportFlags.force, "force", false, "replace existing files in --out")
	root.AddCommand(exportCmd)
}
