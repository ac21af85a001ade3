// Package allreduce sums gradient buffers across the members of a training
// ring: a bandwidth-optimal ring reduce-scatter then all-gather, chunked and
// pipelined, over a Transport (gRPC between processes, or in memory for
// tests), with gradients compressed by a codec chosen per run (none, bf16,
// bf16-zstd, int8 with error feedback, PowerSGD).
//
// A Reducer owns one member's side of the ring. The cluster decides the ring
// (its members, their order and the generation number) and passes it in; the
// node drives one step at a time:
//
//	r.Begin(ctx, gen, step, grad) // grad is the flat gradient buffer
//	... backward calls r.Ready(lo, hi) as gradient ranges become final ...
//	err := r.Wait()               // grad now holds the sum over the ring
//
// Gradients are grouped into buckets from the end of the buffer (backward
// produces the last layers first); each bucket is reduced as soon as it is
// ready, so communication overlaps the rest of backward. For a fixed ring
// order the result is bitwise deterministic, and identical on every member.
//
// Any failure (a peer that dies, stalls past Config.Deadline, or sends a
// malformed message) makes Wait return an error on every member, naming the
// peer; the caller then agrees on a new generation and redoes the step.
//
// PROFILE.md records where the ring's CPU goes and what was done about it;
// powersgd.go describes the PowerSGD codec and how its state stays equal
// on every member across ring changes.
package allreduce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Peer is one ring member.
type Peer struct {
	Name string // for messages and logs
	Addr string // the address its Transport is reached at
}

// Generation is the ring for a run of steps, decided by the cluster: the
// members in ring order and this member's index. Every message carries the
// generation ID; messages from an older one are refused.
type Generation struct {
	ID      uint64 // non-zero; a new ring gets a larger ID
	Members []Peer
	Rank    int
}

func (g Generation) String() string {
	return fmt.Sprintf("generation %d (rank %d of %d)", g.ID, g.Rank, len(g.Members))
}

func (g Generation) check(self string) error {
	if g.ID == 0 {
		return errors.New("generation ID 0 is reserved")
	}
	if len(g.Members) == 0 || len(g.Members) > 1<<16-1 {
		return fmt.Errorf("%d members (want 1 to %d)", len(g.Members), 1<<16-1)
	}
	if g.Rank < 0 || g.Rank >= len(g.Members) {
		return fmt.Errorf("rank %d out of range for %d members", g.Rank, len(g.Members))
	}
	if a := g.Members[g.Rank].Addr; a != self {
		return fmt.Errorf("member %d has address %q but this transport is %q", g.Rank, a, self)
	}
	seen := make(map[string]bool, len(g.Members))
	for _, m := range g.Members {
		if seen[m.Addr] {
			return fmt.Errorf("address %q appears twice", m.Addr)
		}
		seen[m.Addr] = true
	}
	return nil
}

// peer returns the member at rank i modulo the ring size.
func (g Generation) peer(i int) Peer {
	n := len(g.Members)
	return g.Members[((i%n)+n)%n]
}

// Config configures a Reducer. Zero fields take the defaults.
type Config struct {
	Codec       string        // none (default), bf16, bf16-zstd, int8 or powersgd
	BucketBytes int           // fp32 bytes per bucket; default 25 MiB
	ChunkBytes  int           // fp32 bytes per message; default 512 KiB, at most 4 MiB
	Deadline    time.Duration // longest wait for a peer; default 5 s
	// Checksum adds a CRC-32C of every gradient payload, checked on receipt.
	// TCP already checksums every segment on the wire; this also catches
	// corruption in memory or in a proxy, for about 15% of the ring's
	// throughput on loopback. Every member must agree on it.
	Checksum bool
	Logger   *slog.Logger // default slog.Default()

	// PowerSGD settings (codec powersgd, ignored by the others). Tensors
	// gives the shapes of the buffer's matrix-shaped tensors, sorted by
	// offset; whatever they do not cover is summed uncompressed.
	Tensors       []Tensor
	PowerSGDRank  int    // rank of the approximation; default 1
	PowerSGDStart uint64 // steps before this one are plain sums (start_powerSGD_iter)
	Seed          uint64 // seeds the initial Q; every member must agree
}

// Defaults.
const (
	DefaultBucketBytes = 25 << 20
	DefaultChunkBytes  = 512 << 10
	DefaultDeadline    = 5 * time.Second
	maxChunkBytes      = 4 << 20
)

// PeerError is a failure attributed to one peer. Every member of a failed
// ring returns one that names the same peer: the member that saw the failure
// blames its neighbour and the others learn of it through an abort message.
type PeerError struct {
	Peer   Peer   // the member blamed
	Op     string // "send", "receive", or "abort" (reported by another member)
	Err    error
	rank   int // Peer's rank, or -1 if unknown
	origin int // rank of the member that saw the failure
}

