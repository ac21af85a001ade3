// Command trainer is difftrain's single binary: it prepares data, trains
// (alone or as a member of a cluster), samples, evaluates, exports and
// benchmarks GIDD discrete diffusion language models.
//
// Each subcommand lives in its own file and registers itself on root in an
// init function.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

var (
	logFormat string
	logLevel  string
)

var root = &cobra.Command{
	Use:   "trainer",
	Short: "Distributed data-parallel trainer for GIDD discrete diffusion language models",
	Long: `trainer trains GIDD discrete diffusion language models (masked, uniform and hybrid
noise) on one machine or a cluster of them, following "Scaling Behavior of Discrete
Diffusion Language Models" (von Rütte et al., 2025).`,
	SilenceUsage:  true,
	SilenceErrors: true,
	PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
		return setupLogging(logFormat, logLevel)
	},
}

func init() {
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

func setupLogging(format, level string) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return fmt.Errorf("--log-format %q: want text or json", format)
	}
	slog.SetDefault(slog.New(h))
	return nil
}

func main() {
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "trainer:", err)
		os.Exit(1)
	}
}
