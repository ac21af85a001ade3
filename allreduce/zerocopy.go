package allreduce

import (
	"context"
	"sync"
	"time"
	"unsafe"

	"google.golang.org/grpc/mem"
)

// Zero-copy sends of codec none. Its payload is the bucket's own bytes, so
// the sender lends the link a view of x instead of copying x into a frame.
// Over a gathered gRPC link (see sendConn) nothing copies the view before
// the kernel does: gRPC hands slices of it to sendConn.Write from its writer
// goroutine, after Send has returned, and sendConn keeps them until its
// writev. Until the link gives a view back, x's bytes under it must not
// change and x must not go back to the caller.
//
// So a run waits for its views twice. The receiver, before it overwrites a
// segment in the all-gather (the segment this member sent n−1 hops
// earlier), waits for that send's views; the data it overwrites them with
// depends on them having arrived, so this wait is short. The run, before x
// goes back to the caller, waits for all of them: on success for as long as
// the deadline (the right neighbour may still be reading), after a failure
// until the abort message, queued behind them on the same stream, has gone
// out. A view the link can no longer read is as good as given back: once
// its connection has failed, sendConn writes nothing. If a wait runs out,
// the link is abandoned: its connection is closed under sendConn's lock,
// which returns only once no write is in progress, and sendConn reads
// nothing afterwards. A send-side loss thus never fails a step that the
// member completed (the rule that every member fails or none does).
//
// Under transport security gRPC copies a message into its write buffer in
// its writer goroutine after Send returns, and a message queued on a broken
// connection may never be given back, with no way to stop gRPC reading it
// short of waiting for that goroutine to end: such links are sent copies.

// viewMin is the smallest payload sent as a view: gRPC never gives back a
// buffer under its pooling threshold (1 KiB), and sendConn copies pieces
// under refMin anyway.
const viewMin = refMin

// A viewLink is a Link that can be lent views of the sender's memory.
type viewLink interface {
	Link
	// lends reports whether Send may be given frames whose parts are views,
	// and returns a channel that is closed once the link reads no byte of
	// them anymore (its connection failed).
	lends() (dead <-chan struct{}, ok bool)
	// abandon breaks the link so that it reads no byte handed to Send
	// afterwards; it returns once that holds.
	abandon()
	isBroken() bool
}

// views tracks the zero-copy sends of one ring run.
type views struct {
	mu    sync.Mutex
	cond  sync.Cond
	epoch uint64 // run; a give-back from an earlier run is ignored
	lent  []bool // per send index: handed to the link
	back  []bool // per send index: given back
	out   int    // lent and not given back
	lends uint64 // views lent over the life of the link (tests)
	dead  <-chan struct{}
}

// reset starts a run of at most n sends over a link whose connection
// closes dead when it fails.
func (v *views) reset(n int, dead <-chan struct{}) {
	v.mu.Lock()
	if v.cond.L == nil {
		v.cond.L = &v.mu
	}
	v.epoch++
	v.lent = append(v.lent[:0], make([]bool, n)...)
	v.back = append(v.back[:0], make([]bool, n)...)
	v.out = 0
	v.dead = dead
	v.mu.Unlock()
}

// lend returns p, the payload of send i, as a buffer that marks the send
// given back when the link frees it.
func (v *views) lend(i int, p []byte) mem.Buffer {
	p = p[:len(p):len(p)]
	v.mu.Lock()
	v.lent[i] = true
	v.out++
	v.lends++
	rel := &viewBack{v: v, epoch: v.epoch, i: i}
	v.mu.Unlock()
	return mem.NewBuffer(&p, rel)
}

// settled reports, with v.mu held, whether send i (every send if i < 0) is
// no longer read by the link.
func (v *views) settled(i int) bool {
	select {
	case <-v.dead:
		return true
	default:
	}
	if i < 0 {
		return v.out == 0
	}
	return i >= len(v.lent) || !v.lent[i] || v.back[i]
}

// wait blocks until send i (every send if i < 0) is no longer read by the
// link, stop is closed, or d has passed; it reports whether the send is
// settled.
func (v *views) wait(i int, stop <-chan struct{}, d time.Duration) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.settled(i) {
		return true
	}
	if d <= 0 {
		return false
	}
	fired := false
	wake := func() {
		v.mu.Lock()
		fired = true
		v.cond.Broadcast()
		v.mu.Unlock()
	}
	timer := time.AfterFunc(d, wake)
	defer timer.Stop()
	quit := make(chan struct{})
	defer close(quit)
	dead := v.dead
	go func() {
		select {
		case <-stop:
		case <-dead:
		case <-quit:
			return
		}
		wake()
	}()
	for !v.settled(i) && !fired {
		v.cond.Wait()
	}
	return v.settled(i)
}

