// Package cuda is the NVIDIA GPU compute backend. It loads the CUDA driver,
// cuBLAS and NVRTC with dlopen at start-up (no CUDA toolkit is needed to build
// it, only cgo), compiles its kernels (kernels.cu, embedded) with NVRTC for the
// device at first use, caching them on disk, runs GEMMs through cuBLAS in
// fp32, TF32 or bf16-with-fp32-accumulation, and everything else in its own
// kernels. Semantics are those of compute.Backend; compute/cpu is the
// reference it is tested against.
//
// Execution: every operation is queued on one compute stream and returns at
// once; Download, SumSquares and Sync wait. Uploads are staged through pinned
// buffers, so the caller may reuse its slice immediately. StartDownload copies
// on a second stream, overlapping the compute stream, into a HostAlloc
// (pinned) slice or through a staging buffer. Memory is plain cuMemAlloc.
//
// Determinism: no kernel uses atomics; every reduction (column sums, norms,
// embedding gradients grouped by id on the host, SumSquares) has a fixed
// order, so a run repeats bit for bit on the same GPU and libraries.
//
// Testing without a GPU: lib_test.go loads Debian's cuBLAS and NVRTC and
// compiles every kernel for sm_80 and sm_90; package cudaemu runs the whole
// backend on a CPU emulation of the driver and cuBLAS.
package cuda

