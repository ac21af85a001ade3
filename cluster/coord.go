package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// coordinate runs the coordinator's work on every tick or membership
// change; on members that are not the coordinator a round does nothing.
func (c *Cluster) coordinate() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Timing.Reconcile)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.wakeCh:
		}
		now := time.Now()
		c.expirePending(now)
		c.round(now)
	}
}

// view returns the live members with this member's own entry fresh (the
// gossiped copy of it lags behind).
//
// Members of the generation this member committed count as belonging to it
// even before their gossip says so: metadata spreads slower than commits,
// and without this a member that committed first could think itself the
// only one in the newest generation, hence coordinator.
func (c *Cluster) view() []MemberInfo {
	ms := c.Members()
	self := c.meta()
	c.mu.Lock()
	cur, mine := c.cur.clone(), c.mine
	c.mu.Unlock()
	for i := range ms {
		if ms[i].Name == c.name {
			ms[i].Meta = self
		}
		if mine == cur.ID && cur.Has(ms[i].Name) {
			ms[i].Gen = max(ms[i].Gen, cur.ID)
		}
	}
	return ms
}

func eligible(s State) bool { return s == StateReady || s == StateTraining }

// pickCoordinator applies the election rule to a sorted view: among members
// that are ready or training, those that belong to the highest generation
// any of them belongs to; of these, the lowest name.
func pickCoordinator(view []MemberInfo) (name, addr string) {
	var top uint64
	for _, m := range view {
		if eligible(m.State) && m.Gen > top {
			top = m.Gen
		}
	}
	for _, m := range view {
		if eligible(m.State) && m.Gen == top {
			return m.Name, m.GRPCAddr
		}
	}
	return "", ""
}

// coordinator returns the coordinator's name and gRPC address as this
// member sees it, or empty strings when there is none.
func (c *Cluster) coordinator() (string, string) { return pickCoordinator(c.electable(c.view())) }

// desiredRing is the ring the coordinator wants: the eligible, unpenalized
// members of the current ring, then joiners by name, up to maxNodes,
// sorted by name. Joiners are marked Fresh.
func desiredRing(view []MemberInfo, cur Generation, penalty map[string]time.Time, maxNodes int) []Member {
	var old, fresh []Member
	for _, m := range view {
		if !eligible(m.State) || m.GRPCAddr == "" {
			continue
		}
		if _, bad := penalty[m.Name]; bad {
			continue
		}
		if cur.Has(m.Name) {
			old = append(old, Member{Name: m.Name, Addr: m.GRPCAddr})
		} else {
			fresh = append(fresh, Member{Name: m.Name, Addr: m.GRPCAddr, Fresh: cur.ID != 0})
		}
	}
	ring := append(old, fresh...)
	if maxNodes > 0 && len(ring) > maxNodes {
		ring = ring[:maxNodes]
	}
	sortMembers(ring)
	return ring
}

func sameRing(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool { return x.Name == y.Name && x.Addr == y.Addr })
}

// round forms a new generation if this member is the coordinator and the
// ring should change: a member died, left, failed, or a joiner is ready.
func (c *Cluster) round(now time.Time) {
	view := c.electable(c.view())
	coord, _ := pickCoordinator(view)
	c.mu.Lock()
	if !c.joined || c.closed || coord != c.name {
		c.mu.Unlock()
		return
	}
	for name, until := range c.penalty {
		if now.After(until) {
			delete(c.penalty, name)
		}
	}
	for name, until := range c.suspects {
		if now.After(until) {
			delete(c.suspects, name)
		}
	}
	cur := c.cur.clone()
	ring := desiredRing(view, cur, c.penalty, c.cfg.MaxNodes)
	forced := c.force != 0 && c.force == cur.ID
	id := max(cur.ID, c.promised, c.seen) + 1
	// Members that announced a graceful leave refuse every proposal from
	// then on, so they cannot be part of a rival ring: leave them out of
	// the majority.
	var base []Member
	for _, m := range cur.Ring {
		if !c.left[m.Name] {
			base = append(base, m)
		}
	}
	mayLead := c.mayLead()
	c.mu.Unlock()

	if len(ring) == 0 || (!forced && sameRing(ring, cur.Ring)) {
		return
	}
	if !quorum(ring, base, c.cfg.MinNodes) {
		c.waiting(fmt.Sprintf("%d eligible members, need at least %d and a majority of generation %d's %d staying members",
			len(ring), c.cfg.MinNodes, cur.ID, len(base)))
		return
	}
	boot := len(base) == 0 // first generation, or every member left
	if !mayLead {
		// The newest generation's members are gone (left, finished, or
		// out of reach) and this member's state is older than theirs.
		c.waiting(fmt.Sprintf("this member missed generation %d or the run is complete; it forms no ring", c.highestGen()))
		return
	}
	if boot {
		for i := range ring {
			ring[i].Fresh = false
		}
	}
	if !c.reachable(ring, cur) {
		return // an unreachable candidate was set aside; the next round goes without it
	}
	p := &proposal{ID: id, Base: cur.ID, Coordinator: c.name, Ring: ring}
	acks, ok := c.propose(p)
	if !ok {
		return
	}
	g := Generation{ID: id, Base: cur.ID, Coordinator: c.name, Ring: slices.Clone(ring)}
	for i := range g.Ring {
		m := &g.Ring[i]
		m.Step = acks[m.Name].Step
		if boot || !m.Fresh {
			g.Start = max(g.Start, m.Step)
		}
	}
	c.commitAll(g)
}

