package cuda

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute/cuda/cudaemu"
)

// EmulatorEnv is set in the child process that TestEmulated starts.
const EmulatorEnv = "DIFFTRAIN_CUDA_EMULATOR"

// TestEmulated runs the GPU tests (conformance suite, CPU parity of every op,
// determinism, downloads) against a CPU emulation of the CUDA driver and
// cuBLAS (package cudaemu), so that the whole backend — argument packing,
// buffer handling, the row-major/column-major GEMM mapping, every kernel of
// kernels.cu — is exercised on machines without a GPU. The kernels still
// compile with the real NVRTC for sm_90 first. The emulator runs kernels
// with real barriers but not on a GPU: races between blocks, warp timing and
// cuBLAS's own kernels are for scripts/gpu-check.sh.
func TestEmulated(t *testing.T) {
	t.Parallel()
	if os.Getenv(EmulatorEnv) != "" || os.Getenv(RequireGPUEnv) != "" {
		t.Skip("inside the emulated run, or on a real GPU")
	}
	libsOrSkip(t) // NVRTC compiles the kernels
	dir := t.TempDir()
	if err := cudaemu.Build(dir, KernelSource()); err != nil {
		if _, lerr := exec.LookPath("g++"); lerr != nil && !requireLibs() {
			t.Skipf("no g++ for the CUDA emulator: %v", err)
		}
		t.Fatal(err)
	}
	tests := "^(TestConformance|TestParity|TestParityTrainingShapes|TestParityLossVocab50304|" +
		"TestParityAttentionSeq1024|TestParityColumnSums|TestDeterministic|TestDownloads)$"
	cmd := exec.Command(os.Args[0], "-test.run", tests, "-test.short", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), EmulatorEnv+"=1", RequireGPUEnv+"=1", LibDirsEnv+"="+dir,
		"XDG_CACHE_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	var fails []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "--- FAIL") || strings.Contains(l, "_test.go:") && !strings.Contains(l, "relative error") {
			fails = append(fails, l)
		}
	}
	if err != nil {
		t.Fatalf("emulated GPU tests failed: %v\n%s", err, strings.Join(fails, "\n"))
	}
	if !strings.Contains(string(out), "CPU emulator") && !strings.Contains(string(out), "--- PASS: TestConformance") {
		t.Fatalf("the emulated run did not run the GPU tests:\n%s", out)
	}
	t.Logf("emulated GPU tests passed (%d lines of output)", strings.Count(string(out), "\n"))

	// A driver without a device, and one too old: New's errors say so.
	for _, env := range []string{"DIFFTRAIN_EMU_DEVICES=0", "DIFFTRAIN_EMU_DRIVER=10020"} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestEmulatedNewError$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), EmulatorEnv+"=1", env, LibDirsEnv+"="+dir, "XDG_CACHE_HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestEmulatedNewError") {
			t.Errorf("%s: %v\n%s", env, err, out)
		}
	}
}

// TestEmulatedNewError runs in TestEmulated's children with a broken
// emulated driver.
func TestEmulatedNewError(t *testing.T) {
	var want error
	switch {
	case os.Getenv(EmulatorEnv) == "":
		t.Skip("run by TestEmulated")
	case os.Getenv("DIFFTRAIN_EMU_DEVICES") == "0":
		want = ErrNoDevice
	case os.Getenv("DIFFTRAIN_EMU_DRIVER") != "":
		want = ErrDriverTooOld
	default:
		t.Skip("no error emulated")
	}
	be, err := New(Options{})
	if err == nil {
		be.Close()
		t.Fatalf("New succeeded, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("New: %v, want %v", err, want)
	}
	t.Logf("New: %v", err)
}
