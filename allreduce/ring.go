package allreduce

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"
)

// The ring, for n members and a bucket x of N elements: x is cut into n
// segments, segment j being x[j·N/n : (j+1)·N/n], and each segment into
// chunks (Config.ChunkBytes, smaller for small buckets so that at least
// four chunks pipeline through each segment), one message each. There are 2(n−1)
// hops; at hop t member r sends segment (r−t) mod n to its right neighbour
// and receives segment (r−t−1) mod n from its left one. In the first n−1
// hops (reduce-scatter) it adds what it receives to its own values; at the
// end of them it holds the full sum of segment (r+1) mod n, which it rounds
// to the codec and sends on; in the last n−1 hops (all-gather) it stores what
// it receives and forwards the same bytes.
//
// Sending chunk c at hop t needs chunk c of hop t−1 to have been received, so
// a sender goroutine and a receiver goroutine run side by side, the transport
// moving bytes underneath: encoding, sending, receiving and decoding overlap.
// The sum of segment j is accumulated in the fixed order j, j+1, ..., j+n−1
// (mod n), so the result is bitwise deterministic for a ring order.

// progress hands received chunks from the receiver to the sender.
type progress struct {
	mu   sync.Mutex
	cond sync.Cond
	done int      // receive events completed
	fwd  []*Frame // all-gather messages to forward, in order
	head int
	err  error
	beat bool // time to tell the right neighbour this member is alive
}

func (p *progress) reset() {
	p.mu.Lock()
	p.done, p.head, p.err, p.beat = 0, 0, nil, false
	p.fwd = p.fwd[:0]
	p.mu.Unlock()
}

