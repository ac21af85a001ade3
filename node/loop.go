package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/diffusion"
	"github.com/difftrain/difftrain/train"
)

// loop runs steps until the run is done or ctx ends. A step that fails on
// any member is redone by the next generation's ring: same global step, the
// global batch split over the survivors, so no sample is lost or doubled.
func (n *Node) loop(ctx context.Context) error {
	began := time.Now()
	var cur cluster.Generation
	var ag allreduce.Generation
	retries := 0
	var adopted uint64 // generation whose state this node already took
	for n.tr == nil || n.step < int64(n.cfg.Steps) {
		if ctx.Err() != nil || (n.opt.MaxDuration > 0 && time.Since(began) > n.opt.MaxDuration) {
			n.log.Info("stopping", "step", n.step, "reason", stopReason(ctx))
			break
		}
		gen, err := n.cl.AtStep(ctx, uint64(n.step))
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			if n.doneEarly(err) {
				break
			}
			return err
		}
		if gen.ID != cur.ID {
			me := gen.Ring[gen.Rank(n.cl.Name())]
			// A node needs the ring's state when it has none, is at another
			// step, or is new to a ring that had a predecessor. In a first
			// generation (Base 0) every member is new and the seed's state
			// is the run's.
			if n.tr == nil || int64(gen.Start) != n.step || (me.Fresh && gen.Base != 0 && adopted != gen.ID) {
				err := n.adopt(ctx, gen)
				if err == nil {
					adopted = gen.ID
				} else {
					n.log.Warn("taking state from the ring failed", "gen", gen.ID, "err", err)
					time.Sleep(time.Second) // don't spin generations on a persistent failure
					n.cl.ReportFailure(gen.ID, "", err)
					if _, err := n.cl.WaitGeneration(ctx, gen.ID); err != nil && ctx.Err() == nil && !n.doneEarly(err) {
						return err
					}
				}
				continue
			}
			n.serveIfDonor(gen)
			cur = gen
			ag = allreduce.Generation{ID: gen.ID, Rank: gen.Rank(n.cl.Name())}
			for _, m := range gen.Ring {
				ag.Members = append(ag.Members, allreduce.Peer{Name: m.Name, Addr: m.Addr})
			}
			n.obs.generation(gen)
			n.writePeers(gen)
			n.log.Info("training in a new ring", "gen", gen.ID, "start", gen.Start, "members", len(gen.Ring), "rank", ag.Rank, "coordinator", gen.Coordinator)
		}
		rec, err := n.runStep(ctx, ag)
		rec, err = n.nonFinite(rec, err, ag)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			if fatal(err) { // badstep.go
				return err
			}
			select {
			case <-n.cl.Interrupt():
				// A new generation was acknowledged mid-step: redo the step
				// in it (AtStep returns it once committed).
				n.log.Info("step interrupted by a new generation", "step", n.step)
			default:
				peer := blame(err)
				n.cl.ReportFailure(cur.ID, peer, err)
				if _, err := n.cl.WaitGeneration(ctx, cur.ID); err != nil && ctx.Err() == nil && !n.doneEarly(err) {
					return err
				}
			}
			retries++
			if retries >= maxStepRetries {
				return retryError(n.step, retries, err)
			}
			continue
		}
		n.cl.Applied(uint64(n.step + 1))
		rec.Retries, retries = retries, 0
		n.step++
		rec.Step = n.step
		n.obs.step(rec, n.cl, n.cfg.Steps)
		if n.opt.OnStep != nil {
			n.opt.OnStep(rec)
		}
		if err := n.afterStep(); err != nil { // ckpt.go: due and retried saves
			return err
		}
	}
	if n.tr != nil && n.step >= int64(n.cfg.Steps) {
		// Members still waiting for a ring exit instead of training
		// on their own.
		n.cl.SetDone()
	}
	if n.tr != nil && !n.late {
		if err := n.save(true); err != nil {
			return err
		}
	}
	n.obs.done()
	return nil
}

func stopReason(ctx context.Context) string {
	if ctx.Err() != nil {
		return "signal"
	}
	return "--max-duration reached"
}

// blame names the peer an allreduce error is attributed to.
func blame(err error) string {
	var pe *allreduce.PeerError
	if errors.As(err, &pe) {
		return pe.Peer.Name
	}
	return ""
}

// checksumError stops training: replicas have diverged.
type checksumError struct {
	step int64
	mine uint64
}

