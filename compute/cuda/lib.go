package cuda

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "api.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// Library names tried in order. The driver is unversioned apart from its
// soname; cuBLAS and NVRTC are tried newest first. Debian's NVRTC 11.x is
// libnvrtc.so.11.2.
var (
	driverNames = []string{"libcuda.so.1", "libcuda.so"}
	cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}
	nvrtcNames  = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so.11.1",
		"libnvrtc.so.11.0", "libnvrtc.so"}
)

// LibDirsEnv names an environment variable with extra directories
// (colon-separated) searched for the libraries before the system's search
// path, e.g. a CUDA toolkit or a Python wheel's nvidia/*/lib.
const LibDirsEnv = "DIFFTRAIN_CUDA_LIBS"

// ErrNoLibrary is wrapped by errors about a library that could not be opened
// or lacks a symbol.
var ErrNoLibrary = errors.New("CUDA library not available")

// LoadError says which library could not be loaded and why.
type LoadError struct {
	Lib    string   // "CUDA driver", "cuBLAS" or "NVRTC"
	Tried  []string // names or paths tried
	Symbol string   // set when a library opened but lacked this symbol
	Detail string   // dlerror text of the last attempt
}

func (e *LoadError) Error() string {
	if e.Symbol != "" {
		return fmt.Sprintf("%s: %s lacks symbol %s (library too old or not %s)",
			e.Lib, e.Tried[len(e.Tried)-1], e.Symbol, e.Lib)
	}
	return fmt.Sprintf("%s: cannot load any of %s: %s (set %s to the directory holding it)",
		e.Lib, strings.Join(e.Tried, ", "), e.Detail, LibDirsEnv)
}

func (e *LoadError) Unwrap() error { return ErrNoLibrary }

type libKind int

const (
	libDriver libKind = C.DT_DRIVER
	libCublas libKind = C.DT_CUBLAS
	libNVRTC  libKind = C.DT_NVRTC
)

func (k libKind) String() string {
	switch k {
	case libDriver:
		return "CUDA driver"
	case libCublas:
		return "cuBLAS"
	case libNVRTC:
		return "NVRTC"
	}
	return "library " + strconv.Itoa(int(k))
}

func (k libKind) names() []string {
	switch k {
	case libDriver:
		return driverNames
	case libCublas:
		return cublasNames
	case libNVRTC:
		return nvrtcNames
	}
	return nil
}

var (
	loadMu sync.Mutex
	loaded [3]string // path or soname each library was loaded from
)

// sonameMajor returns the major version in a soname such as libcublas.so.12
// (12), or 0 when it has none.
func sonameMajor(name string) int {
	i := strings.Index(name, ".so.")
	if i < 0 {
		return 0
	}
	v := name[i+4:]
	if j := strings.IndexByte(v, '.'); j >= 0 {
		v = v[:j]
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0
	}
	return n
}

// candidates expands names with the directories of LibDirsEnv, keeping the
// bare name (the system search path) last for each.
func candidates(names []string) []string {
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv(LibDirsEnv)) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	var out []string
	for _, n := range names {
		for _, d := range dirs {
			out = append(out, filepath.Join(d, n))
		}
		out = append(out, n)
	}
	return out
}

// openOne tries to open path as library kind k; keep loads it for use.
func openOne(k libKind, path string, keep bool) (ok bool, missingSym, detail string) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var buf [512]C.char
	keepFlag := C.int(0)
	if keep {
		keepFlag = 1
	}
	switch C.dt_open(C.int(k), cpath, keepFlag, &buf[0], C.size_t(len(buf))) {
	case 0:
		return true, "", ""
	case -2:
		return false, C.GoString(&buf[0]), ""
	default:
		return false, "", C.GoString(&buf[0])
	}
}

// load opens the first usable library of kind k whose soname major version
// is at most maxMajor (0: any). It is a no-op once the library is loaded.
func load(k libKind, maxMajor int) (string, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if loaded[k] != "" {
		return loaded[k], nil
	}
	return loadFrom(k, candidates(k.names()), maxMajor)
}

func loadFrom(k libKind, paths []string, maxMajor int) (string, error) {
	e := &LoadError{Lib: k.String()}
	for _, p := range paths {
		if m := sonameMajor(filepath.Base(p)); maxMajor > 0 && m > maxMajor {
			continue
		}
		e.Tried = append(e.Tried, p)
		ok, sym, detail := openOne(k, p, true)
		if ok {
			loaded[k] = p
			return p, nil
		}
		if sym != "" {
			e.Symbol = sym
			return "", e
		}
		// Keep the first failure, unless a later candidate exists but does
		// not load (a missing dependency, say): that says more.
		if e.Detail == "" || !strings.Contains(detail, "No such file") && strings.Contains(e.Detail, "No such file") {
			e.Detail = detail
		}
	}
	if len(e.Tried) == 0 {
		e.Detail = fmt.Sprintf("no candidate works with a driver of major version %d", maxMajor)
		e.Tried = paths
	}
	return "", e
}

// checkLibrary opens path as library kind k, resolves every symbol the
// backend uses, and closes it again. It reports what is missing.
func checkLibrary(k libKind, path string) error {
	ok, sym, detail := openOne(k, path, false)
	if ok {
		return nil
	}
	return &LoadError{Lib: k.String(), Tried: []string{path}, Symbol: sym, Detail: detail}
}

// symbols lists the symbols resolved for library kind k.
func symbols(k libKind) []string {
	n := int(C.dt_nsyms(C.int(k)))
	out := make([]string, n)
	for i := range out {
		out[i] = C.GoString(C.dt_symname(C.int(k), C.int(i)))
	}
	return out
}

// LoadLibraries loads cuBLAS and NVRTC (not the driver) and returns the names
// they were loaded from. It needs no GPU; tests and `trainer` diagnostics use
// it to check an installation.
func LoadLibraries() (cublas, nvrtc string, err error) {
	if cublas, err = load(libCublas, 0); err != nil {
		return "", "", err
	}
	if nvrtc, err = load(libNVRTC, 0); err != nil {
		return "", "", err
	}
	return cublas, nvrtc, nil
}

// cuErr describes a driver result code, or returns nil for success.
func cuErr(what string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	return &DriverError{Op: what, Code: int(r), Name: C.GoString(C.dt_cuErrorName(r)),
		Msg: C.GoString(C.dt_cuErrorString(r))}
}

// DriverError is a failed CUDA driver call.
type DriverError struct {
	Op   string
	Code int
	Name string
	Msg  string
}

func (e *DriverError) Error() string {
	return fmt.Sprintf("%s: %s (%d): %s", e.Op, e.Name, e.Code, e.Msg)
}

// Driver result codes the backend treats specially.
const (
	cuErrNoDevice           = 100
	cuErrNotReady           = 600
	cuErrUnsupportedPTX     = 222
	cuErrInsufficientDriver = 35
)

var cublasStatusNames = map[int]string{
	0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
	7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR",
	15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func cublasErr(what string, s C.cublasStatus_t) error {
	if s == 0 {
		return nil
	}
	name, ok := cublasStatusNames[int(s)]
	if !ok {
		name = "CUBLAS_STATUS_" + strconv.Itoa(int(s))
	}
	return fmt.Errorf("%s: %s", what, name)
}