func (p *progress) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// mark records one more completed receive and, if f is not nil, queues it to
// be forwarded.
func (p *progress) mark(f *Frame) {
	p.mu.Lock()
	if f != nil {
		p.fwd = append(p.fwd, f)
	}
	p.done++
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *progress) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// tick asks a waiting sender to send a heartbeat.
func (p *progress) tick() {
	p.mu.Lock()
	p.beat = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// errBeat tells the sender to send a heartbeat and wait again.
var errBeat = errors.New("heartbeat due")

// wait blocks until need receives are complete and, if pop, returns the next
// message to forward. It returns errBeat when a heartbeat is due meanwhile.
func (p *progress) wait(need int, pop bool) (*Frame, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.done < need && p.err == nil && !p.beat {
		p.cond.Wait()
	}
	if p.err != nil {
		return nil, p.err
	}
	if p.done < need {
		p.beat = false
		return nil, errBeat
	}
	if !pop {
		return nil, nil
	}
	if p.head >= len(p.fwd) {
		return nil, errors.New("allreduce: internal error: no message to forward")
	}
	f := p.fwd[p.head]
	p.fwd[p.head] = nil
	p.head++
	return f, nil
}

// drain releases messages left unforwarded after a failure.
func (p *progress) drain() {
	p.mu.Lock()
	for i := p.head; i < len(p.fwd); i++ {
		p.fwd[i].Release()
		p.fwd[i] = nil
	}
	p.fwd, p.head = p.fwd[:0], 0
	p.mu.Unlock()
}

// ring is one bucket's run.
type ring struct {
	r      *Reducer
	gen    Generation
	step   uint64
	bucket uint32
	x      []float32
	// With error feedback: feed is the residual of the last step, added to
	// each element where this member first touches it (its own segment's
	// first send, the other segments' reduce-scatter receive); resid gets
	// what this member's encodes lose (every element is encoded by it
	// exactly once per step).
	feed, resid []float32
	n, rank     int
	chunk       int // elements per message
	left, right Peer
	link        Link
	// lend: codec none sends views of x over this link (zerocopy.go); the
	// send of hop t < n, chunk c has index r.sprefix[t]+c.
	lend viewLink
}

func mod(a, n int) int { return ((a % n) + n) % n }

// seg returns the bounds of segment j.
func (g *ring) seg(j int) (lo, hi int) {
	N := len(g.x)
	return j * N / g.n, (j + 1) * N / g.n
}

func (g *ring) chunks(j int) int {
	lo, hi := g.seg(j)
	return (hi - lo + g.chunk - 1) / g.chunk
}

// minChunk is the smallest message chunkFor picks, in elements (64 KiB).
const minChunk = 16 << 10

// chunkFor returns the elements per message for a bucket of N elements over
// n members: at most limit, and small enough that a segment is at least four
// messages (so that small buckets pipeline too), but not below minChunk (or
// limit if smaller). A multiple of Int8Block, and the same on every member.
func chunkFor(N, n, limit int) int {
	c := (N/n/4 + Int8Block - 1) / Int8Block * Int8Block
	return max(min(limit, minChunk), min(limit, c))
}

// reduce sums bucket i, x at offset off of the flat buffer, over the ring.
func (r *Reducer) reduce(ctx context.Context, gen Generation, step uint64, i int, x []float32, off int) error {
	var feed, resid []float32
	if r.resid != nil {
		feed, resid = r.resid[off:off+len(x)], r.next[off:off+len(x)]
	}
	if len(gen.Members) == 1 {
		for i, e := range feed {
			x[i] += e
		}
		clear(resid)
		return nil
	}
	return r.reduceRing(ctx, gen, step, uint32(i), x, feed, resid)
}

// reduceRing sums x over the ring: one run of messages tagged bucket. With
// error feedback, feed is the last step's residual for x and resid receives
// this step's.
func (r *Reducer) reduceRing(ctx context.Context, gen Generation, step uint64, bucket uint32, x, feed, resid []float32) error {
	n := len(gen.Members)
	if n == 1 {
		return nil
	}
	g := &ring{r: r, gen: gen, step: step, bucket: bucket, x: x, n: n, rank: gen.Rank, feed: feed, resid: resid,
		left: gen.peer(gen.Rank - 1), right: gen.peer(gen.Rank + 1), chunk: chunkFor(len(x), n, r.chunk)}
	dctx, cancel := context.WithTimeout(ctx, r.cfg.Deadline)
	link, err := r.t.Dial(dctx, g.right.Addr)
	cancel()
	if err != nil {
		return &PeerError{Peer: g.right, Op: "send", Err: err, rank: mod(g.rank+1, n), origin: g.rank}
	}
	g.link = link
	g.lendTo(link)
	hops := 2 * (n - 1)
	r.prefix = r.prefix[:0]
	sum := 0
	for t := 0; t <= hops; t++ {
		r.prefix = append(r.prefix, sum)
		if t < hops {
			sum += g.chunks(mod(g.rank-t-1, n))
		}
	}
	r.prog.reset()
	caller := ctx.Done()
	ctx, cancel = context.WithCancel(ctx)
	// While this member waits for its left neighbour, it tells its right one
	// that it is alive, so that only the neighbour of a stalled member times
	// out and the error names the right peer.
	every := max(r.cfg.Deadline/4, time.Millisecond)
	beats := time.NewTicker(every)
	go func() {
		for {
			select {
			case <-beats.C:
				r.prog.tick()
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		beats.Stop()
	}()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if err := g.send(ctx); err != nil {
			r.prog.fail(err)
			cancel()
		}
	}()
	if err := g.receive(ctx); err != nil {
		r.prog.fail(err)
		// Let the sender finish the message it is sending, so that the link
		// to the right stays whole and carries the abort (the neighbour then
		// learns the cause, not merely that the stream broke); cut it if that
		// takes long.
		grace := time.NewTimer(min(r.cfg.Deadline, abortGrace))
		select {
		case <-sent:
		case <-grace.C:
			cancel()
		}
		grace.Stop()
	}
	<-sent
	r.prog.drain()
	if r.prog.err == nil {
		// x goes back to the caller only once the link no longer reads it;
		// after a failure, run lets go of it (letGo).
		r.settle(caller)
	}
	return r.prog.err
}

// send runs the sending half of the ring.
func (g *ring) send(ctx context.Context) error {
	r := g.r
	for t := 0; t < 2*(g.n-1); t++ {
		j := mod(g.rank-t, g.n)
		lo, hi := g.seg(j)
		for c := 0; lo+c*g.chunk < hi; c++ {
			clo, chi := lo+c*g.chunk, min(lo+(c+1)*g.chunk, hi)
			var f *Frame
			for t > 0 {
				fw, err := r.prog.wait(r.prefix[t-1]+c+1, t >= g.n)
				if err == errBeat {
					if err := g.beat(ctx); err != nil {
						return err
					}
					continue
				}
				if err != nil {
					return err
				}
				f = fw
				break
			}
			if f != nil {
				rewrite(f.Buf, uint16(t), uint16(g.rank))
			} else if err := r.prog.failed(); err != nil {
				return err
			} else if f = g.viewFrame(t, c, clo, chi); f == nil {
				f = g.encode(t, c, clo, chi)
			}
			size := f.Len()
			sctx, cancel := context.WithTimeout(ctx, r.cfg.Deadline)
			err := g.link.Send(sctx, f)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return &PeerError{Peer: g.right, Op: "send", Err: err, rank: mod(g.rank+1, g.n), origin: g.rank}
			}
			r.sent.Add(uint64(size))
			r.msgs.Add(1)
		}
	}
	return nil
}

// beat sends a heartbeat to the right neighbour.
func (g *ring) beat(ctx context.Context) error {
	f := g.r.sendPool.Get(headerSize)
	h := header{kind: kindBeat, flags: flagCRC, gen: g.gen.ID, step: g.step, bucket: g.bucket, from: uint16(g.rank)}
	h.put(f.Buf, nil)
	sctx, cancel := context.WithTimeout(ctx, g.r.cfg.Deadline)
	defer cancel()
	if err := g.link.Send(sctx, f); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &PeerError{Peer: g.right, Op: "send", Err: err, rank: mod(g.rank+1, g.n), origin: g.rank}
	}
	return nil
}

