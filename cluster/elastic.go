package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// ErrRunDone is returned by AtStep and WaitGeneration when a member has
// announced that the run is complete (StateDone) while this member is not
// training with it: no generation will come, and the node should exit.
var ErrRunDone = errors.New("the run is complete")

// ErrInterrupted is returned by BeginApply when the step must not be
// applied: a new generation was proposed since it started.
var ErrInterrupted = errors.New("step interrupted by a new generation")

// noteLocked records what a gossip event tells about the run: the highest
// generation any peer belongs to, and whether one announced the run done.
// Callers hold c.mu.
func (c *Cluster) noteLocked(info MemberInfo) {
	if info.Name == c.name {
		return
	}
	c.highest = max(c.highest, info.Gen)
	if info.State == StateDone && c.doneBy == "" {
		c.doneBy = info.Name
		c.log.Info("a member announced that the run is complete", "member", info.Name, "gen", info.Gen)
		c.broadcast()
	}
}

// SetDone announces that this member finished the run (it trained the last
// step). Call it before Close, so that members still waiting for a ring
// exit instead of training on their own.
func (c *Cluster) SetDone() {
	c.mu.Lock()
	c.state = StateDone
	c.mu.Unlock()
	if err := c.ml.UpdateNode(c.cfg.Timing.RPCTimeout); err != nil {
		c.log.Debug("announce done", "err", err)
	}
	c.pushState()
}

// RunDone reports the member that announced the run complete, if any.
func (c *Cluster) RunDone() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.doneBy, c.doneBy != ""
}

// SetLimits changes the ring size limits, for a node that learned the run's
// settings after it was created (a joiner adopts them from the ring).
func (c *Cluster) SetLimits(minNodes, maxNodes int) {
	c.mu.Lock()
	c.cfg.MinNodes, c.cfg.MaxNodes = max(1, minNodes), max(0, maxNodes)
	c.mu.Unlock()
	c.wake()
}

// mayLead reports whether this member may propose generations: only with
// the newest state. The election makes the members of the newest
// generation coordinators, so this member coordinates only when they are
// all gone (finished, left, or out of reach); if it missed that generation,
// or the run is done, it must not form a ring that would train stale state
// (a minority that never trains on its own). Callers hold c.mu.
func (c *Cluster) mayLead() bool {
	if c.doneBy != "" || c.highest > c.mine {
		return false
	}
	return c.cur.ID == 0 || c.mine == c.cur.ID
}

// BeginApply is called by the node after a step's gradients were summed and
// before it applies the update. It fails when a proposal arrived since the
// step started: the acknowledged step boundary must stay true. While the
// update is applied, proposals wait (for milliseconds) instead of for the
// whole step.
func (c *Cluster) BeginApply() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.interrupt:
		return ErrInterrupted
	default:
	}
	if c.pending != nil || !c.running {
		return ErrInterrupted
	}
	c.applying = true
	return nil
}

// Applied tells the cluster that the node applied the update of the step it
// was running: it has now completed every step before step.
func (c *Cluster) Applied(step uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.boundary = step
	c.applying = false
	c.setIdle()
	c.broadcast()
}

// suspect takes a member that did not answer out of the election and out of
// new rings for a while: a coordinator that died is replaced as soon as a
// member fails to reach it, not when gossip declares it dead seconds later.
func (c *Cluster) suspect(name string) {
	if name == c.name || name == "" {
		return
	}
	c.mu.Lock()
	c.suspects[name] = c.strikeLocked(name, c.cur.ID)
	c.mu.Unlock()
	c.log.Info("suspecting member", "member", name)
	c.wake()
}