// idle reports whether nothing lent is still out.
func (v *views) idle() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.settled(-1)
}

// drop forgets the run's outstanding sends: their link was abandoned.
func (v *views) drop() {
	v.mu.Lock()
	v.epoch++
	v.out = 0
	clear(v.lent)
	v.cond.Broadcast()
	v.mu.Unlock()
}

// viewBack is the mem.BufferPool through which a link gives a view back.
type viewBack struct {
	v     *views
	epoch uint64
	i     int
}

func (*viewBack) Get(n int) *[]byte { b := make([]byte, n); return &b }

func (r *viewBack) Put(*[]byte) {
	v := r.v
	v.mu.Lock()
	if r.epoch == v.epoch && v.lent[r.i] && !v.back[r.i] {
		v.back[r.i] = true
		v.out--
		v.cond.Broadcast()
	}
	v.mu.Unlock()
}

// viewFrame makes the message for chunk c of hop t (elements [lo, hi) of the
// bucket, hop t < n) with the chunk itself as its payload, or returns nil if
// the chunk is sent as a copy.
func (g *ring) viewFrame(t, c, lo, hi int) *Frame {
	if g.lend == nil || 4*(hi-lo) < viewMin {
		return nil
	}
	r := g.r
	src := g.x[lo:hi]
	p := unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src))
	f := r.sendPool.Get(headerSize)
	h := header{kind: kindData, codec: r.info.id, flags: r.flags, gen: g.gen.ID, step: g.step, bucket: g.bucket,
		hop: uint16(t), from: uint16(g.rank), chunk: uint32(c), count: uint32(len(src))}
	h.put(f.Buf, p)
	f.parts = append(f.parts, r.loans.lend(r.sprefix[t]+c, p))
	return f
}

// lendTo prepares a run of g over link to send views, if the codec and the
// link allow it.
func (g *ring) lendTo(link Link) {
	r := g.r
	vl, ok := link.(viewLink)
	if !ok || r.info.name != CodecNone || g.feed != nil || !littleEndian {
		return
	}
	dead, ok := vl.lends()
	if !ok {
		return
	}
	g.lend = vl
	r.sprefix = r.sprefix[:0]
	sum := 0
	for t := 0; t < g.n; t++ {
		r.sprefix = append(r.sprefix, sum)
		sum += g.chunks(mod(g.rank-t, g.n))
	}
	r.loans.reset(sum, dead)
	r.lent = vl
}

// before waits, ahead of the all-gather receive of chunk c at hop t, until
// the link no longer reads the views of the same chunk sent at hop t−n+1.
func (g *ring) before(ctx context.Context, t, c int) error {
	if g.lend == nil {
		return nil
	}
	r := g.r
	if r.loans.wait(r.sprefix[t-g.n+1]+c, ctx.Done(), r.cfg.Deadline) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return &PeerError{Peer: g.right, Op: "send", rank: mod(g.rank+1, g.n), origin: g.rank,
		Err: errNotTaken(r.cfg.Deadline)}
}

type errNotTaken time.Duration

func (e errNotTaken) Error() string {
	return "data not taken within the " + time.Duration(e).String() + " deadline"
}

// settle runs at the end of a successful run that lent views: it waits for
// the link to give them all back, for at most the deadline (the right
// neighbour may still be reading them) or until stop closes, and abandons
// the link if they are not back by then.
func (r *Reducer) settle(stop <-chan struct{}) {
	l := r.lent
	if l == nil {
		return
	}
	r.lent = nil
	if r.loans.wait(-1, stop, r.cfg.Deadline) {
		return
	}
	r.log.Warn("allreduce: the right neighbour did not take this member's data within the deadline; dropping the link")
	l.abandon()
	r.loans.drop()
}

// letGo runs after a failed run that lent views, once the abort message is
// on its way: the link is abandoned unless it gives the views back soon.
// Over a healthy link they go out ahead of the abort; a broken link is
// abandoned at once.
func (r *Reducer) letGo() {
	l := r.lent
	if l == nil {
		return
	}
	r.lent = nil
	if r.loans.idle() {
		return
	}
	if !l.isBroken() {
		r.aborts.Wait()
		if r.loans.wait(-1, nil, abortGrace) {
			return
		}
	}
	l.abandon()
	r.loans.drop()
}