// encode makes the message for chunk c (elements [lo, hi) of the bucket) of
// hop t < n. At hop n−1 this member owns the full sum and rounds its copy to
// what it sends, so that every member ends with the same values. With error
// feedback, the residual of the last step joins its own segment at hop 0,
// and what the codec loses goes to the residual of this step.
func (g *ring) encode(t, c, lo, hi int) *Frame {
	r := g.r
	src := g.x[lo:hi]
	var add, res []float32
	if g.resid != nil {
		res = g.resid[lo:hi]
		if t == 0 {
			add = g.feed[lo:hi]
		}
	}
	f := r.sendPool.Get(headerSize + r.info.maxSize(len(src)))
	f.Buf = r.enc.encode(f.Buf[:headerSize], src, add, res, r.info.lossy && t == g.n-1)
	h := header{kind: kindData, codec: r.info.id, flags: r.flags, gen: g.gen.ID, step: g.step, bucket: g.bucket,
		hop: uint16(t), from: uint16(g.rank), chunk: uint32(c), count: uint32(len(src))}
	h.put(f.Buf[:headerSize], f.Buf[headerSize:])
	return f
}

// receive runs the receiving half of the ring.
func (g *ring) receive(ctx context.Context) error {
	r := g.r
	hops := 2 * (g.n - 1)
	timer := time.NewTimer(r.cfg.Deadline)
	defer timer.Stop()
	for t := 0; t < hops; t++ {
		j := mod(g.rank-t-1, g.n)
		lo, hi := g.seg(j)
		for c := 0; lo+c*g.chunk < hi; c++ {
			clo, chi := lo+c*g.chunk, min(lo+(c+1)*g.chunk, hi)
			f, h, sum, err := g.next(ctx, timer)
			if err != nil {
				return err
			}
			want := header{kind: kindData, codec: r.info.id, flags: r.flags, gen: g.gen.ID, step: g.step, bucket: g.bucket,
				hop: uint16(t), from: uint16(mod(g.rank-1, g.n)), chunk: uint32(c), count: uint32(chi - clo)}
			if h != want {
				from, rank := g.peerAt(f.Peer), g.rankOf(f.Peer)
				f.Release()
				return &PeerError{Peer: from, Op: "receive", rank: rank, origin: g.rank,
					Err: fmt.Errorf("unexpected message %+v, want %+v", h, want)}
			}
			if t >= g.n-1 {
				// The all-gather overwrites what this member sent n−1 hops
				// before.
				if err := g.before(ctx, t, c); err != nil {
					f.Release()
					return err
				}
			}
			var feed []float32
			if g.feed != nil && t < g.n-1 {
				feed = g.feed[clo:chi]
			}
			if err := r.apply(g.x[clo:chi], feed, f, sum, t < g.n-1); err != nil {
				f.Release()
				return &PeerError{Peer: g.left, Op: "receive", Err: err, rank: mod(g.rank-1, g.n), origin: g.rank}
			}
			r.recv.Add(uint64(f.Len()))
			if t >= g.n-1 && t < hops-1 {
				r.prog.mark(f)
			} else {
				f.Release()
				r.prog.mark(nil)
			}
		}
	}
	return nil
}