func (e *checksumError) Error() string {
	return fmt.Sprintf("weight checksums differ across the ring at step %d (this node: %016x): replicas have diverged; stopping rather than training them further. Resume all nodes from the last checkpoint", e.step, e.mine)
}

// runStep runs step n.step in ring ag, abandoning it when the cluster
// interrupts.
func (n *Node) runStep(ctx context.Context, ag allreduce.Generation) (Record, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	intr := n.cl.Interrupt()
	go func() {
		select {
		case <-intr:
			cancel()
		case <-sctx.Done():
		}
	}()
	world := len(ag.Members)
	checksum := n.opt.ChecksumEvery > 0 && world > 1 && n.step%int64(n.opt.ChecksumEvery) == 0
	sync := &ringSync{n: n, gen: ag, checksum: checksum}
	n.src.Prefetch(n.nextRange(ag.Rank, world))
	t0 := time.Now()
	sent0 := n.grad.Stats().SentBytes
	res, err := n.tr.Step(sctx, n.src, n.step, ag.Rank, world, sync)
	if err != nil {
		if sync.diverged != nil {
			return Record{}, sync.diverged
		}
		return Record{}, err
	}
	if n.opt.OnSample != nil {
		n.opt.OnSample(n.step, res.Lo, res.Hi)
	}
	if n.samples != nil {
		// The whole ring's split: a member killed after the gradient sum
		// cannot log its part, but its samples were consumed.
		for r := 0; r < world; r++ {
			lo, hi, _ := dataset.Split(n.step, n.cfg.Batch, r, world)
			fmt.Fprintf(n.samples, "%d %d %d %d %d\n", n.step, lo, hi, ag.ID, r)
		}
	}
	sum := res.Global.Summary(n.tr.Divisor())
	wall := time.Since(t0)
	tokens := float64(n.cfg.Batch * n.cfg.Model.SeqLen)
	return Record{
		Time: time.Now(), Loss: sum.Loss, Elbo: sum.Elbo, KL: sum.KL, IS: sum.IS, PPL: sum.PPL, LR: res.LR,
		Tokens: tokens, TokensPerS: tokens / wall.Seconds(), StepS: wall.Seconds(),
		DataS: res.Data.Seconds(), ComputeS: res.Compute.Seconds(), CommS: res.Comm.Seconds(),
		Members: world, Generation: ag.ID, WireBytes: int64(n.grad.Stats().SentBytes - sent0),
	}, nil
}

// nextRange is the part of the next step this node will read, for prefetch.
func (n *Node) nextRange(rank, world int) (int64, int64) {
	lo, hi, err := dataset.Split(n.step+1, n.cfg.Batch, rank, world)
	if err != nil {
		return 0, 0
	}
	return lo, hi
}

// ringSync is the train.GradSync of one step: the gradient Reducer, then the
// statistics (metrics and, every K steps, the weight checksum) over the same
// ring.
type ringSync struct {
	n        *Node
	gen      allreduce.Generation
	checksum bool
	ctx      context.Context
	step     int64
	diverged *checksumError
	vec      [statsLen]float32
}

func (s *ringSync) Start(ctx context.Context, step int64, grads []float32) error {
	s.ctx, s.step = ctx, step
	return s.n.grad.Begin(ctx, s.gen, uint64(step), grads)
}

func (s *ringSync) Ready(lo, hi int) { s.n.grad.Ready(lo, hi) }

func (s *ringSync) Wait(local diffusion.Metrics) (diffusion.Metrics, error) {
	if err := s.n.grad.Wait(); err != nil {
		return diffusion.Metrics{}, err
	}
	v := s.vec[:]
	clear(v)
	putMetrics(v, local)
	var mine uint64
	if s.checksum {
		params, err := s.n.hostParams()
		if err != nil {
			return diffusion.Metrics{}, err
		}
		mine = checksumStats(params, v[nMetrics:])
	}
	if err := s.n.stats.Allreduce(s.ctx, s.gen, uint64(s.step), v); err != nil {
		return diffusion.Metrics{}, err
	}
	if s.checksum {
		if !checksumsAgree(v[nMetrics:], len(s.gen.Members)) {
			s.diverged = &checksumError{step: s.step, mine: mine}
			return diffusion.Metrics{}, s.diverged
		}
		s.n.log.Debug("weight checksums agree", "step", s.step, "checksum", fmt.Sprintf("%016x", mine))
	}
	// The update is applied only if no new generation was proposed since
	// the step began: the boundary this member acknowledged stays true.
	if err := s.n.cl.BeginApply(); err != nil {
		return diffusion.Metrics{}, err
	}
	return metricsOf(v), nil
}

