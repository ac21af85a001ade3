package cuda

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// requireLibs is true where the CUDA libraries must be present (CI installs
// Debian's libcublas11 and libnvrtc11.2): a missing library fails the test
// instead of skipping it.
func requireLibs() bool {
	return os.Getenv("CI") != "" || os.Getenv("DIFFTRAIN_REQUIRE_CUDA_LIBS") != ""
}

func libsOrSkip(t *testing.T) {
	t.Helper()
	if _, _, err := LoadLibraries(); err != nil {
		if requireLibs() {
			t.Fatalf("CUDA libraries required here (CI): %v", err)
		}
		t.Skipf("CUDA libraries not installed (apt-get install libcublas11 libnvrtc11.2): %v", err)
	}
}

func TestLoadLibrariesResolvesEverySymbol(t *testing.T) {
	libsOrSkip(t)
	for _, k := range []libKind{libCublas, libNVRTC} {
		path := loaded[k]
		if path == "" {
			t.Fatalf("%s: loaded from nowhere", k)
		}
		// Loading resolves every symbol or fails; check again explicitly,
		// naming each symbol the backend uses.
		if err := checkLibrary(k, path); err != nil {
			t.Fatalf("%s (%s): %v", k, path, err)
		}
		syms := symbols(k)
		if len(syms) < 5 {
			t.Fatalf("%s: only %d symbols listed", k, len(syms))
		}
		t.Logf("%s: %s: %d symbols resolved: %s", k, path, len(syms), strings.Join(syms, " "))
	}
	ma, mi, err := NVRTCVersion()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NVRTC %d.%d", ma, mi)
}

func TestLoadErrors(t *testing.T) {
	// A library that exists but is not the one asked for: every cuBLAS
	// symbol is missing from libm, and the error names the first.
	const libm = "libm.so.6"
	tests := []struct {
		name   string
		kind   libKind
		paths  []string
		want   []string
		symbol bool
	}{
		{"missing driver", libDriver, []string{"libcuda-does-not-exist.so.1"},
			[]string{"CUDA driver", "libcuda-does-not-exist.so.1", LibDirsEnv}, false},
		{"missing cublas", libCublas, []string{"/nonexistent/libcublas.so.12", "libcublas-nope.so.11"},
			[]string{"cuBLAS", "/nonexistent/libcublas.so.12", "libcublas-nope.so.11"}, false},
		{"wrong library", libCublas, []string{libm}, []string{"cuBLAS", "lacks symbol cublasCreate_v2"}, true},
		{"wrong nvrtc", libNVRTC, []string{libm}, []string{"NVRTC", "lacks symbol nvrtcVersion"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkPaths(tc.kind, tc.paths)
			if err == nil {
				t.Fatal("no error")
			}
			var le *LoadError
			if !errors.As(err, &le) || !errors.Is(err, ErrNoLibrary) {
				t.Fatalf("error %T %v is not a *LoadError wrapping ErrNoLibrary", err, err)
			}
			if (le.Symbol != "") != tc.symbol {
				t.Errorf("Symbol = %q, want set: %v", le.Symbol, tc.symbol)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// checkPaths is loadFrom without keeping anything loaded.
func checkPaths(k libKind, paths []string) error {
	var last error
	for _, p := range paths {
		err := checkLibrary(k, p)
		if err == nil {
			return nil
		}
		var le *LoadError
		if errors.As(err, &le) && le.Symbol != "" {
			return err
		}
		last = err
	}
	e := last.(*LoadError)
	e.Tried = paths
	return e
}

func TestKernelTable(t *testing.T) {
	if len(kernelNames) != int(numKernels) {
		t.Fatalf("%d kernel names, %d kernel constants", len(kernelNames), numKernels)
	}
	for _, name := range kernelNames {
		if !strings.Contains(kernelSource, `extern "C" __global__ void `+name+"(") {
			t.Errorf("kernel %s is not defined in kernels.cu", name)
		}
	}
}

func TestSonameMajor(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"libcublas.so.12", 12}, {"libnvrtc.so.11.2", 11}, {"libcublas.so", 0}, {"libcuda.so.1", 1},
		{"/usr/lib/libcublas.so.13", 13}, {"libx.so.abc", 0},
	}
	for _, tc := range tests {
		if got := sonameMajor(filepath.Base(tc.in)); got != tc.want {
			t.Errorf("sonameMajor(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestChooseTarget(t *testing.T) {
	sup := []int{52, 60, 70, 80, 86, 90}
	tests := []struct {
		sm, arch int
		ptx, err bool
	}{
		{90, 90, false, false}, {80, 80, false, false}, {89, 86, true, false}, {100, 90, true, false},
		{50, 0, false, true},
	}
	for _, tc := range tests {
		arch, ptx, err := chooseTarget(tc.sm, sup)
		if (err != nil) != tc.err || arch != tc.arch || ptx != tc.ptx {
			t.Errorf("chooseTarget(%d) = %d, %v, %v; want %d, %v, err %v", tc.sm, arch, ptx, err, tc.arch, tc.ptx, tc.err)
		}
	}
	if arch, ptx, err := chooseTarget(75, nil); arch != 75 || ptx || err != nil {
		t.Errorf("chooseTarget without a list = %d, %v, %v", arch, ptx, err)
	}
}

// TestCompileKernels compiles every kernel for sm_80 (A100) and sm_90
// (H100/H200) with the installed NVRTC. It needs no GPU.
func TestCompileKernels(t *testing.T) {
	t.Parallel()
	libsOrSkip(t)
	sup, err := SupportedArchs()
	if err != nil {
		t.Fatal(err)
	}
	ma, mi, _ := NVRTCVersion()
	t.Logf("NVRTC %d.%d supports %v", ma, mi, sup)
	archs := []int{80, 90}
	if sup != nil && !slices.Contains(sup, 90) {
		newest := slices.Max(sup)
		t.Logf("NVRTC %d.%d does not support sm_90; testing sm_80 and sm_%d", ma, mi, newest)
		archs = []int{80, newest}
	}
	cache := t.TempDir()
	for i, arch := range archs {
		// Cubins for both; PTX (the path for devices newer than NVRTC)
		// for the first only, to keep the test short.
		modes := []bool{false}
		if i == 0 {
			modes = append(modes, true)
		}
		for _, ptx := range modes {
			img, err := compileCached(cache, arch, ptx)
			if err != nil {
				t.Fatalf("sm_%d (ptx %v): %v", arch, ptx, err)
			}
			if len(img.Data) < 1000 {
				t.Fatalf("sm_%d: image of %d bytes", arch, len(img.Data))
			}
			for _, name := range kernelNames {
				if !strings.Contains(string(img.Data), name) {
					t.Errorf("sm_%d (ptx %v): kernel %s missing from the image", arch, ptx, name)
				}
			}
			// The second call is served from the cache, byte for byte.
			again, err := compileCached(cache, arch, ptx)
			if err != nil || string(again.Data) != string(img.Data) {
				t.Fatalf("sm_%d: cached image differs (err %v)", arch, err)
			}
		}
	}
	entries, err := os.ReadDir(cache)
	if err != nil || len(entries) != 3 {
		t.Fatalf("cache holds %d entries (err %v), want 3", len(entries), err)
	}
}

func TestCompileErrorIsReported(t *testing.T) {
	libsOrSkip(t)
	_, _, err := compileSource(`extern "C" __global__ void k(float *x) { x[0] = undefined_thing; }`, 80, false)
	if err == nil || !strings.Contains(err.Error(), "undefined_thing") {
		t.Fatalf("compile error %v does not carry the compiler log", err)
	}
}