// electable drops suspected members from a view. Callers must not hold c.mu.
func (c *Cluster) electable(view []MemberInfo) []MemberInfo {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := view[:0:0]
	for _, m := range view {
		if until, ok := c.suspects[m.Name]; ok && now.Before(until) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// penaltyFor is how long a member that failed is kept out of new rings: it
// starts short (a candidate that was not listening yet is retried within a
// second or two) and doubles with every failure in a row, with jitter, up to
// a quarter of the Timing's Penalty for candidates that did not answer and
// 10× the Penalty for members blamed for failed steps, so a member that
// keeps breaking steps is in effect excluded.
// Callers hold c.mu.
func (c *Cluster) penaltyFor(name string, blamed bool) time.Duration {
	now := time.Now()
	s := c.strikes[name]
	if now.Sub(s.last) > 10*c.cfg.Timing.Penalty {
		s.n = 0
	}
	s.n++
	s.last = now
	c.strikes[name] = s
	// Candidates are probed before a proposal (reachable), which costs the
	// ring nothing, so they are retried often; members blamed for failed
	// steps cost the ring a step each time.
	limit := c.cfg.Timing.Penalty / 4
	if blamed {
		limit = 10 * c.cfg.Timing.Penalty
	}
	d := c.cfg.Timing.Penalty / 16
	for i := 1; i < s.n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d + time.Duration(rand.Int64N(int64(d)/4+1))
}

// strikeLocked counts a failure of member name in generation gen and keeps
// it out of new rings for penaltyFor; it returns until when. One strike
// per generation: every member of a stalled ring reports a silent one, and
// its penalty must not double for each of them. (A fixed 30 s here kept a
// coordinator cut off for 4 s out for 30 s after the heal.) Callers hold
// c.mu.
func (c *Cluster) strikeLocked(name string, gen uint64) time.Time {
	if s := c.strikes[name]; s.gen == gen && !c.penalty[name].IsZero() {
		return c.penalty[name]
	}
	until := time.Now().Add(c.penaltyFor(name, true))
	c.penalty[name] = until
	s := c.strikes[name]
	s.gen = gen
	c.strikes[name] = s
	return until
}

type strike struct {
	n    int
	last time.Time
	gen  uint64 // the generation of the last failure report that counted
}

// Probe tries once to join the gossip of the members at addrs and reports
// how many answered. A starting node uses it to find a ring it belonged to.
func (c *Cluster) Probe(addrs []string) int {
	n, err := c.ml.Join(addrs)
	if n == 0 {
		c.log.Debug("probe found no member", "peers", addrs, "err", err)
	}
	return n
}

// SetData changes what this member announces about the dataset it serves
// ("" for none).
func (c *Cluster) SetData(data string) {
	c.mu.Lock()
	c.cfg.Data = data
	c.mu.Unlock()
	c.regossip()
}

// watchStall finds ring-mates that vanished without closing their
// connections (a partition, a frozen or powered-off host): the step then
// just stalls, and gossip takes 2-12 s to declare them dead. While this
// member's step runs longer than Timing.StallProbe, it asks every ring-mate
// for its status once per StallProbe; one that does not answer within the
// probe period is reported failed to the coordinator, as a failed
// allreduce would be, and an unreachable coordinator is suspected (see
// report). The cost is one small RPC per ring-mate per StallProbe, during
// long steps only.
func (c *Cluster) watchStall() {
	defer c.wg.Done()
	period := c.cfg.Timing.StallProbe
	t := time.NewTicker(period / 4)
	defer t.Stop()
	var last time.Time
	var repGen uint64             // the generation reported holds members of
	reported := map[string]bool{} // members reported silent in it
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		now := time.Now()
		stalled := c.running && !c.applying && c.mine == c.cur.ID && c.cur.Has(c.name) &&
			now.Sub(c.stepAt) > period && now.Sub(last) >= period
		cur := c.cur.clone()
		c.mu.Unlock()
		if !stalled {
			continue
		}
		last = now
		if repGen != cur.ID {
			repGen, reported = cur.ID, map[string]bool{}
		}
		for _, name := range c.silent(cur, period) {
			c.mu.Lock()
			still := c.running && c.cur.ID == cur.ID
			c.mu.Unlock()
			if !still {
				break // the step ended or a new ring formed meanwhile
			}
			if reported[name] {
				continue // once per generation; the coordinator acts on it
			}
			reported[name] = true
			if coord, _ := c.coordinator(); coord == name {
				c.suspect(name) // report to the next one at once
			}
			c.log.Warn("ring member does not answer while the step stalls", "gen", cur.ID, "member", name)
			r := &report{Gen: cur.ID, Reporter: c.name, Peer: name, Err: "no answer to a status probe while the step stalled"}
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.report(r)
			}()
		}
	}
}

// ping asks member m for its status and checks that m itself answered
// (not another process on its old address), within timeout.
func (c *Cluster) ping(m Member, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var st Status
	err := c.call(ctx, m.Addr, methodStatus, &statusRequest{}, &st)
	if err == nil && st.Self != m.Name {
		err = fmt.Errorf("answered by %q", st.Self)
	}
	return err
}

// silent asks gen's other members for their status and returns those that
// did not answer within timeout.
func (c *Cluster) silent(gen Generation, timeout time.Duration) []string {
	var mu sync.Mutex
	var out []string
	var wg sync.WaitGroup
	for _, m := range gen.Ring {
		if m.Name == c.name {
			continue
		}
		wg.Go(func() {
			if c.ping(m, timeout) != nil {
				mu.Lock()
				out = append(out, m.Name)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(out)
	return out
}
