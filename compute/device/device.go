// Package device opens the compute backend that the --device and
// --precision flags ask for: the CPU reference backend, the CUDA backend, or
// "auto", which tries CUDA and falls back to the CPU with one warning that
// says why.
package device

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/compute/cpu"
	"github.com/difftrain/difftrain/compute/cuda"
)

// Kinds and precisions accepted by Open, for flag help texts.
const (
	Kinds      = "cpu|cuda|auto"
	Precisions = "fp32|tf32|bf16"
)

// Open returns a backend. kind is "cpu", "cuda" or "auto"; precision is
// "fp32", "tf32" or "bf16" (GEMM precision; only fp32 on the CPU); threads
// sizes the CPU backend (0: GOMAXPROCS). With "auto", a CUDA failure of any
// kind (no driver, no device, missing library, driver too old) falls back to
// the CPU in fp32 with one slog warning naming the reason.
func Open(kind, precision string, threads int) (compute.Backend, error) {
	prec := strings.ToLower(precision)
	if prec == "" {
		prec = "fp32"
	}
	p, err := cuda.ParsePrecision(prec)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	switch strings.ToLower(kind) {
	case "cpu":
		if p != cuda.FP32 {
			return nil, fmt.Errorf("device: precision %s needs --device cuda; the cpu backend computes in fp32", prec)
		}
		return openCPU(threads)
	case "cuda", "gpu":
		be, err := cuda.New(cuda.Options{Precision: p})
		if err != nil {
			return nil, fmt.Errorf("device cuda: %w", err)
		}
		return be, nil
	case "auto", "":
		be, err := cuda.New(cuda.Options{Precision: p})
		if err == nil {
			return be, nil
		}
		cb, cerr := openCPU(threads)
		if cerr != nil {
			return nil, fmt.Errorf("device auto: cuda: %v; cpu: %w", err, cerr)
		}
		args := []any{"reason", err.Error(), "backend", cb.Name()}
		if p != cuda.FP32 {
			args = append(args, "precision", "fp32 (asked for "+prec+")")
		}
		slog.Warn("device auto: CUDA unavailable, using the CPU backend", args...)
		return cb, nil
	}
	return nil, fmt.Errorf("device: unknown kind %q (want %s)", kind, Kinds)
}

func openCPU(threads int) (compute.Backend, error) {
	be, err := cpu.New(cpu.Options{Threads: threads})
	if err != nil {
		return nil, fmt.Errorf("device cpu: %w", err)
	}
	return be, nil
}
