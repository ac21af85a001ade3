package cuda

/*
#include <stdlib.h>
#include "api.h"
*/
import "C"

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"
)

//go:embed kernels.cu
var kernelSource string

// KernelSource returns the CUDA C source of the backend's kernels (for the
// emulator in package cudaemu).
func KernelSource() string { return kernelSource }

// kernelNames lists every kernel of kernels.cu that the backend launches.
var kernelNames = []string{
	"k_scale", "k_axpy", "k_add_bias", "k_relu_sq", "k_relu_sq_back", "k_sumsq_part", "k_sum_final",
	"k_col_sum_part", "k_col_sum_final", "k_rmsnorm", "k_rmsnorm_back", "k_rope", "k_embedding", "k_embedding_back",
	"k_attn_softmax", "k_attn_sink_add", "k_attn_softmax_back", "k_gidd_loss", "k_laprop", "k_adamw",
	"k_f32_to_bf16", "k_q8_block",
}

// nvrtcOptions are passed to every compilation (plus the architecture).
var nvrtcOptions = []string{"--std=c++14", "--device-as-default-execution-space"}

// NVRTCVersion returns the loaded NVRTC's version.
func NVRTCVersion() (major, minor int, err error) {
	if _, err := load(libNVRTC, 0); err != nil {
		return 0, 0, err
	}
	var ma, mi C.int
	if r := C.dt_nvrtcVersion(&ma, &mi); r != 0 {
		return 0, 0, fmt.Errorf("nvrtcVersion: %s", C.GoString(C.dt_nvrtcErrorString(r)))
	}
	return int(ma), int(mi), nil
}

// SupportedArchs returns the SM versions (e.g. 80, 90) the loaded NVRTC can
// compile for, or nil when it is too old to say (before 11.2).
func SupportedArchs() ([]int, error) {
	if _, err := load(libNVRTC, 0); err != nil {
		return nil, err
	}
	if C.dt_nvrtcHasSupportedArchs() == 0 {
		return nil, nil
	}
	buf := make([]C.int, 128)
	var n C.int
	if r := C.dt_nvrtcSupportedArchs(&buf[0], C.int(len(buf)), &n); r != 0 {
		return nil, fmt.Errorf("nvrtcGetSupportedArchs: %s", C.GoString(C.dt_nvrtcErrorString(r)))
	}
	if int(n) > len(buf) {
		return nil, fmt.Errorf("nvrtcGetSupportedArchs: %d architectures, more than expected", n)
	}
	out := make([]int, n)
	for i := range out {
		out[i] = int(buf[i])
	}
	return out, nil
}

// Image is compiled device code: a cubin for one SM version, or PTX for a
// virtual architecture that the driver JIT-compiles.
type Image struct {
	Arch int    // e.g. 90
	PTX  bool   // PTX text (NUL-terminated) rather than a cubin
	Data []byte // what cuModuleLoadData takes
}

// chooseTarget picks how to compile for a device of SM version sm: a cubin
// when NVRTC supports sm, else PTX for the newest supported version below it.
func chooseTarget(sm int, supported []int) (arch int, ptx bool, err error) {
	if supported == nil || slices.Contains(supported, sm) {
		return sm, false, nil
	}
	best := 0
	for _, a := range supported {
		if a <= sm && a > best {
			best = a
		}
	}
	if best == 0 {
		return 0, false, fmt.Errorf("NVRTC supports none of sm_%d or older (it supports %v)", sm, supported)
	}
	return best, true, nil
}

// compileSource compiles src for arch with NVRTC, no caching.
func compileSource(src string, arch int, ptx bool) ([]byte, string, error) {
	if _, err := load(libNVRTC, 0); err != nil {
		return nil, "", err
	}
	kind := "sm"
	if ptx {
		kind = "compute"
	}
	opts := append([]string{fmt.Sprintf("--gpu-architecture=%s_%d", kind, arch)}, nvrtcOptions...)
	copts := make([]*C.char, len(opts))
	for i, o := range opts {
		copts[i] = C.CString(o)
		defer C.free(unsafe.Pointer(copts[i]))
	}
	csrc := C.CString(src)
	defer C.free(unsafe.Pointer(csrc))
	cname := C.CString("difftrain_kernels.cu")
	defer C.free(unsafe.Pointer(cname))
	var out, clog *C.char
	var n C.size_t
	cptx := C.int(0)
	if ptx {
		cptx = 1
	}
	r := C.dt_nvrtcCompile(csrc, cname, &copts[0], C.int(len(copts)), cptx, &out, &n, &clog)
	var logText string
	if clog != nil {
		logText = strings.TrimRight(C.GoString(clog), "\x00\n ")
		C.free(unsafe.Pointer(clog))
	}
	if r != 0 {
		return nil, logText, fmt.Errorf("NVRTC compile for %s_%d: %s\n%s", kind, arch,
			C.GoString(C.dt_nvrtcErrorString(r)), logText)
	}
	data := C.GoBytes(unsafe.Pointer(out), C.int(n))
	C.free(unsafe.Pointer(out))
	if ptx && (len(data) == 0 || data[len(data)-1] != 0) {
		data = append(data, 0)
	}
	return data, logText, nil
}

// CacheDir is where compiled kernels are kept: $XDG_CACHE_HOME/difftrain/nvrtc
// (or the user cache directory).
func CacheDir() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		base = d
	}
	return filepath.Join(base, "difftrain", "nvrtc")
}

// cacheKey names the image of src for arch: a hash of everything that
// changes the output.
func cacheKey(src string, arch int, ptx bool, nvrtcMajor, nvrtcMinor int) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%v\x00%d.%d\x00", src, nvrtcOptions, nvrtcMajor, nvrtcMinor)
	ext, kind := "cubin", "sm"
	if ptx {
		ext, kind = "ptx", "compute"
	}
	return fmt.Sprintf("%s-%s_%d.%s", hex.EncodeToString(h.Sum(nil))[:24], kind, arch, ext)
}

// CompileKernels returns the backend's kernels compiled for arch, from the
// on-disk cache when present. Cache failures only cost a recompile.
func CompileKernels(arch int, ptx bool) (*Image, error) { return compileCached(CacheDir(), arch, ptx) }

// compileCached is CompileKernels with the cache in dir ("": none).
func compileCached(dir string, arch int, ptx bool) (*Image, error) {
	ma, mi, err := NVRTCVersion()
	if err != nil {
		return nil, err
	}
	var path string
	if dir != "" {
		path = filepath.Join(dir, cacheKey(kernelSource, arch, ptx, ma, mi))
		if data, err := os.ReadFile(path); err == nil && len(data) > 0 {
			return &Image{Arch: arch, PTX: ptx, Data: data}, nil
		}
	}
	data, logText, err := compileSource(kernelSource, arch, ptx)
	if err != nil {
		return nil, err
	}
	if logText != "" {
		slog.Debug("cuda: NVRTC log", "arch", arch, "log", logText)
	}
	if path != "" {
		if err := writeAtomic(path, data); err != nil {
			slog.Debug("cuda: kernel cache not written", "path", path, "err", err)
		}
	}
	return &Image{Arch: arch, PTX: ptx, Data: data}, nil
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
	}
	return werr
}
