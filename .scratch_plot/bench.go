package main

import "github.com/spf13/cobra"

// benchCmd groups the benchmarks: `trainer bench step|gemm|allreduce`. Each
// subcommand lives in its own file and adds itself to benchCmd.
var benchCmd = &cobra.Command{
	Use:   "bench",
	Short: "Measure training-step, GEMM and allreduce throughput",
}

func init() { root.AddCommand(benchCmd) }