// next returns the next data message of the current generation, with the
// payload checksum its header announces (apply checks it), waiting at most
// the deadline. It drops messages of older generations, keeps one of a newer
// generation for later (and fails), and turns aborts and broken streams into
// errors naming the peer.
func (g *ring) next(ctx context.Context, timer *time.Timer) (*Frame, header, uint32, error) {
	r := g.r
	for {
		f := r.pending
		r.pending = nil
		if f == nil {
			timer.Reset(r.cfg.Deadline)
			select {
			case f = <-r.t.Inbox():
			case <-timer.C:
				return nil, header{}, 0, &PeerError{Peer: g.left, Op: "receive", rank: mod(g.rank-1, g.n), origin: g.rank,
					Err: fmt.Errorf("no message within the %v deadline", r.cfg.Deadline)}
			case <-ctx.Done():
				return nil, header{}, 0, ctx.Err()
			}
		}
		if f.Err != nil {
			if f.Peer == g.left.Addr && (f.LastGen == 0 || f.LastGen >= g.gen.ID) {
				err := f.Err
				f.Release()
				return nil, header{}, 0, &PeerError{Peer: g.left, Op: "receive", Err: err, rank: mod(g.rank-1, g.n), origin: g.rank}
			}
			f.Release() // the end of a stream from an old ring
			continue
		}
		hb := f.header()
		h, sum, err := decodeHeader(hb, f.Len()-len(hb))
		if err == nil && h.kind != kindData {
			// Control messages are small: check them whole, checksum included.
			h, _, err = decodeMessage(f.bytes())
		}
		if err != nil {
			from, rank := g.peerAt(f.Peer), g.rankOf(f.Peer)
			f.Release()
			return nil, header{}, 0, &PeerError{Peer: from, Op: "receive", Err: fmt.Errorf("malformed message: %w", err), rank: rank, origin: g.rank}
		}
		switch {
		case h.gen < g.gen.ID:
			r.stale.Add(1)
			r.log.Debug("allreduce: refused message", "from", f.Peer, "generation", h.gen, "current", g.gen.ID)
			f.Release()
			continue
		case h.gen > g.gen.ID:
			r.pending = f
			return nil, header{}, 0, &PeerError{Peer: g.peerAt(f.Peer), Op: "receive", rank: g.rankOf(f.Peer), origin: g.rank,
				Err: fmt.Errorf("peer is at generation %d, this member at %d", h.gen, g.gen.ID)}
		case h.kind == kindBeat:
			f.Release()
			continue
		case h.kind == kindAbort:
			// hop carries the rank blamed, chunk the rank that saw the failure.
			blamed, origin := int(h.hop), int(h.chunk)
			if blamed >= g.n || origin >= g.n {
				blamed, origin = g.rankOf(f.Peer), g.rankOf(f.Peer)
			}
			who := Peer{Name: "unknown", Addr: f.Peer}
			if blamed >= 0 {
				who = g.gen.Members[blamed]
			}
			reason := string(f.Buf[headerSize:])
			f.Release()
			return nil, header{}, 0, &PeerError{Peer: who, Op: "abort", Err: errors.New(reason), rank: blamed, origin: origin}
		}
		return f, h, sum, nil
	}
}

// applyRun is how many payload bytes apply checksums and then hands to the
// codec at a time: few enough that the codec reads them from cache.
const applyRun = 16 << 10

