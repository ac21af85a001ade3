package cuda

/*
#include <stdlib.h>
#include "api.h"
*/
import "C"

import (
	"math"
	"sync/atomic"
	"unsafe"

	"github.com/difftrain/difftrain/compute"
)

// allocation is one cuMemAlloc. I32 allocations keep a host mirror of their
// contents: every write to an I32 buffer comes from the host (upload, zero,
// copy), so the mirror is exact, and ids, labels and flags can be checked and
// sorted on the host without waiting for the device.
type allocation struct {
	owner *Backend
	ptr   uint64 // 0 for an empty allocation
	n     int
	dt    compute.DType
	freed bool
	host  []int32 // I32 only
}

// buffer is a compute.Buffer: elements [off, off+n) of an allocation.
type buffer struct {
	a     *allocation
	off   int
	n     int
	whole bool
}

func (x *buffer) Len() int             { return x.n }
func (x *buffer) DType() compute.DType { return x.a.dt }
func (x *buffer) ptr() uint64          { return x.a.ptr + uint64(x.off)*4 }
func (x *buffer) mirror() []int32      { return x.a.host[x.off : x.off+x.n : x.off+x.n] }

// get checks that x is a live buffer of this backend of type dt with n
// elements (n < 0: any).
func (b *Backend) get(op, name string, x compute.Buffer, dt compute.DType, n int) *buffer {
	if b.err != nil {
		return nil
	}
	p, ok := x.(*buffer)
	switch {
	case x == nil || (ok && p == nil):
		b.fail(op, "%s is nil", name)
	case !ok:
		b.fail(op, "%s is a %T, not a cuda buffer", name, x)
	case p.a.owner != b:
		b.fail(op, "%s belongs to another backend", name)
	case p.a.freed:
		b.fail(op, "%s was freed", name)
	case p.a.dt != dt:
		b.fail(op, "%s is %v, want %v", name, p.a.dt, dt)
	case n >= 0 && p.n != n:
		b.fail(op, "%s has %d elements, want %d", name, p.n, n)
	default:
		return p
	}
	return nil
}

func (b *Backend) f32(op, name string, x compute.Buffer, n int) *buffer {
	return b.get(op, name, x, compute.F32, n)
}

func (b *Backend) i32(op, name string, x compute.Buffer, n int) *buffer {
	return b.get(op, name, x, compute.I32, n)
}

// opt is get for an optional buffer: nil gives (nil, true).
func (b *Backend) opt(op, name string, x compute.Buffer, n int) (*buffer, bool) {
	if x == nil {
		return nil, b.err == nil
	}
	p := b.f32(op, name, x, n)
	return p, p != nil
}

func anyType(x compute.Buffer) compute.DType {
	if p, ok := x.(*buffer); ok && p != nil {
		return p.a.dt
	}
	return compute.F32
}

// Alloc returns a zero-filled buffer of n elements.
func (b *Backend) Alloc(dt compute.DType, n int) compute.Buffer {
	a := &allocation{owner: b, n: n, dt: dt}
	x := &buffer{a: a, n: n, whole: true}
	switch {
	case b.closed:
		b.fail("Alloc", "backend is closed")
	case n < 0:
		b.fail("Alloc", "negative length %d", n)
		x.n = 0
	case dt != compute.F32 && dt != compute.I32:
		b.fail("Alloc", "unknown dtype %v", dt)
	case b.err != nil:
	default:
		if dt == compute.I32 {
			a.host = make([]int32, n)
		}
		if n > 0 {
			var p C.CUdeviceptr
			if !b.check("Alloc", C.dt_memAlloc(b.ctx, &p, C.size_t(n)*4)) {
				return x
			}
			a.ptr = uint64(p)
			b.check("Alloc", C.dt_memsetD32(b.ctx, p, 0, C.size_t(n), b.stream))
		}
		b.allocs[a] = struct{}{}
	}
	if a.host == nil && dt == compute.I32 {
		a.host = make([]int32, x.n)
	}
	return x
}

// View returns elements [off, off+n) of x.
func (b *Backend) View(x compute.Buffer, off, n int) compute.Buffer {
	p, ok := x.(*buffer)
	if !ok || p == nil || p.a.owner != b {
		b.fail("View", "not a buffer of this backend")
		return &buffer{a: &allocation{owner: b, dt: compute.F32, freed: true}}
	}
	if off < 0 || n < 0 || off+n > p.n {
		b.fail("View", "range [%d, %d) outside a buffer of %d elements", off, off+n, p.n)
		return &buffer{a: p.a, off: p.off, n: 0}
	}
	return &buffer{a: p.a, off: p.off + off, n: n}
}

