package cuda

/*
#include <stdlib.h>
#include "api.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/difftrain/difftrain/compute"
)

// hostRegion is pinned host memory handed out by HostAlloc.
type hostRegion struct {
	p     unsafe.Pointer
	bytes int
}

// HostAlloc returns n float32s of pinned (page-locked) host memory. Device
// copies into it are DMA transfers with no staging copy; use it for the
// gradient buffers that the allreduce reads. Release it with HostFree (Close
// releases what is left). The slice must not be used after that.
func (b *Backend) HostAlloc(n int) ([]float32, error) {
	if b.closed {
		return nil, errors.New("cuda HostAlloc: backend is closed")
	}
	if n <= 0 {
		return nil, fmt.Errorf("cuda HostAlloc: length %d, must be positive", n)
	}
	var p unsafe.Pointer
	if err := cuErr("cuMemAllocHost", C.dt_memAllocHost(b.ctx, &p, C.size_t(n)*4)); err != nil {
		return nil, fmt.Errorf("cuda HostAlloc of %d floats: %w", n, err)
	}
	b.pinned = append(b.pinned, &hostRegion{p: p, bytes: n * 4})
	return unsafe.Slice((*float32)(p), n), nil
}

// HostFree releases memory from HostAlloc, after waiting for copies into it.
func (b *Backend) HostFree(h []float32) error {
	if len(h) == 0 {
		return errors.New("cuda HostFree: empty slice")
	}
	p := unsafe.Pointer(&h[0])
	for i, r := range b.pinned {
		if r.p == p {
			if err := b.Sync(); err != nil {
				return err
			}
			b.pinned = append(b.pinned[:i], b.pinned[i+1:]...)
			return cuErr("cuMemFreeHost", C.dt_memFreeHost(b.ctx, p))
		}
	}
	return errors.New("cuda HostFree: not memory from HostAlloc")
}

// isPinned reports whether [p, p+n) lies in one HostAlloc region.
func (b *Backend) isPinned(p unsafe.Pointer, n int) bool {
	a := uintptr(p)
	for _, r := range b.pinned {
		lo := uintptr(r.p)
		if a >= lo && a+uintptr(n) <= lo+uintptr(r.bytes) {
			return true
		}
	}
	return false
}

// Pending is a device-to-host copy started by StartDownload.
type Pending struct {
	b     *Backend
	ctx   C.CUcontext
	ev    C.CUevent
	c     *chunk // staging chunk, nil when copying into HostAlloc memory
	dst   unsafe.Pointer
	n     int
	once  sync.Once
	err   error
	mu    *sync.Mutex
	evRet *[]C.CUevent
}

// StartDownload queues a copy of src into dst after the work queued so far,
// on the copy stream, and returns at once: the compute stream keeps running
// (e.g. the rest of the backward pass) while the copy proceeds. dst must not
// be read, and src not written, until Wait returns. With dst from HostAlloc
// the copy goes straight into it.
func (b *Backend) StartDownload(dst []float32, src compute.Buffer) *Pending {
	p := &Pending{b: b, ctx: b.ctx, n: len(dst) * 4, mu: &b.evMu, evRet: &b.evPool}
	s := b.f32("StartDownload", "src", src, len(dst))
	if s == nil || len(dst) == 0 {
		p.err = b.err
		return p
	}
	p.dst = unsafe.Pointer(&dst[0])
	// The copy stream waits for everything queued on the compute stream.
	mark := b.event("StartDownload")
	if mark == nil {
		p.err = b.err
		return p
	}
	if !b.check("StartDownload", C.dt_eventRecord(b.ctx, mark, b.stream)) ||
		!b.check("StartDownload", C.dt_streamWaitEvent(b.ctx, b.copyS, mark)) {
		p.err = b.err
		return p
	}
	b.putEvent(mark) // safe: the wait is enqueued; the event may be re-recorded
	target := p.dst
	if !b.isPinned(p.dst, p.n) {
		p.c = b.getChunk("StartDownload", p.n)
		if p.c == nil {
			p.err = b.err
			return p
		}
		p.c.held.Store(true)
		target = p.c.p
	}
	if p.ev = b.event("StartDownload"); p.ev == nil {
		p.err = b.err
		return p
	}
	if !b.check("StartDownload", C.dt_memcpyDtoH(b.ctx, target, C.CUdeviceptr(s.ptr()), C.size_t(p.n), b.copyS)) ||
		!b.check("StartDownload", C.dt_eventRecord(b.ctx, p.ev, b.copyS)) {
		p.err = b.err
	}
	if p.c != nil {
		C.dt_eventRecord(b.ctx, p.c.ev, b.copyS)
	}
	return p
}

// Wait blocks until the copy is in dst. It may be called from any goroutine,
// once or more; it returns the copy's error.
func (p *Pending) Wait() error {
	p.once.Do(func() {
		if p.err != nil || p.ev == nil {
			return
		}
		if err := cuErr("cuEventSynchronize", C.dt_eventSync(p.ctx, p.ev)); err != nil {
			p.err = fmt.Errorf("cuda download: %w", err)
		} else if p.c != nil {
			copy(unsafe.Slice((*byte)(p.dst), p.n), unsafe.Slice((*byte)(p.c.p), p.n))
		}
		if p.c != nil {
			p.c.held.Store(false)
		}
		p.mu.Lock()
		*p.evRet = append(*p.evRet, p.ev)
		p.mu.Unlock()
	})
	return p.err
}

// event takes an event from the pool or creates one.
func (b *Backend) event(op string) C.CUevent {
	b.evMu.Lock()
	defer b.evMu.Unlock()
	if n := len(b.evPool); n > 0 {
		e := b.evPool[n-1]
		b.evPool = b.evPool[:n-1]
		return e
	}
	var e C.CUevent
	if !b.check(op, C.dt_eventCreate(b.ctx, &e)) {
		return nil
	}
	return e
}

func (b *Backend) putEvent(e C.CUevent) {
	b.evMu.Lock()
	b.evPool = append(b.evPool, e)
	b.evMu.Unlock()
}

// DownloadBF16 converts src to bf16 on the device (round to nearest even;
// NaN stays NaN) and copies the halves into dst, waiting for queued work.
// dst[i] holds the upper 16 bits of the rounded float32.
func (b *Backend) DownloadBF16(dst []uint16, src compute.Buffer) {
	const op = "DownloadBF16"
	s := b.f32(op, "src", src, len(dst))
	if s == nil || len(dst) == 0 {
		return
	}
	tmp := b.scratchBuf(op, "codec", len(dst)*2)
	if tmp == 0 {
		return
	}
	b.launch1D(op, kF32ToBF16, len(dst), pArg(s), tmp, lArg(len(dst)))
	b.download(unsafe.Pointer(&dst[0]), tmp, len(dst)*2)
}

// DownloadQ8 quantises src in blocks of block elements on the device and
// copies the result, waiting for queued work: scales[k] = max|x|/127 over
// block k (the last block may be shorter), q[i] = round-half-even(x[i]/scale)
// clamped to ±127, 0 where the scale is 0 (QuantizeQ8 is the host twin).
// So x ≈ q·scale.
func (b *Backend) DownloadQ8(q []int8, scales []float32, src compute.Buffer, block int) {
	const op = "DownloadQ8"
	s := b.f32(op, "src", src, len(q))
	if s == nil || len(q) == 0 {
		return
	}
	if block <= 0 {
		b.fail(op, "block size %d, must be positive", block)
		return
	}
	nb := cdiv(len(q), block)
	if len(scales) != nb {
		b.fail(op, "%d scales for %d blocks of %d", len(scales), nb, block)
		return
	}
	qb := cdiv(len(q), 256) * 256
	tmp := b.scratchBuf(op, "codec", qb+nb*4)
	if tmp == 0 {
		return
	}
	b.launch(op, kQ8Block, [3]int{nb}, [3]int{rowBlock(block)}, pArg(s), tmp, tmp+uint64(qb), lArg(len(q)), iArg(block))
	b.download(unsafe.Pointer(&q[0]), tmp, len(q))
	b.download(unsafe.Pointer(&scales[0]), tmp+uint64(qb), nb*4)
}
