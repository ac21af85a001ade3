// Package cpu is the reference compute.Backend: float32 host slices, GEMM
// through OpenBLAS (loaded at run time with dlopen, so the binary runs without
// it) or gonum, and the other kernels in Go, run in parallel on a persistent
// worker pool. The hottest row kernels (soft-cap, softmax, the loss's
// exponentials, the optimizer update) have AVX2 versions in cgo, chosen at
// run time; the Go versions are the fallback and the reference they are
// tested against. Other backends are tested against this one.
//
// Threads: the Go workers split every large GEMM into row or column blocks
// and call a single-threaded OpenBLAS on each (attention's per-head GEMMs run
// inside the workers the same way), so OpenBLAS starts no threads, whose
// idle spinning would compete with the Go kernels on a small machine. With
// Options.OpenBLASThreads, OpenBLAS threads each GEMM itself instead; the Go
// kernels then run between GEMMs, never at the same time.
package cpu

import (
	"fmt"
	"runtime"

	"github.com/difftrain/difftrain/compute"
)

// Options configure a Backend.
type Options struct {
	// Threads is the number of threads for kernels and for OpenBLAS
	// (0: GOMAXPROCS). Go kernels and OpenBLAS never run at the same time,
	// so they share the same cores.
	Threads int
	// BLAS selects the GEMM library: "auto" (or ""): OpenBLAS when it can be
	// loaded, else gonum with a warning; "openblas": OpenBLAS or an error;
	// "gonum": the pure-Go gonum implementation.
	BLAS string
	// OpenBLASThreads lets OpenBLAS thread each GEMM itself over Threads
	// threads. By default the Go workers split each large GEMM into row or
	// column blocks over a single-threaded OpenBLAS, so that no OpenBLAS
	// thread exists to spin while the Go kernels run. Measure both with
	// `trainer bench gemm`.
	OpenBLASThreads bool
}

// Backend is the CPU compute.Backend. Like every Backend it is driven by one
// goroutine; operations run synchronously.
type Backend struct {
	threads int
	blas    blasImpl
	// goGemm: the Go workers split each GEMM and OpenBLAS runs one thread
	// (OpenBLAS without Options.OpenBLASThreads); otherwise the BLAS
	// threads itself.
	goGemm bool
	pool   *pool
	err    error
	closed bool
	allocs map[*buf]struct{}

	// Scratch reused across calls; it grows, never shrinks.
	partial []float64 // per-worker partial sums
	wpart   []float32 // per-worker partial vectors (norm, bias grads)
	ropeTab ropeTable
	lossG   []float64 // GIDDLoss per-worker scratch
	lossEx  []float32
	attn    attnScratch
	jobs    jobs
}

// New returns a CPU backend.
func New(opts Options) (*Backend, error) {
	n := opts.Threads
	if n < 0 {
		return nil, fmt.Errorf("cpu backend: threads = %d, must be >= 0", n)
	}
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	bl, err := openBLAS(opts.BLAS, n)
	if err != nil {
		return nil, fmt.Errorf("cpu backend: %w", err)
	}
	b := &Backend{threads: n, blas: bl, pool: newPool(n), allocs: map[*buf]struct{}{}}
	b.goGemm = !opts.OpenBLASThreads && bl.kind() == "openblas"
	b.partial = make([]float64, n)
	return b, nil
}

// Name says which BLAS, row kernels and how many threads, e.g.
// "cpu (OpenBLAS 0.3.21, Zen, avx2 kernels, 2 threads)".
func (b *Backend) Name() string {
	return fmt.Sprintf("cpu (%s, %s kernels, %d threads)", b.blas.describe(), simdKernels, b.threads)
}

// setGemmSplit sets whether the Go workers split GEMMs (the opposite of
// Options.OpenBLASThreads), for benchmarks.
func (b *Backend) setGemmSplit(split bool) { b.goGemm = split && b.blas.kind() == "openblas" }

// Threads is the number of threads the backend uses.
func (b *Backend) Threads() int { return b.threads }

// BLAS is "openblas" or "gonum": the GEMM library in use.
func (b *Backend) BLAS() string { return b.blas.kind() }

// Close frees every buffer and stops the worker pool. The shared OpenBLAS
// library stays loaded for other backends.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	for p := range b.allocs {
		p.f, p.i = nil, nil
	}
	b.allocs = nil
	b.pool.close()
	if b.err == nil {
		b.err = fmt.Errorf("cpu backend: closed") // later operations are no-ops
	}
	return nil
}

// Err returns the first error an operation recorded.
func (b *Backend) Err() error { return b.err }

// Sync returns Err(); CPU operations are synchronous.
func (b *Backend) Sync() error { return b.err }

// fail records the first error of op.
func (b *Backend) fail(op, format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf("cpu %s: %s", op, fmt.Sprintf(format, args...))
	}
}

// buf is a CPU Buffer: a host slice, either a whole allocation or a view.
type buf struct {
	dt    compute.DType
	f     []float32
	i     []int32
	whole bool
	owner *Backend
}

func (p *buf) Len() int {
	if p.dt == compute.I32 {
		return len(p.i)
	}
	return len(p.f)
}

func (p *buf) DType() compute.DType { return p.dt }