/*
#include <stdlib.h>
#include "api.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"github.com/difftrain/difftrain/compute"
)

// Precision selects how GEMMs are computed. Element-wise and row kernels
// always work in fp32.
type Precision int

const (
	FP32 Precision = iota // plain fp32 (cuBLAS default math)
	TF32                  // fp32 storage, TF32 tensor cores (cublasSetMathMode)
	BF16                  // operands rounded to bf16, fp32 accumulation and result
)

func (p Precision) String() string {
	switch p {
	case FP32:
		return "fp32"
	case TF32:
		return "tf32"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("precision(%d)", int(p))
}

// ParsePrecision reads "fp32", "tf32" or "bf16".
func ParsePrecision(s string) (Precision, error) {
	switch strings.ToLower(s) {
	case "fp32", "f32", "":
		return FP32, nil
	case "tf32":
		return TF32, nil
	case "bf16":
		return BF16, nil
	}
	return 0, fmt.Errorf("unknown precision %q (want fp32, tf32 or bf16)", s)
}

// Options configure New.
type Options struct {
	Device    int // ordinal among the visible devices
	Precision Precision
}

// Errors New wraps, besides *LoadError (ErrNoLibrary).
var (
	ErrNoDevice     = errors.New("no CUDA device")
	ErrDriverTooOld = errors.New("CUDA driver too old")
)

// RequireGPUEnv names an environment variable that, when set (as
// scripts/gpu-check.sh does), tells GPU tests to fail rather than skip when
// New fails, so that a broken GPU set-up cannot pass as skipped. Tests in
// other packages use it the same way.
const RequireGPUEnv = "DIFFTRAIN_REQUIRE_GPU"

// MinDriver is the oldest driver API version New accepts (11.0).
const MinDriver = 11000

// Device attributes (CUdevice_attribute).
const (
	attrSMCount = 16
	attrCCMajor = 75
	attrCCMinor = 76
)

// Info describes the device and libraries a Backend runs on.
type Info struct {
	Name        string // e.g. "NVIDIA H200"
	SM          int    // compute capability, e.g. 90
	SMs         int    // multiprocessors
	Memory      int64  // bytes
	Driver      int    // e.g. 12040
	CublasLib   string // where cuBLAS was loaded from
	NVRTCLib    string
	Cublas      int // cublasGetVersion, e.g. 120405
	NVRTC       string
	KernelArch  int  // SM version the kernels were compiled for
	KernelPTX   bool // kernels JIT-compiled by the driver from PTX
	Precision   Precision
	PeakTFLOPS  float64 // dense peak for Precision, 0 when the device is not in the table
	PeakUnknown bool
}

// Backend is the CUDA compute.Backend. Like every Backend it is driven by one
// goroutine; only Pending.Wait may be called from another.
type Backend struct {
	info   Info
	dev    C.CUdevice
	ctx    C.CUcontext
	stream C.CUstream // compute: every kernel, GEMM, upload and blocking download
	copyS  C.CUstream // device-to-host copies started by StartDownload
	blas   C.cublasHandle_t
	mod    C.CUmodule
	fn     [numKernels]C.CUfunction
	err    error
	closed bool

	allocs  map[*allocation]struct{}
	chunks  []*chunk // pinned staging buffers
	pinned  []*hostRegion
	scratch map[string]*devScratch
	args    [32]C.ulonglong
	evMu    sync.Mutex // guards evPool, which Pending.Wait returns events to
	evPool  []C.CUevent
}

var _ compute.Backend = (*Backend)(nil)

// New opens device opts.Device. It fails with a *LoadError when a library is
// missing or lacks a symbol, with ErrNoDevice when there is no GPU, and with
// ErrDriverTooOld when the driver predates MinDriver or the libraries found.
func New(opts Options) (*Backend, error) {
	if _, err := load(libDriver, 0); err != nil {
		return nil, err
	}
	if r := C.dt_cuInit(); r != 0 {
		if r == cuErrNoDevice {
			return nil, fmt.Errorf("%w: %v", ErrNoDevice, cuErr("cuInit", r))
		}
		if r == cuErrInsufficientDriver {
			return nil, fmt.Errorf("%w: %v", ErrDriverTooOld, cuErr("cuInit", r))
		}
		return nil, cuErr("cuInit", r)
	}
	var drv C.int
	if err := cuErr("cuDriverGetVersion", C.dt_cuDriverGetVersion(&drv)); err != nil {
		return nil, err
	}
	if drv < MinDriver {
		return nil, fmt.Errorf("%w: driver supports CUDA %s, need %s or newer", ErrDriverTooOld,
			cudaVersion(int(drv)), cudaVersion(MinDriver))
	}
	var count C.int
	if err := cuErr("cuDeviceGetCount", C.dt_cuDeviceGetCount(&count)); err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, fmt.Errorf("%w: the driver sees no device", ErrNoDevice)
	}
	if opts.Device < 0 || opts.Device >= int(count) {
		return nil, fmt.Errorf("%w: device %d requested, %d visible", ErrNoDevice, opts.Device, count)
	}
	drvMajor := int(drv) / 1000
	cublasLib, err := load(libCublas, drvMajor)
	if err != nil {
		return nil, err
	}
	nvrtcLib, err := load(libNVRTC, drvMajor)
	if err != nil {
		return nil, err
	}
	if m := sonameMajor(cublasLib); m > drvMajor {
		return nil, fmt.Errorf("%w: %s needs a CUDA %d driver, this one is %s", ErrDriverTooOld,
			cublasLib, m, cudaVersion(int(drv)))
	}
	b := &Backend{allocs: map[*allocation]struct{}{}, scratch: map[string]*devScratch{}}
	b.info.Driver, b.info.CublasLib, b.info.NVRTCLib, b.info.Precision = int(drv), cublasLib, nvrtcLib, opts.Precision
	if err := b.open(opts); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func cudaVersion(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

func (b *Backend) open(opts Options) error {
	if err := cuErr("cuDeviceGet", C.dt_cuDeviceGet(&b.dev, C.int(opts.Device))); err != nil {
		return err
	}
	var name [256]C.char
	if err := cuErr("cuDeviceGetName", C.dt_cuDeviceGetName(&name[0], C.int(len(name)), b.dev)); err != nil {
		return err
	}
	b.info.Name = C.GoString(&name[0])
	var ma, mi, sms C.int
	for _, a := range []struct {
		v    *C.int
		attr int
	}{{&ma, attrCCMajor}, {&mi, attrCCMinor}, {&sms, attrSMCount}} {
		if err := cuErr("cuDeviceGetAttribute", C.dt_cuDeviceGetAttribute(a.v, C.int(a.attr), b.dev)); err != nil {
			return err
		}
	}
	b.info.SM, b.info.SMs = int(ma)*10+int(mi), int(sms)
	var mem C.size_t
	if err := cuErr("cuDeviceTotalMem", C.dt_cuDeviceTotalMem(&mem, b.dev)); err != nil {
		return err
	}
	b.info.Memory = int64(mem)
	b.info.PeakTFLOPS = peakTFLOPS(b.info.Name, opts.Precision)
	b.info.PeakUnknown = b.info.PeakTFLOPS == 0

	if err := cuErr("cuDevicePrimaryCtxRetain", C.dt_cuDevicePrimaryCtxRetain(&b.ctx, b.dev)); err != nil {
		return err
	}
	if err := cuErr("cuStreamCreate", C.dt_streamCreate(b.ctx, &b.stream)); err != nil {
		return err
	}
	if err := cuErr("cuStreamCreate", C.dt_streamCreate(b.ctx, &b.copyS)); err != nil {
		return err
	}
	if err := cublasErr("cublasCreate", C.dt_cublasCreate(b.ctx, &b.blas)); err != nil {
		return err
	}
	if err := cublasErr("cublasSetStream", C.dt_cublasSetStream(b.ctx, b.blas, b.stream)); err != nil {
		return err
	}
	mode := 0 // CUBLAS_DEFAULT_MATH: no TF32
	if opts.Precision == TF32 {
		mode = 3 // CUBLAS_TF32_TENSOR_OP_MATH
	}
	if err := cublasErr("cublasSetMathMode", C.dt_cublasSetMathMode(b.ctx, b.blas, C.int(mode))); err != nil {
		return err
	}
	var cv C.int
	if err := cublasErr("cublasGetVersion", C.dt_cublasGetVersion(b.blas, &cv)); err != nil {
		return err
	}
	b.info.Cublas = int(cv)
	return b.loadKernels()
}

// loadKernels compiles (or reads from the cache) and loads kernels.cu.
func (b *Backend) loadKernels() error {
	ma, mi, err := NVRTCVersion()
	if err != nil {
		return err
	}
	b.info.NVRTC = fmt.Sprintf("%d.%d", ma, mi)
	sup, err := SupportedArchs()
	if err != nil {
		return err
	}
	arch, ptx, err := chooseTarget(b.info.SM, sup)
	if err != nil {
		return fmt.Errorf("NVRTC %d.%d cannot target %s (sm_%d): %w", ma, mi, b.info.Name, b.info.SM, err)
	}
	img, err := CompileKernels(arch, ptx)
	if err != nil {
		return err
	}
	b.info.KernelArch, b.info.KernelPTX = arch, ptx
	data := C.CBytes(img.Data)
	defer C.free(data)
	if r := C.dt_moduleLoadData(b.ctx, &b.mod, data); r != 0 {
		err := cuErr("cuModuleLoadData", r)
		if r == cuErrUnsupportedPTX || r == cuErrInsufficientDriver {
			return fmt.Errorf("%w: kernels from NVRTC %d.%d do not load on driver %s: %v", ErrDriverTooOld,
				ma, mi, cudaVersion(b.info.Driver), err)
		}
		return err
	}
	for i, name := range kernelNames {
		cname := C.CString(name)
		r := C.dt_moduleGetFunction(b.ctx, &b.fn[i], b.mod, cname)
		C.free(unsafe.Pointer(cname))
		if err := cuErr("cuModuleGetFunction "+name, r); err != nil {
			return err
		}
	}
	return nil
}

// Info describes the device, libraries and precision.
func (b *Backend) Info() Info { return b.info }

// Name says which device and libraries this is.
func (b *Backend) Name() string {
	i := b.info
	return fmt.Sprintf("cuda (%s, sm_%d, %d SMs, driver %s, cuBLAS %d.%d.%d, NVRTC %s, %s)",
		i.Name, i.SM, i.SMs, cudaVersion(i.Driver), i.Cublas/10000, i.Cublas/100%100, i.Cublas%100, i.NVRTC, i.Precision)
}

// Err returns the first recorded error.
func (b *Backend) Err() error { return b.err }

// Sync waits for both streams and returns Err().
func (b *Backend) Sync() error {
	if b.closed {
		return b.err
	}
	b.check("Sync", C.dt_streamSync(b.ctx, b.stream))
	b.check("Sync", C.dt_streamSync(b.ctx, b.copyS))
	return b.err
}

// Close waits for queued work and frees every buffer, pinned host buffer and
// library handle. The Backend is unusable afterwards. It reports only
// failures of the release itself.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	var errs []error
	keep := func(e error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	if b.ctx != nil {
		if b.stream != nil {
			keep(cuErr("cuStreamSynchronize", C.dt_streamSync(b.ctx, b.stream)))
		}
		if b.copyS != nil {
			keep(cuErr("cuStreamSynchronize", C.dt_streamSync(b.ctx, b.copyS)))
		}
		for a := range b.allocs {
			if a.ptr != 0 {
				keep(cuErr("cuMemFree", C.dt_memFree(b.ctx, C.CUdeviceptr(a.ptr))))
			}
			a.freed = true
		}
		for _, s := range b.scratch {
			if s.ptr != 0 {
				keep(cuErr("cuMemFree", C.dt_memFree(b.ctx, C.CUdeviceptr(s.ptr))))
			}
		}
		for _, c := range b.chunks {
			keep(cuErr("cuMemFreeHost", C.dt_memFreeHost(b.ctx, c.p)))
			keep(cuErr("cuEventDestroy", C.dt_eventDestroy(b.ctx, c.ev)))
		}
		for _, h := range b.pinned {
			keep(cuErr("cuMemFreeHost", C.dt_memFreeHost(b.ctx, h.p)))
		}
		for _, e := range b.evPool {
			keep(cuErr("cuEventDestroy", C.dt_eventDestroy(b.ctx, e)))
		}
		if b.mod != nil {
			keep(cuErr("cuModuleUnload", C.dt_moduleUnload(b.ctx, b.mod)))
		}
		if b.blas != nil {
			keep(cublasErr("cublasDestroy", C.dt_cublasDestroy(b.ctx, b.blas)))
		}
		if b.copyS != nil {
			keep(cuErr("cuStreamDestroy", C.dt_streamDestroy(b.ctx, b.copyS)))
		}
		if b.stream != nil {
			keep(cuErr("cuStreamDestroy", C.dt_streamDestroy(b.ctx, b.stream)))
		}
		keep(cuErr("cuDevicePrimaryCtxRelease", C.dt_cuDevicePrimaryCtxRelease(b.dev)))
	}
	b.allocs, b.chunks, b.pinned, b.scratch, b.evPool = nil, nil, nil, nil, nil
	b.closed = true
	var err error
	if len(errs) > 0 {
		err = fmt.Errorf("cuda Close: %w", errors.Join(errs...))
	}
	if b.err == nil {
		b.err = errors.New("cuda: backend is closed")
	}
	return err
}

// fail records the first error of op.
func (b *Backend) fail(op, format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf("cuda %s: %s", op, fmt.Sprintf(format, args...))
	}
}

// check records a failed driver call of op.
func (b *Backend) check(op string, r C.CUresult) bool {
	if r == 0 {
		return true
	}
	if b.err == nil {
		b.err = fmt.Errorf("cuda %s: %w", op, cuErr(op, r))
	}
	return false
}

func (b *Backend) checkBlas(op string, s C.cublasStatus_t) bool {
	if s == 0 {
		return true
	}
	if b.err == nil {
		b.err = fmt.Errorf("cuda %s: %w", op, cublasErr(op, s))
	}
	return false
}

// peakTFLOPS is the dense peak of known data-centre GPUs (vendor figures,
// without sparsity), for model-FLOPs utilisation. 0: unknown.
func peakTFLOPS(name string, p Precision) float64 {
	table := []struct {
		match            string
		fp32, tf32, bf16 float64
	}{
		{"H200", 67, 494.7, 989.4},
		{"H100 PCIe", 51, 378, 756},
		{"H100 NVL", 60, 417.5, 835},
		{"H100", 67, 494.7, 989.4},
		{"GH200", 67, 494.7, 989.4},
		{"A100", 19.5, 156, 312},
		{"L40S", 91.6, 183, 362},
		{"A10", 31.2, 62.5, 125},
		{"L4", 30.3, 60, 121},
	}
	for _, t := range table {
		if strings.Contains(name, t.match) {
			switch p {
			case TF32:
				return t.tf32
			case BF16:
				return t.bf16
			}
			return t.fp32
		}
	}
	return 0
}