func (e *PeerError) Error() string {
	if e.Op == "abort" {
		return fmt.Sprintf("allreduce: ring aborted, peer %s (%s) failed: %v", e.Peer.Name, e.Peer.Addr, e.Err)
	}
	return fmt.Sprintf("allreduce: %s peer %s (%s): %v", e.Op, e.Peer.Name, e.Peer.Addr, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// Stats counts a Reducer's traffic since it was made.
type Stats struct {
	SentBytes, RecvBytes uint64 // message bytes, headers included
	Messages             uint64 // messages sent
	Stale                uint64 // messages refused for an older generation
}

type span struct{ lo, hi int }

// A Reducer is one member's side of the ring for a flat buffer of a fixed
// length. It runs one step at a time and reuses its buffers across steps.
type Reducer struct {
	t       Transport
	cfg     Config
	log     *slog.Logger
	info    *codecInfo
	enc     codec // used by the sender goroutine
	dec     codec // used by the receiver goroutine
	n       int
	chunk   int // elements per message
	buckets []span

	resid, next []float32 // int8 and powersgd error feedback: committed and in progress
	sendPool    Pool
	pending     *Frame   // a message for a newer generation, kept for it
	prefix      []int    // receive events before each hop
	flags       uint8    // of data messages: flagCRC with Config.Checksum
	views       [][]byte // receiver scratch: a payload's pieces
	scratch     []byte   // receiver scratch: a block codec's joined payload
	prog        progress
	genID       uint64 // generation of the last Begin
	psgd        *powerSGD
	loans       views    // zero-copy sends in the link's hands (zerocopy.go)
	sprefix     []int    // zero-copy sends before each of the first n hops
	lent        viewLink // the link the last run lent views to, until settled

	sent, recv, msgs, stale atomic.Uint64
	aborts                  sync.WaitGroup

	mu      sync.Mutex
	cond    sync.Cond
	running bool
	remain  []int
	ready   []bool
	all     bool
	err     error
	done    chan struct{}
	cancel  context.CancelFunc
}

// New returns a Reducer for flat buffers of n float32s on transport t.
func New(t Transport, n int, cfg Config) (*Reducer, error) {
	if n < 0 {
		return nil, fmt.Errorf("allreduce: negative buffer length %d", n)
	}
	if cfg.Codec == "" {
		cfg.Codec = CodecNone
	}
	info, err := codecByName(cfg.Codec)
	if err != nil {
		return nil, fmt.Errorf("allreduce: %w", err)
	}
	if cfg.BucketBytes == 0 {
		cfg.BucketBytes = DefaultBucketBytes
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.BucketBytes < 4:
		return nil, fmt.Errorf("allreduce: bucket of %d bytes is smaller than one float32", cfg.BucketBytes)
	case cfg.ChunkBytes < 4*Int8Block || cfg.ChunkBytes > maxChunkBytes:
		return nil, fmt.Errorf("allreduce: chunk of %d bytes (want %d to %d)", cfg.ChunkBytes, 4*Int8Block, maxChunkBytes)
	case cfg.Deadline < 0:
		return nil, fmt.Errorf("allreduce: negative deadline %v", cfg.Deadline)
	}
	enc, err := info.make()
	if err != nil {
		return nil, fmt.Errorf("allreduce: %w", err)
	}
	dec, err := info.make()
	if err != nil {
		return nil, fmt.Errorf("allreduce: %w", err)
	}
	r := &Reducer{
		t: t, cfg: cfg, log: cfg.Logger, info: info, enc: enc, dec: dec, n: n,
		chunk: cfg.ChunkBytes / 4 / Int8Block * Int8Block,
	}
	if cfg.Checksum {
		r.flags = flagCRC
	}
	r.cond.L = &r.mu
	r.prog.cond.L = &r.prog.mu
	per := max(1, cfg.BucketBytes/4)
	if info.name == CodecPowerSGD {
		if r.psgd, r.buckets, err = newPowerSGD(cfg, n); err != nil {
			return nil, fmt.Errorf("allreduce: %w", err)
		}
	} else {
		for hi := n; hi > 0; hi -= per {
			r.buckets = append(r.buckets, span{max(0, hi-per), hi})
		}
	}
	r.remain = make([]int, len(r.buckets))
	r.ready = make([]bool, len(r.buckets))
	if info.feedback {
		r.resid = make([]float32, n)
		r.next = make([]float32, n)
	}
	return r, nil
}

// Len is the length of the flat buffer.
func (r *Reducer) Len() int { return r.n }

// Buckets returns the bucket boundaries [lo, hi) in the order they are
// reduced (from the end of the buffer).
func (r *Reducer) Buckets() [][2]int {
	b := make([][2]int, len(r.buckets))
	for i, s := range r.buckets {
		b[i] = [2]int{s.lo, s.hi}
	}
	return b
}

// Stats returns traffic counters.
func (r *Reducer) Stats() Stats {
	return Stats{SentBytes: r.sent.Load(), RecvBytes: r.recv.Load(), Messages: r.msgs.Load(), Stale: r.stale.Load()}
}

// Residual returns the error-feedback residual (int8 and powersgd; nil
// otherwise):
// what this member could not send at the last step, added to its gradient at
// the next. It is training state: checkpoints save it. Call it between
// steps and copy the result: the slice is only valid until the next step.
func (r *Reducer) Residual() []float32 { return r.resid }

// SetResidual restores a residual saved with Residual (between steps).
func (r *Reducer) SetResidual(v []float32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return errors.New("allreduce: SetResidual during a step")
	}
	if r.resid == nil {
		if len(v) != 0 {
			return fmt.Errorf("allreduce: codec %s keeps no residual", r.info.name)
		}
		return nil
	}
	if len(v) != len(r.resid) {
		return fmt.Errorf("allreduce: residual of %d elements, want %d", len(v), len(r.resid))
	}
	copy(r.resid, v)
	return nil
}

// Allreduce sums grad across the ring in place: Begin, then Wait.
func (r *Reducer) Allreduce(ctx context.Context, gen Generation, step uint64, grad []float32) error {
	if err := r.Begin(ctx, gen, step, grad); err != nil {
		return err
	}
	return r.Wait()
}

// Begin starts the step: buckets are reduced, from the end of grad, as Ready
// declares them final. grad must stay untouched outside the ranges not yet
// declared ready until Wait returns. After an error its contents are
// undefined.
func (r *Reducer) Begin(ctx context.Context, gen Generation, step uint64, grad []float32) error {
	if len(grad) != r.n {
		return fmt.Errorf("allreduce: gradient of %d elements, reducer made for %d", len(grad), r.n)
	}
	if err := gen.check(r.t.Addr()); err != nil {
		return fmt.Errorf("allreduce: %v: %w", gen, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return errors.New("allreduce: Begin before the previous step's Wait")
	}
	r.aborts.Wait() // the last failure's abort message has gone out
	if gen.ID != r.genID {
		r.newGeneration(gen)
	}
	if r.psgd != nil {
		r.psgd.begin(gen.ID, step)
	}
	r.running, r.all, r.err = true, false, nil
	for i, b := range r.buckets {
		r.remain[i] = b.hi - b.lo
		r.ready[i] = false
	}
	ctx, r.cancel = context.WithCancel(ctx)
	r.done = make(chan struct{})
	go r.run(ctx, gen, step, grad)
	return nil
}

// newGeneration runs when a step begins in a ring other than the last
// step's: it lets the transport close its links to members that left.
func (r *Reducer) newGeneration(gen Generation) {
	r.genID = gen.ID
	if rt, ok := r.t.(Retainer); ok {
		addrs := make([]string, len(gen.Members))
		for i, m := range gen.Members {
			addrs[i] = m.Addr
		}
		rt.Retain(addrs)
	}
}

// Ready declares grad[lo:hi] final. Ranges must not overlap within a step.
func (r *Reducer) Ready(lo, hi int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running {
		return
	}
	if lo < 0 || hi > r.n || lo > hi {
		r.setErr(fmt.Errorf("allreduce: Ready(%d, %d) outside [0, %d)", lo, hi, r.n))
		return
	}
	for i, b := range r.buckets {
		o := min(hi, b.hi) - max(lo, b.lo)
		if o <= 0 {
			continue
		}
		r.remain[i] -= o
		if r.remain[i] < 0 {
			r.setErr(fmt.Errorf("allreduce: Ready(%d, %d) overlaps ranges already declared ready", lo, hi))
			return
		}
		if r.remain[i] == 0 {
			r.ready[i] = true
		}
	}
	r.cond.Broadcast()
}

// setErr records the step's first error; r.mu is held.
func (r *Reducer) setErr(err error) {
	if r.err == nil {
		r.err = err
		r.cancel()
	}
	r.cond.Broadcast()
}

// Wait declares the whole buffer ready (backward has finished), waits until
// every bucket is reduced and returns the first error.
func (r *Reducer) Wait() error {
	r.mu.Lock()
	if !r.running {
		r.mu.Unlock()
		return errors.New("allreduce: Wait without Begin")
	}
	r.all = true
	r.cond.Broadcast()
	done := r.done
	r.mu.Unlock()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running = false
	r.cancel()
	switch {
	case r.err != nil && r.psgd != nil:
		r.psgd.qGen = 0 // members may hold different Qs: draw them again
	case r.err == nil && r.resid != nil && (r.psgd == nil || r.psgd.step):
		r.resid, r.next = r.next, r.resid
	}
	return r.err
}

// run reduces the buckets in order as they become ready.
func (r *Reducer) run(ctx context.Context, gen Generation, step uint64, grad []float32) {
	defer close(r.done)
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	for i, b := range r.buckets {
		r.mu.Lock()
		for !r.ready[i] && !r.all && r.err == nil && ctx.Err() == nil {
			r.cond.Wait()
		}
		err := r.err
		if err == nil && ctx.Err() != nil {
			err = fmt.Errorf("allreduce: %w", ctx.Err())
			r.setErr(err)
		}
		r.mu.Unlock()
		if err != nil {
			return
		}
		reduce := r.reduce
		if r.psgd != nil {
			reduce = r.reducePowerSGD
		}
		if err := reduce(ctx, gen, step, i, grad[b.lo:b.hi], b.lo); err != nil {
			r.mu.Lock()
			r.setErr(err)
			r.mu.Unlock()
			r.abort(gen, step, uint32(i), err)
			r.letGo()
			return
		}
	}
}
