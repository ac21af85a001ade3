package device

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute/cpu"
	"github.com/difftrain/difftrain/compute/cuda"
	"github.com/difftrain/difftrain/compute/cuda/cudaemu"
)

// cudaWorks reports whether this machine has a usable GPU.
func cudaWorks(t *testing.T) (bool, error) {
	t.Helper()
	be, err := cuda.New(cuda.Options{})
	if err != nil {
		return false, err
	}
	be.Close()
	return true, nil
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		kind, prec string
		want       string
	}{
		{"cpu", "bf16", "precision bf16 needs --device cuda"},
		{"cpu", "tf32", "precision tf32 needs --device cuda"},
		{"tpu", "fp32", `unknown kind "tpu"`},
		{"auto", "fp16", `unknown precision "fp16"`},
		{"cuda", "int8", `unknown precision "int8"`},
	}
	for _, tc := range tests {
		be, err := Open(tc.kind, tc.prec, 1)
		if err == nil {
			be.Close()
			t.Errorf("Open(%q, %q) succeeded", tc.kind, tc.prec)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q, %q) = %v, want it to say %q", tc.kind, tc.prec, err, tc.want)
		}
	}
}

func TestOpenCPU(t *testing.T) {
	for _, prec := range []string{"fp32", "FP32", ""} {
		be, err := Open("cpu", prec, 1)
		if err != nil {
			t.Fatalf("Open(cpu, %q): %v", prec, err)
		}
		if _, ok := be.(*cpu.Backend); !ok {
			t.Errorf("Open(cpu) returned %T", be)
		}
		be.Close()
	}
}

// TestCUDAWithoutGPU checks the clear error of --device cuda on a machine
// without a driver or device, and that auto falls back to the CPU with one
// warning that carries the reason.
func TestCUDAWithoutGPU(t *testing.T) {
	ok, cerr := cudaWorks(t)
	if ok {
		t.Skip("a CUDA device is present; the fallback is not exercised here")
	}
	if !errors.Is(cerr, cuda.ErrNoLibrary) && !errors.Is(cerr, cuda.ErrNoDevice) && !errors.Is(cerr, cuda.ErrDriverTooOld) {
		t.Fatalf("cuda.New error %v is none of ErrNoLibrary, ErrNoDevice, ErrDriverTooOld", cerr)
	}
	_, err := Open("cuda", "bf16", 1)
	if err == nil || !strings.Contains(err.Error(), cerr.Error()) {
		t.Fatalf("Open(cuda) = %v, want the cuda error %v", err, cerr)
	}
	t.Logf("Open(cuda): %v", err)

	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(old)
	for _, prec := range []string{"fp32", "bf16"} {
		logs.Reset()
		be, err := Open("auto", prec, 1)
		if err != nil {
			t.Fatalf("Open(auto, %s): %v", prec, err)
		}
		if _, ok := be.(*cpu.Backend); !ok {
			t.Errorf("Open(auto) returned %T, want the cpu backend", be)
		}
		be.Close()
		out := logs.String()
		if strings.Count(out, "CUDA unavailable") != 1 ||
			!strings.Contains(out, cerr.Error()[:min(len(cerr.Error()), 40)]) {
			t.Errorf("auto fallback logged %q; want one warning with the reason %q", out, cerr)
		}
		if prec == "bf16" && !strings.Contains(out, "asked for bf16") {
			t.Errorf("fallback from bf16 does not say the precision changed: %q", out)
		}
	}
}

// TestAutoUsesGPU checks that auto opens CUDA when it works: on a GPU, or
// else on the CPU emulation of the driver (package cudaemu). It must stay the
// last test of the file: once loaded, the emulator stays for the process.
func TestAutoUsesGPU(t *testing.T) {
	if ok, gpuErr := cudaWorks(t); !ok {
		if os.Getenv(cuda.RequireGPUEnv) != "" {
			t.Fatalf("%s is set but CUDA does not open: %v", cuda.RequireGPUEnv, gpuErr)
		}
		if err := cudaemu.Use(t.TempDir(), cuda.KernelSource()); err != nil {
			t.Skipf("no usable CUDA device (%v) and no emulator: %v", gpuErr, err)
		}
		if _, _, err := cuda.LoadLibraries(); err != nil {
			t.Skipf("no usable CUDA device, and no NVRTC for the emulator: %v", err)
		}
	}
	be, err := Open("auto", "tf32", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	cb, ok := be.(*cuda.Backend)
	if !ok {
		t.Fatalf("Open(auto) with a GPU returned %T", be)
	}
	if cb.Info().Precision != cuda.TF32 {
		t.Errorf("precision %v, want tf32", cb.Info().Precision)
	}
	t.Log(be.Name())
}