// Free releases a whole allocation.
func (b *Backend) Free(x compute.Buffer) {
	p, ok := x.(*buffer)
	switch {
	case !ok || p == nil || p.a.owner != b:
		b.fail("Free", "not a buffer of this backend")
		return
	case !p.whole:
		b.fail("Free", "buffer is a view, not a whole allocation")
		return
	case p.a.freed:
		b.fail("Free", "buffer already freed")
		return
	}
	p.a.freed = true
	p.a.host = nil
	delete(b.allocs, p.a)
	if p.a.ptr != 0 && !b.closed {
		// Queued kernels may still use it.
		b.check("Free", C.dt_streamSync(b.ctx, b.stream))
		b.check("Free", C.dt_streamSync(b.ctx, b.copyS))
		b.check("Free", C.dt_memFree(b.ctx, C.CUdeviceptr(p.a.ptr)))
	}
}

// UploadF32 copies src into dst. It returns before the copy is done; src may
// be reused at once (it is staged in pinned memory).
func (b *Backend) UploadF32(dst compute.Buffer, src []float32) {
	d := b.f32("UploadF32", "dst", dst, len(src))
	if d == nil || len(src) == 0 {
		return
	}
	b.upload(d.ptr(), unsafe.Pointer(&src[0]), len(src)*4)
}

// UploadI32 copies src into dst, like UploadF32.
func (b *Backend) UploadI32(dst compute.Buffer, src []int32) {
	d := b.i32("UploadI32", "dst", dst, len(src))
	if d == nil || len(src) == 0 {
		return
	}
	copy(d.mirror(), src)
	b.upload(d.ptr(), unsafe.Pointer(&src[0]), len(src)*4)
}

// DownloadF32 copies src into dst, waiting for queued work. dst from HostAlloc
// is written by DMA directly; any other slice through a pinned staging buffer.
func (b *Backend) DownloadF32(dst []float32, src compute.Buffer) {
	s := b.f32("DownloadF32", "src", src, len(dst))
	if s == nil || len(dst) == 0 {
		return
	}
	b.download(unsafe.Pointer(&dst[0]), s.ptr(), len(dst)*4)
}

// Zero sets every element of x to zero.
func (b *Backend) Zero(x compute.Buffer) {
	p := b.get("Zero", "x", x, anyType(x), -1)
	if p == nil || p.n == 0 {
		return
	}
	if p.a.dt == compute.I32 {
		clear(p.mirror())
	}
	b.check("Zero", C.dt_memsetD32(b.ctx, C.CUdeviceptr(p.ptr()), 0, C.size_t(p.n), b.stream))
}

// Copy copies src into dst (same length and type).
func (b *Backend) Copy(dst, src compute.Buffer) {
	d := b.get("Copy", "dst", dst, anyType(dst), -1)
	s := b.get("Copy", "src", src, anyType(src), -1)
	if d == nil || s == nil {
		return
	}
	if d.a.dt != s.a.dt || d.n != s.n {
		b.fail("Copy", "dst is %v[%d], src is %v[%d]", d.a.dt, d.n, s.a.dt, s.n)
		return
	}
	if d.n == 0 {
		return
	}
	if d.a.dt == compute.I32 {
		copy(d.mirror(), s.mirror())
	}
	b.check("Copy", C.dt_memcpyDtoD(b.ctx, C.CUdeviceptr(d.ptr()), C.CUdeviceptr(s.ptr()),
		C.size_t(d.n)*4, b.stream))
}

// ---- pinned staging ----

// chunk is a pinned host buffer for staging copies. It is free when its
// event has completed and no Pending download holds it.
type chunk struct {
	p    unsafe.Pointer
	size int
	ev   C.CUevent
	held atomic.Bool // by a Pending download (see host.go), released from any goroutine
}

const (
	minChunk      = 1 << 20
	maxStageBytes = 512 << 20 // total pinned staging before waiting instead of growing
)

// getChunk returns a free pinned chunk of at least n bytes.
func (b *Backend) getChunk(op string, n int) *chunk {
	for pass := 0; pass < 2; pass++ {
		var total int
		for _, c := range b.chunks {
			total += c.size
			if c.size >= n && !c.held.Load() && C.dt_eventQuery(b.ctx, c.ev) == 0 {
				return c
			}
		}
		if total+n <= maxStageBytes || pass == 1 {
			break
		}
		// Too much pinned memory in flight: wait for the queue, then retry.
		if !b.check(op, C.dt_streamSync(b.ctx, b.stream)) {
			return nil
		}
	}
	size := minChunk
	for size < n {
		size *= 2
	}
	c := &chunk{size: size}
	if !b.check(op, C.dt_memAllocHost(b.ctx, &c.p, C.size_t(size))) {
		return nil
	}
	if !b.check(op, C.dt_eventCreate(b.ctx, &c.ev)) {
		C.dt_memFreeHost(b.ctx, c.p)
		return nil
	}
	b.chunks = append(b.chunks, c)
	return c
}

// upload copies n bytes at src (host) to dst (device) on the compute stream.
func (b *Backend) upload(dst uint64, src unsafe.Pointer, n int) {
	c := b.getChunk("upload", n)
	if c == nil {
		return
	}
	copy(unsafe.Slice((*byte)(c.p), n), unsafe.Slice((*byte)(src), n))
	if b.check("upload", C.dt_memcpyHtoD(b.ctx, C.CUdeviceptr(dst), c.p, C.size_t(n), b.stream)) {
		b.check("upload", C.dt_eventRecord(b.ctx, c.ev, b.stream))
	}
}