// get checks that x is a live buffer of this backend with type dt.
func (b *Backend) get(op, name string, x compute.Buffer, dt compute.DType) *buf {
	if b.err != nil {
		return nil
	}
	p, ok := x.(*buf)
	if !ok || p == nil {
		if x == nil || ok {
			b.fail(op, "%s is nil", name)
		} else {
			b.fail(op, "%s is a %T, not a cpu buffer", name, x)
		}
		return nil
	}
	if p.owner != b {
		b.fail(op, "%s belongs to another backend", name)
		return nil
	}
	if p.dt != dt {
		b.fail(op, "%s is %v, want %v", name, p.dt, dt)
		return nil
	}
	if p.f == nil && p.i == nil && p.Len() == 0 && p.whole {
		// A freed allocation has nil slices; an empty one is fine.
		if _, live := b.allocs[p]; !live {
			b.fail(op, "%s was freed", name)
			return nil
		}
	}
	return p
}

// f32 returns the float32 slice of x, which must have n elements (n < 0: any).
func (b *Backend) f32(op, name string, x compute.Buffer, n int) []float32 {
	p := b.get(op, name, x, compute.F32)
	if p == nil {
		return nil
	}
	if n >= 0 && len(p.f) != n {
		b.fail(op, "%s has %d elements, want %d", name, len(p.f), n)
		return nil
	}
	return p.f
}

// i32 returns the int32 slice of x, which must have n elements (n < 0: any).
func (b *Backend) i32(op, name string, x compute.Buffer, n int) []int32 {
	p := b.get(op, name, x, compute.I32)
	if p == nil {
		return nil
	}
	if n >= 0 && len(p.i) != n {
		b.fail(op, "%s has %d elements, want %d", name, len(p.i), n)
		return nil
	}
	return p.i
}

// F32 returns the host slice behind an F32 buffer of this backend, for host
// code that must not copy (nil and a recorded error otherwise). Writes to it
// are writes to the buffer.
func (b *Backend) F32(x compute.Buffer) []float32 { return b.f32("F32", "buffer", x, -1) }

// I32 returns the host slice behind an I32 buffer, like F32.
func (b *Backend) I32(x compute.Buffer) []int32 { return b.i32("I32", "buffer", x, -1) }

// Alloc returns a zero-filled buffer of n elements.
func (b *Backend) Alloc(dt compute.DType, n int) compute.Buffer {
	p := &buf{dt: dt, whole: true, owner: b}
	switch {
	case b.closed:
		b.fail("Alloc", "backend is closed")
	case n < 0:
		b.fail("Alloc", "negative length %d", n)
	case dt == compute.F32:
		p.f = make([]float32, n)
	case dt == compute.I32:
		p.i = make([]int32, n)
	default:
		b.fail("Alloc", "unknown dtype %v", dt)
	}
	if b.allocs != nil {
		b.allocs[p] = struct{}{}
	}
	return p
}

// View returns elements [off, off+n) of x.
func (b *Backend) View(x compute.Buffer, off, n int) compute.Buffer {
	p, ok := x.(*buf)
	if !ok || p == nil || p.owner != b {
		b.fail("View", "not a buffer of this backend")
		return &buf{dt: compute.F32, owner: b}
	}
	v := &buf{dt: p.dt, owner: b}
	if off < 0 || n < 0 || off+n > p.Len() {
		b.fail("View", "range [%d, %d) outside a buffer of %d elements", off, off+n, p.Len())
		return v
	}
	if p.dt == compute.I32 {
		v.i = p.i[off : off+n : off+n]
	} else {
		v.f = p.f[off : off+n : off+n]
	}
	return v
}

// Free releases a whole allocation.
func (b *Backend) Free(x compute.Buffer) {
	p, ok := x.(*buf)
	if !ok || p == nil || p.owner != b {
		b.fail("Free", "not a buffer of this backend")
		return
	}
	if !p.whole {
		b.fail("Free", "buffer is a view, not a whole allocation")
		return
	}
	if _, live := b.allocs[p]; !live {
		b.fail("Free", "buffer already freed")
		return
	}
	delete(b.allocs, p)
	p.f, p.i = nil, nil
}

// UploadF32 copies src into dst.
func (b *Backend) UploadF32(dst compute.Buffer, src []float32) {
	copy(b.f32("UploadF32", "dst", dst, len(src)), src) // nil after an error: no-op
}

// UploadI32 copies src into dst.
func (b *Backend) UploadI32(dst compute.Buffer, src []int32) {
	copy(b.i32("UploadI32", "dst", dst, len(src)), src)
}

// DownloadF32 copies src into dst.
func (b *Backend) DownloadF32(dst []float32, src compute.Buffer) {
	copy(dst, b.f32("DownloadF32", "src", src, len(dst)))
}

// Zero sets every element of x to zero.
func (b *Backend) Zero(x compute.Buffer) {
	p := b.anyBuf("Zero", "x", x)
	if p == nil {
		return
	}
	clear(p.f)
	clear(p.i)
}

// Copy copies src into dst (same length and type).
func (b *Backend) Copy(dst, src compute.Buffer) {
	d, s := b.anyBuf("Copy", "dst", dst), b.anyBuf("Copy", "src", src)
	if d == nil || s == nil {
		return
	}
	if d.dt != s.dt || d.Len() != s.Len() {
		b.fail("Copy", "dst is %v[%d], src is %v[%d]", d.dt, d.Len(), s.dt, s.Len())
		return
	}
	copy(d.f, s.f)
	copy(d.i, s.i)
}

func (b *Backend) anyBuf(op, name string, x compute.Buffer) *buf {
	if p, ok := x.(*buf); ok && p != nil {
		return b.get(op, name, x, p.dt)
	}
	return b.get(op, name, x, compute.F32)
}
