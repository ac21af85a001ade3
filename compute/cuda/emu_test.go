package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// EmulatorEnv is set in the child process that TestEmulated starts.
const EmulatorEnv = "DIFFTRAIN_CUDA_EMULATOR"

// TestEmulated runs the GPU tests (conformance suite, CPU parity of every op,
// determinism, downloads) against a CPU emulation of the CUDA driver and
// cuBLAS (testdata/emu), so that the whole backend — argument packing,
// buffer handling, the row-major/column-major GEMM mapping, every kernel of
// kernels.cu — is exercised on machines without a GPU. The kernels still
// compile with the real NVRTC for sm_90 first. The emulator runs kernels
// with real barriers but not on a GPU: races between blocks, warp timing and
// cuBLAS's own kernels are for scripts/gpu-check.sh.
func TestEmulated(t *testing.T) {
	if os.Getenv(EmulatorEnv) != "" || os.Getenv(RequireGPUEnv) != "" {
		t.Skip("inside the emulated run, or on a real GPU")
	}
	libsOrSkip(t) // NVRTC compiles the kernels
	cxx, err := exec.LookPath("g++")
	if err != nil {
		if requireLibs() {
			t.Fatalf("g++ is needed for the CUDA emulator in CI: %v", err)
		}
		t.Skipf("no g++ for the CUDA emulator: %v", err)
	}
	dir := t.TempDir()
	lib := filepath.Join(dir, "libcuda.so.1")
	build := exec.Command(cxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-pthread", "-o", lib,
		filepath.Join("testdata", "emu", "emu.cc"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the emulator: %v\n%s", err, out)
	}
	// The same library serves as cuBLAS.
	if err := os.Link(lib, filepath.Join(dir, "libcublas.so.12")); err != nil {
		t.Fatal(err)
	}
	tests := "^(TestConformance|TestParity|TestParityTrainingShapes|TestParityLossVocab50304|" +
		"TestParityAttentionSeq1024|TestDeterministic|TestDownloads)$"
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
}