// download copies n bytes at src (device) to dst (host) after all queued
// work, and waits.
func (b *Backend) download(dst unsafe.Pointer, src uint64, n int) {
	if b.isPinned(dst, n) {
		if b.check("download", C.dt_memcpyDtoH(b.ctx, dst, C.CUdeviceptr(src), C.size_t(n), b.stream)) {
			b.check("download", C.dt_streamSync(b.ctx, b.stream))
		}
		return
	}
	c := b.getChunk("download", n)
	if c == nil {
		return
	}
	if !b.check("download", C.dt_memcpyDtoH(b.ctx, c.p, C.CUdeviceptr(src), C.size_t(n), b.stream)) ||
		!b.check("download", C.dt_eventRecord(b.ctx, c.ev, b.stream)) ||
		!b.check("download", C.dt_streamSync(b.ctx, b.stream)) {
		return
	}
	copy(unsafe.Slice((*byte)(dst), n), unsafe.Slice((*byte)(c.p), n))
}

// ---- device scratch ----

// devScratch is device memory reused across calls; it grows, never shrinks.
type devScratch struct {
	ptr   uint64
	bytes int
}

// scratchBuf returns at least n bytes of the named scratch area. Growing it
// waits for queued work that may still use the old area.
func (b *Backend) scratchBuf(op, name string, n int) uint64 {
	s := b.scratch[name]
	if s == nil {
		s = &devScratch{}
		b.scratch[name] = s
	}
	if s.bytes >= n {
		return s.ptr
	}
	if s.ptr != 0 {
		if !b.check(op, C.dt_streamSync(b.ctx, b.stream)) ||
			!b.check(op, C.dt_memFree(b.ctx, C.CUdeviceptr(s.ptr))) {
			return 0
		}
		s.ptr, s.bytes = 0, 0
	}
	size := 1 << 16
	for size < n {
		size += size / 2
	}
	var p C.CUdeviceptr
	if !b.check(op, C.dt_memAlloc(b.ctx, &p, C.size_t(size))) {
		return 0
	}
	s.ptr, s.bytes = uint64(p), size
	return s.ptr
}

// ---- kernel launches ----

type kernel int

// Kernels, in the order of kernelNames.
const (
	kScale kernel = iota
	kAxpy
	kAddBias
	kReluSq
	kReluSqBack
	kSumsqPart
	kSumFinal
	kColSumPart
	kColSumFinal
	kRMSNorm
	kRMSNormBack
	kRope
	kEmbedding
	kEmbeddingBack
	kAttnSoftmax
	kAttnSinkAdd
	kAttnSoftmaxBack
	kGIDDLoss
	kLaProp
	kAdamW
	kF32ToBF16
	kQ8Block
	numKernels
)

// Kernel parameters: each takes one 8-byte slot (see dt_launch).
func pArg(x *buffer) uint64 {
	if x == nil {
		return 0
	}
	return x.ptr()
}
func iArg(v int) uint64     { return uint64(uint32(int32(v))) }
func lArg(v int) uint64     { return uint64(int64(v)) }
func fArg(v float32) uint64 { return uint64(math.Float32bits(v)) }
func dArg(v float64) uint64 { return math.Float64bits(v) }
func cdiv(a, b int) int     { return (a + b - 1) / b }

func bArg(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// rowBlock is the block size of a one-block-per-row kernel: a multiple of 32.
func rowBlock(cols int) int { return min(256, max(32, cdiv(cols, 32)*32)) }

// grid is the grid size of a grid-stride kernel over n elements.
func (b *Backend) grid(n int) int { return max(1, min(cdiv(n, 256), 32*max(b.info.SMs, 1))) }

// launch queues kernel k on the compute stream.
func (b *Backend) launch(op string, k kernel, grid, block [3]int, args ...uint64) {
	if b.err != nil {
		return
	}
	if len(args) > len(b.args) {
		b.fail(op, "kernel %s: %d arguments", kernelNames[k], len(args))
		return
	}
	for i, a := range args {
		b.args[i] = C.ulonglong(a)
	}
	b.check(op+" ("+kernelNames[k]+")", C.dt_launch(b.ctx, b.fn[k],
		C.uint(grid[0]), C.uint(max(grid[1], 1)), C.uint(max(grid[2], 1)),
		C.uint(block[0]), C.uint(max(block[1], 1)), C.uint(max(block[2], 1)), 0, b.stream,
		&b.args[0], C.int(len(args))))
}

// launch1D runs k over n elements with a grid-stride loop.
func (b *Backend) launch1D(op string, k kernel, n int, args ...uint64) {
	if n == 0 {
		return
	}
	b.launch(op, k, [3]int{b.grid(n)}, [3]int{256}, args...)
}
