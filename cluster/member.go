package cluster

import (
	"context"
	"fmt"
	"time"
)

// handlePropose is phase one on a member: promise the proposal, interrupt
// the running step, and answer once the node is at a step boundary.
func (c *Cluster) handlePropose(ctx context.Context, p *proposal) (*ack, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	no := func(format string, args ...any) (*ack, error) {
		reason := fmt.Sprintf(format, args...)
		c.log.Debug("proposal refused", "id", p.ID, "from", p.Coordinator, "reason", reason)
		return &ack{Reason: reason, Name: c.name, Promised: c.promised, Step: c.boundary, Cur: c.cur.clone()}, nil
	}
	switch {
	case c.closed:
		return no("shutting down")
	case c.state == StateLeaving:
		return no("leaving")
	case !ringHas(p.Ring, c.name):
		return no("not in the proposed ring")
	case p.ID <= c.promised:
		return no("already promised generation %d", c.promised)
	case p.Base < c.cur.ID:
		return no("proposal based on generation %d, latest is %d", p.Base, c.cur.ID)
	}
	c.promised = p.ID
	c.pending = p
	c.pendingAt = time.Now().Add(c.cfg.Timing.Pending)
	if c.running {
		select {
		case <-c.interrupt:
		default:
			close(c.interrupt)
		}
	}
	c.broadcast()
	// A running step cannot complete once promised (BeginApply refuses),
	// so the boundary is already true: wait only while an update is being
	// applied, not for the step.
	for c.applying && c.pending == p {
		if err := c.waitLocked(ctx); err != nil {
			return nil, fmt.Errorf("proposal %d: node did not reach a step boundary: %w", p.ID, err)
		}
	}
	if c.pending != p {
		return no("proposal superseded")
	}
	return &ack{OK: true, Name: c.name, Promised: c.promised, Step: c.boundary, Cur: c.cur.clone()}, nil
}

// handleCommit is phase two on a member: adopt the generation it promised.
func (c *Cluster) handleCommit(m *commit) *reply {
	g := m.Gen
	if err := g.validate(); err != nil {
		return &reply{Reason: err.Error()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var reason string
	switch {
	case c.closed:
		reason = "shutting down"
	case g.ID != c.promised:
		reason = fmt.Sprintf("generation %d was not promised (promised %d)", g.ID, c.promised)
	case g.ID <= c.mine || g.ID < c.cur.ID:
		reason = fmt.Sprintf("generation %d is stale (have %d)", g.ID, max(c.mine, c.cur.ID))
	case !g.Has(c.name):
		reason = "not in the ring"
	case c.pending != nil && c.pending.ID == g.ID && !sameRing(c.pending.Ring, g.Ring):
		reason = "ring differs from the proposal"
	}
	if reason != "" {
		c.log.Warn("commit refused", "gen", g.ID, "from", g.Coordinator, "reason", reason)
		return &reply{Reason: reason}
	}
	c.cur = g.clone()
	c.mine = g.ID
	c.pending = nil
	c.waitMsg = ""
	c.broadcast()
	c.regossip()
	c.log.Info("generation committed", "gen", g.ID, "start", g.Start, "rank", g.Rank(c.name), "ring", g.Names())
	return &reply{OK: true}
}

// handleAbort drops the promise of a proposal whose phase one failed.
func (c *Cluster) handleAbort(a *abort) *reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil || c.pending.ID != a.ID {
		return &reply{Reason: fmt.Sprintf("proposal %d is not pending", a.ID)}
	}
	c.log.Debug("proposal aborted", "id", a.ID, "coordinator", a.Coordinator)
	c.pending = nil
	c.broadcast()
	return &reply{OK: true}
}

// learn records a generation committed elsewhere that a peer told us about.
// It updates what this member knows, never what it trains in: only a commit
// this member accepted (handleCommit) lets it train.
func (c *Cluster) learn(g Generation) {
	if g.ID == 0 || g.validate() != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if g.ID > c.cur.ID {
		c.log.Info("learned newer generation", "gen", g.ID, "had", c.cur.ID)
		c.cur = g.clone()
		c.broadcast()
		c.regossip()
	}
}

// expirePending drops a promise whose commit never came, so that the node
// resumes its generation (or waits for the next proposal).
func (c *Cluster) expirePending(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != nil && now.After(c.pendingAt) {
		c.log.Warn("proposal expired without commit", "id", c.pending.ID, "coordinator", c.pending.Coordinator)
		c.pending = nil
		c.broadcast()
	}
}

// handleReport runs on the coordinator: a step of generation r.Gen failed.
func (c *Cluster) handleReport(r *report) *reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Gen != c.cur.ID || r.Gen == 0 {
		return &reply{Reason: fmt.Sprintf("generation %d is not current (%d)", r.Gen, c.cur.ID)}
	}
	c.log.Warn("failure reported", "gen", r.Gen, "reporter", r.Reporter, "peer", r.Peer, "err", r.Err)
	c.force = r.Gen
	if r.Peer != "" && r.Peer != c.name {
		c.strikeLocked(r.Peer, r.Gen)
	}
	c.wake()
	return &reply{OK: true}
}

func ringHas(ring []Member, name string) bool {
	for _, m := range ring {
		if m.Name == name {
			return true
		}
	}
	return false
}
