package allreduce

import (
	"sync"
	"time"
	"unsafe"

	"google.golang.org/grpc/mem"
)

// Zero-copy sends. With codec none a message's payload is the bucket's own
// bytes: the sender hands the transport a view of x instead of a copy, and
// the transport releases the view once it has written it (gRPC writes
// asynchronously, after Send returns). Until then x's bytes under the view
// must not change. Within one ring run only the all-gather writes over
// bytes this member sent (a reduce-scatter hop's segment comes back summed
// n−1 hops later), so the receiver waits for that send's release before it
// decodes there; and the run waits for every release before it returns x
// to the caller.

// zeroCopyMin is the smallest payload sent as a view: below gRPC's pooling
// threshold a buffer is never released, and small copies cost nothing.
const zeroCopyMin = 4 << 10

// views tracks the zero-copy sends of one run.
type views struct {
	mu    sync.Mutex
	cond  sync.Cond
	epoch uint64 // run; releases from an earlier run are ignored
	done  []bool // per send index: released
	sent  []bool // per send index: handed to the transport
	out   int    // handed over and not yet released
}

// reset starts a run of n possible zero-copy sends.
func (v *views) reset(n int) {
	v.mu.Lock()
	v.epoch++
	v.done = append(v.done[:0], make([]bool, n)...)
	v.sent = append(v.sent[:0], make([]bool, n)...)
	v.out = 0
	v.mu.Unlock()
}

// buffer returns p as a transport buffer that marks send i released when
// the transport lets go of it.
func (v *views) buffer(i int, p []float32) mem.Buffer {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&p[0])), 4*len(p))
	v.mu.Lock()
	v.sent[i] = true
	v.out++
	rel := &viewRelease{v: v, epoch: v.epoch, i: i}
	v.mu.Unlock()
	return mem.NewBuffer(&b, rel)
}

// released reports whether send i is no longer in the transport's hands
// (or was never handed to it).
func (v *views) released(i int) bool {
	return !v.sent[i] || v.done[i]
}

// wait blocks until send i is released, stop is closed, or the deadline
// passes; it reports whether the send was released.
func (v *views) wait(i int, stop <-chan struct{}, deadline time.Duration) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if i >= len(v.sent) || v.released(i) {
		return true
	}
	wake := v.wake(stop, deadline)
	defer wake.Stop()
	for !v.released(i) && !wake.fired {
		v.cond.Wait()
	}
	return v.released(i)
}

// waitAll blocks until every send of the run is released, stop is closed,
// or the deadline passes; it reports whether all were released.
func (v *views) waitAll(stop <-chan struct{}, deadline time.Duration) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.out == 0 || deadline <= 0 {
		return v.out == 0
	}
	wake := v.wake(stop, deadline)
	defer wake.Stop()
	for v.out > 0 && !wake.fired {
		v.cond.Wait()
	}
	return v.out == 0
}

// abandon forgets the run's outstanding sends (the link that held them was
// closed, so the transport will not read them again).
func (v *views) abandon() {
	v.mu.Lock()
	v.epoch++
	v.out = 0
	v.mu.Unlock()
}

// waker ends a wait on the cond when stop closes or the deadline passes.
type waker struct {
	timer *time.Timer
	quit  chan struct{}
	fired bool // guarded by v.mu
}

func (v *views) wake(stop <-chan struct{}, deadline time.Duration) *waker {
	w := &waker{quit: make(chan struct{})}
	fire := func() {
		v.mu.Lock()
		w.fired = true
		v.cond.Broadcast()
		v.mu.Unlock()
	}
	w.timer = time.AfterFunc(deadline, fire)
	go func() {
		select {
		case <-stop:
			fire()
		case <-w.quit:
		}
	}()
	return w
}

func (w *waker) Stop() {
	w.timer.Stop()
	close(w.quit)
}

// viewRelease is the mem.BufferPool through which the transport returns a
// view: it marks the send released.
type viewRelease struct {
	v     *views
	epoch uint64
	i     int
}

func (r *viewRelease) Get(n int) *[]byte { b := make([]byte, n); return &b }

func (r *viewRelease) Put(*[]byte) {
	v := r.v
	v.mu.Lock()
	if r.epoch == v.epoch && !v.done[r.i] {
		v.done[r.i] = true
		v.out--
		v.cond.Broadcast()
	}
	v.mu.Unlock()
}