// reachable asks every candidate that is not in the current ring for its
// status, briefly, before a proposal is sent: a proposal interrupts the
// step of every member, so a candidate that cannot be reached (a partition,
// a process that is gone, another process on its old address) is punished
// without costing the ring a step.
func (c *Cluster) reachable(ring []Member, cur Generation) bool {
	ok := true
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range ring {
		if m.Name == c.name || cur.Has(m.Name) {
			continue
		}
		wg.Go(func() {
			if err := c.ping(m, min(c.cfg.Timing.RPCTimeout, time.Second)); err != nil {
				c.log.Info("candidate not reachable, kept out for now", "member", m.Name, "err", err)
				c.punish(m.Name)
				mu.Lock()
				ok = false
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ok
}

// waiting logs, once per reason, why no generation can be formed.
func (c *Cluster) waiting(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waitMsg != reason {
		c.waitMsg = reason
		c.log.Info("cannot form a generation, waiting", "reason", reason)
	}
}

// each runs fn for every ring member in parallel, calling this member's
// handlers directly instead of over the network.
func (c *Cluster) each(ring []Member, fn func(ctx context.Context, m Member, self bool)) {
	ctx, cancel := c.rpcContext()
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range ring {
		wg.Go(func() { fn(ctx, m, m.Name == c.name) })
	}
	wg.Wait()
}

// propose runs phase one and reports whether every member acknowledged.
func (c *Cluster) propose(p *proposal) (map[string]*ack, bool) {
	var mu sync.Mutex
	acks := map[string]*ack{}
	ok := true
	c.each(p.Ring, func(ctx context.Context, m Member, self bool) {
		var a *ack
		var err error
		if self {
			a, err = c.handlePropose(ctx, p)
		} else {
			a = new(ack)
			err = c.call(ctx, m.Addr, methodPropose, p, a)
		}
		if err == nil && a.Name != m.Name {
			err = fmt.Errorf("answered by %q", a.Name)
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			ok = false
			level := slog.LevelWarn
			if errors.Is(err, ErrClosed) {
				level = slog.LevelDebug // this member or that one is shutting down
			}
			c.log.Log(ctx, level, "proposal failed", "id", p.ID, "member", m.Name, "err", err)
			c.punish(m.Name)
		case !a.OK:
			ok = false
			c.log.Info("proposal refused", "id", p.ID, "member", m.Name, "reason", a.Reason)
			c.mu.Lock()
			c.seen = max(c.seen, a.Promised)
			c.mu.Unlock()
			c.learn(a.Cur)
		default:
			acks[m.Name] = a
		}
	})
	if !ok && len(acks) > 0 {
		// Release the members that promised, so they resume at once
		// instead of waiting for the promise to expire.
		c.each(p.Ring, func(ctx context.Context, m Member, self bool) {
			if acks[m.Name] == nil {
				return
			}
			ab := &abort{ID: p.ID, Coordinator: c.name}
			if self {
				c.handleAbort(ab)
			} else if err := c.call(ctx, m.Addr, methodAbort, ab, new(reply)); err != nil {
				c.log.Debug("abort failed", "id", p.ID, "member", m.Name, "err", err)
			}
		})
	}
	return acks, ok
}

// commitAll runs phase two.
func (c *Cluster) commitAll(g Generation) {
	m := &commit{Gen: g}
	var mu sync.Mutex
	failed := 0
	c.each(g.Ring, func(ctx context.Context, mem Member, self bool) {
		r := new(reply)
		var err error
		if self {
			r = c.handleCommit(m)
		} else {
			err = c.call(ctx, mem.Addr, methodCommit, m, r)
		}
		if err == nil && !r.OK {
			err = fmt.Errorf("refused: %s", r.Reason)
		}
		if err != nil {
			c.log.Warn("commit failed", "gen", g.ID, "member", mem.Name, "err", err)
			c.punish(mem.Name)
			mu.Lock()
			failed++
			mu.Unlock()
		}
	})
	c.log.Info("formed generation", "gen", g.ID, "start", g.Start, "ring", g.Names(), "commit_failures", failed)
}

// punish keeps a member that failed out of new rings for a while.
func (c *Cluster) punish(name string) {
	if name == c.name {
		return
	}
	c.mu.Lock()
	c.penalty[name] = time.Now().Add(c.penaltyFor(name, false))
	c.mu.Unlock()
	c.wake()
}

func (c *Cluster) highestGen() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.highest, c.cur.ID)
}

// reconnect tries to rejoin members that vanished without leaving (a
// partition heals only if someone dials across it) and the seeds when this
// member is alone.
func (c *Cluster) reconnect() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Timing.Reconnect)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		live := map[string]bool{}
		rpc := map[string]bool{}
		var addrs []string
		c.mu.Lock()
		for _, m := range c.peers {
			live[m.Gossip] = true
			rpc[m.GRPCAddr] = true
		}
		for addr, cc := range c.conns {
			if !rpc[addr] {
				cc.Close() // the member is gone
				delete(c.conns, addr)
			}
		}
		joined := c.joined
		for name, p := range c.lost {
			if time.Since(p.since) > time.Hour {
				delete(c.lost, name)
			} else if !live[p.addr] {
				addrs = append(addrs, p.addr)
			}
		}
		c.mu.Unlock()
		if joined && len(live) <= 1 {
			addrs = append(addrs, c.cfg.Seeds...)
		}
		if len(addrs) == 0 {
			continue
		}
		slices.Sort(addrs)
		addrs = slices.Compact(addrs)
		if n, err := c.ml.Join(addrs); n > 0 {
			c.log.Info("reconnected", "peers", addrs)
		} else {
			c.log.Debug("reconnect failed", "peers", addrs, "err", err)
		}
	}
}