// apply adds the payload of f to dst (or, if add is false, writes it there)
// after adding feed to dst if it is not nil, and, when the ring runs with checksums, checks it against sum. Each run of
// bytes is checksummed and then decoded while still in cache, so the payload
// is read from memory once; if the checksum fails, dst holds garbage and the
// step fails. Codecs
// of fixed-width elements decode the payload in place, piece by piece (an
// element split between two of gRPC's buffers is joined first); block codecs
// get it joined into one scratch buffer.
func (r *Reducer) apply(dst, feed []float32, f *Frame, sum uint32, add bool) error {
	r.views = f.payload(r.views[:0])
	// code decodes p into dst[lo:hi].
	code := func(lo, hi int, p []byte) error {
		if !add {
			return r.dec.decode(dst[lo:hi], p)
		}
		var e []float32
		if feed != nil {
			e = feed[lo:hi]
		}
		return r.dec.accumulate(dst[lo:hi], p, e)
	}
	var crc uint32
	check := r.flags&flagCRC != 0
	w := r.info.width
	if w == 0 {
		// A block codec needs its payload in one piece: join the pieces
		// unless there is only one.
		var buf []byte
		switch len(r.views) {
		case 0:
		case 1:
			buf = r.views[0]
		default:
			buf = r.scratch[:0]
			for _, v := range r.views {
				buf = append(buf, v...)
			}
			r.scratch = buf
		}
		if check {
			if got := crc32.Checksum(buf, castagnoli); got != sum {
				return errChecksum{got, sum}
			}
		}
		return code(0, len(dst), buf)
	}
	var carry [4]byte
	nc, i := 0, 0
	put := func(b []byte) error {
		m := len(b) / w
		if i+m > len(dst) {
			return fmt.Errorf("%d bytes of payload for %d elements", len(b)+i*w, len(dst))
		}
		i += m
		return code(i-m, i, b)
	}
	for _, v := range r.views {
		for len(v) > 0 {
			run := v[:min(len(v), applyRun)]
			v = v[len(run):]
			if check {
				crc = crc32.Update(crc, castagnoli, run)
			}
			if nc > 0 {
				k := copy(carry[nc:w], run)
				nc += k
				run = run[k:]
				if nc < w {
					continue
				}
				if err := put(carry[:w]); err != nil {
					return err
				}
				nc = 0
			}
			m := len(run) / w * w
			if m > 0 {
				if err := put(run[:m]); err != nil {
					return err
				}
			}
			nc = copy(carry[:], run[m:])
		}
	}
	if check && crc != sum {
		return errChecksum{crc, sum}
	}
	if i != len(dst) || nc != 0 {
		return fmt.Errorf("%d bytes of payload for %d elements", i*w+nc, len(dst))
	}
	return nil
}

// rankOf returns the rank of the member at addr, or -1.
func (g *ring) rankOf(addr string) int {
	for i, m := range g.gen.Members {
		if m.Addr == addr {
			return i
		}
	}
	return -1
}

// peerAt names the member at addr.
func (g *ring) peerAt(addr string) Peer {
	for _, m := range g.gen.Members {
		if m.Addr == addr {
			return m
		}
	}
	return Peer{Name: "non-member", Addr: addr}
}

// abortGrace bounds how long a failed member waits for its sender to finish
// the message in flight.
const abortGrace = 200 * time.Millisecond

// abortTimeout bounds the attempt to tell the right neighbour about a failure.
const abortTimeout = 2 * time.Second

// abort tells the right neighbour that this step failed, and whom it blames,
// so that the failure travels around the ring instead of waiting for
// deadlines. It is skipped when the right neighbour is the one blamed (it is
// gone or stuck) or the member where the failure was first seen (the news
// has gone round).
func (r *Reducer) abort(gen Generation, step uint64, bucket uint32, cause error) {
	n := len(gen.Members)
	if n < 2 {
		return
	}
	right := mod(gen.Rank+1, n)
	blamed, origin := -1, gen.Rank
	text := cause.Error()
	var pe *PeerError
	if errors.As(cause, &pe) {
		blamed = pe.rank
		if pe.Op == "abort" {
			origin = pe.origin
			text = pe.Err.Error() // forward the original reason
		}
	}
	if blamed == right || origin == right {
		return
	}
	if blamed < 0 {
		blamed = 1<<16 - 1 // unknown
	}
	if len(text) > maxAbortText {
		text = text[:maxAbortText]
	}
	r.aborts.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), min(abortTimeout, r.cfg.Deadline))
		defer cancel()
		to := gen.Members[right]
		link, err := r.t.Dial(ctx, to.Addr)
		if err != nil {
			r.log.Debug("allreduce: cannot send abort", "to", to.Name, "err", err)
			return
		}
		f := r.sendPool.Get(headerSize + len(text))
		copy(f.Buf[headerSize:], text)
		h := header{kind: kindAbort, flags: flagCRC, gen: gen.ID, step: step, bucket: bucket, from: uint16(gen.Rank),
			hop: uint16(blamed), chunk: uint32(origin)}
		h.put(f.Buf[:headerSize], f.Buf[headerSize:])
		if err := link.Send(ctx, f); err != nil {
			r.log.Debug("allreduce: cannot send abort", "to", to.Name, "err", err)
		}
	})
}
