// Package cudaemu builds a CPU emulation of the CUDA driver and cuBLAS (the
// parts compute/cuda uses) so that GPU code paths can be tested end to end on
// machines without a GPU: the real NVRTC still compiles the kernels, then the
// emulator runs the same kernels.cu, compiled as C++, with real barriers
// between the threads of a block, and cuBLAS's GEMMs by their definition
// (bf16 operands widened, TF32 rounding in TF32 math mode). It needs g++.
//
// What it cannot show: races between blocks or warps on real hardware,
// memory-model or timing effects, and cuBLAS's own kernels; those are for
// scripts/gpu-check.sh on a GPU.
//
// Typical use, in a test binary of its own or a child process (the libraries
// stay loaded for the life of the process):
//
//	dir := t.TempDir()
//	if err := cudaemu.Use(dir, cuda.KernelSource()); err != nil { t.Skip(err) }
//	be, err := cuda.New(cuda.Options{}) // the emulated device, "CPU emulator"
package cudaemu

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

//go:embed emu.cc.in
var source string

// LibDirsEnv is the variable compute/cuda reads extra library directories
// from (cuda.LibDirsEnv; repeated here to keep this package free of cgo).
const LibDirsEnv = "DIFFTRAIN_CUDA_LIBS"

// Build compiles the emulator for kernelSource (cuda.KernelSource()) into
// dir as libcuda.so.1 and libcublas.so.12.
func Build(dir, kernelSource string) error {
	cxx, err := exec.LookPath("g++")
	if err != nil {
		return fmt.Errorf("cudaemu: g++ is needed to build the emulator: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernels.cu"), []byte(kernelSource), 0o644); err != nil {
		return fmt.Errorf("cudaemu: %w", err)
	}
	src := filepath.Join(dir, "emu.cc")
	if err := os.WriteFile(src, []byte(source), 0o644); err != nil {
		return fmt.Errorf("cudaemu: %w", err)
	}
	lib := filepath.Join(dir, "libcuda.so.1")
	cmd := exec.Command(cxx, "-std=c++17", "-O2", "-U_FORTIFY_SOURCE", "-shared", "-fPIC", "-o", lib, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cudaemu: building the emulator: %w\n%s", err, out)
	}
	// The same library serves as cuBLAS.
	if err := os.Link(lib, filepath.Join(dir, "libcublas.so.12")); err != nil {
		return fmt.Errorf("cudaemu: %w", err)
	}
	return nil
}

// Use builds the emulator into dir and points this process's CUDA loader at
// it (LibDirsEnv). Call it before anything tries to open the CUDA backend.
func Use(dir, kernelSource string) error {
	if err := Build(dir, kernelSource); err != nil {
		return err
	}
	return os.Setenv(LibDirsEnv, dir)
}