// hostState returns the replica's state in host memory: the backend's own
// buffers when they live there, else a download into a reused mirror.
func (n *Node) hostState() (train.State, error) {
	if s, ok := n.tr.View(); ok {
		return s, nil
	}
	err := n.tr.Snapshot(&n.hostSt)
	return n.hostSt, err
}

// hostParams returns the parameters in host memory.
func (n *Node) hostParams() ([]float32, error) {
	s, err := n.hostState()
	if err != nil {
		return nil, fmt.Errorf("downloading parameters for the weight checksum: %w", err)
	}
	return s.Params, nil
}

// serveIfDonor snapshots this member's state at the start of every ring
// with other members, so that any member that lacks it (a joiner, a member
// behind gen.Start, or one that was admitted before it ever got state) can
// fetch it. The cluster cannot tell which members hold state; a snapshot is
// one host copy, and rings change rarely.
func (n *Node) serveIfDonor(gen cluster.Generation) {
	me := gen.Ring[gen.Rank(n.cl.Name())]
	if len(gen.Ring) < 2 || (me.Fresh && gen.Base != 0) {
		return
	}
	sn := &snapshot{hdr: stateHeader{Step: n.step, Config: n.configJSON()}}
	if err := n.tr.Snapshot(&sn.state); err != nil {
		n.log.Error("state snapshot for joiners", "err", err)
		return
	}
	// Error-feedback residuals are each member's own; a joiner starts
	// with none rather than a copy of the donor's.
	sn.seal()
	n.states.set(sn)
	n.log.Debug("serving state", "step", n.step, "sha256", sn.hdr.SHA256[:16])
}

// donors lists the members that may hold the state of gen.Start, those that
// were in the previous ring at that step first. Members without state answer
// "no snapshot" and the next is tried.
func donors(gen cluster.Generation, self string) []cluster.Member {
	var first, rest []cluster.Member
	for _, m := range gen.Ring {
		switch {
		case m.Name == self || m.Step != gen.Start:
		case !m.Fresh:
			first = append(first, m)
		default:
			rest = append(rest, m)
		}
	}
	return append(first, rest...)
}

// adopt takes the state of step gen.Start from the ring's donor: the
// configuration (and trainer) too when this node has none yet.
func (n *Node) adopt(ctx context.Context, gen cluster.Generation) error {
	cands := donors(gen, n.cl.Name())
	if len(cands) == 0 {
		return fmt.Errorf("generation %d has no member with the state of step %d", gen.ID, gen.Start)
	}
	var sn *snapshot
	var err error
	var name string
	t0 := time.Now()
	// A donor takes its snapshot when it sees the generation; retry briefly.
	for try := 0; try < 50 && sn == nil && ctx.Err() == nil; try++ {
		for _, m := range cands {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			sn, err = fetchState(sctx, m.Addr, int64(gen.Start), n.dial, n.expectConfig())
			cancel()
			if err == nil {
				name = m.Name
				break
			}
		}
		if sn == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if sn == nil {
		return err
	}
	if n.tr == nil {
		var cfg train.Config
		if err := json.Unmarshal(sn.hdr.Config, &cfg); err != nil {
			return fmt.Errorf("state from %s: config: %w", name, err)
		}
		n.cfg = cfg
		if err := n.build(ctx); err != nil {
			return err
		}
	} else if string(sn.hdr.Config) != string(n.configJSON()) {
		return fmt.Errorf("state from %s has configuration %s, this node runs %s", name, sn.hdr.Config, n.configJSON())
	}
	if err := n.tr.Restore(&sn.state); err != nil {
		return err
	}
	if err := n.grad.SetResidual(make([]float32, len(n.grad.Residual()))); err != nil {
		return err
	}
	n.step = int64(gen.Start)
	n.log.Info("took state from the ring", "from", name, "step", n.step, "floats", 3*sn.hdr.Params+sn.hdr.Residual,
		"sha256", sn.hdr.SHA256[:16], "seconds", time.Since(t0).Seconds())
	n.obs.stateTransfer(time.Since(t0))
	return nil
}
