package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
)

// ErrClosed is returned by waits on a Cluster that was closed.
var ErrClosed = errors.New("cluster closed")

// Cluster is one member: its gossip membership, its part in the generation
// protocol (see the package documentation), and the control service.
type Cluster struct {
	cfg  Config
	name string
	log  *slog.Logger
	ml   *memberlist.Memberlist
	dial []grpc.DialOption

	wakeCh chan struct{} // wakes the coordinator loop
	metaCh chan struct{} // asks for the metadata to be re-gossiped
	stop   chan struct{} // closed when shutting down
	wg     sync.WaitGroup

	mu        sync.Mutex
	state     State
	cur       Generation // latest committed generation known
	mine      uint64     // latest generation whose commit this member accepted
	promised  uint64     // highest proposal acknowledged
	pending   *proposal  // acknowledged, not yet committed
	pendingAt time.Time  // when pending expires
	seen      uint64     // highest proposal number heard of (coordinator)
	boundary  uint64     // the node's step boundary
	running   bool       // the node runs step `boundary`
	stepAt    time.Time  // when it started running it
	interrupt chan struct{}
	changed   chan struct{} // closed and replaced on every change
	info      StatusInfo
	force     uint64                // a failure was reported in this generation
	failed    uint64                // this node reported a failure in this generation
	penalty   map[string]time.Time  // members kept out of new rings until then
	lost      map[string]lostPeer   // members that vanished without leaving
	peers     map[string]MemberInfo // live gossip members, from memberlist events
	left      map[string]bool       // members that announced a graceful leave
	gossip    string                // this member's gossip address
	conns     map[string]*grpc.ClientConn
	joined    bool
	closed    bool
	waitMsg   string               // last reason logged for not forming a generation
	highest   uint64               // highest generation a peer gossiped
	doneBy    string               // a member that announced the run complete
	applying  bool                 // the node is applying a step's update (BeginApply)
	suspects  map[string]time.Time // members that failed to answer: not elected until then
	strikes   map[string]strike    // failures in a row per member, for the penalty
}

type lostPeer struct {
	addr  string
	since time.Time
}

// New starts a member: it binds the gossip port and starts the background
// loops, but joins no one until Join. Register its control service on the
// node's gRPC server before calling Join.
func New(cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	name, err := uniqueName(cfg.Name)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:       cfg,
		name:      name,
		log:       cfg.Logger.With("node", name),
		dial:      append(append(DialOptions(cfg.Security), ReconnectOptions()...), cfg.DialOptions...),
		wakeCh:    make(chan struct{}, 1),
		metaCh:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
		state:     StateJoining,
		boundary:  cfg.Step,
		interrupt: make(chan struct{}),
		changed:   make(chan struct{}),
		penalty:   map[string]time.Time{},
		lost:      map[string]lostPeer{},
		peers:     map[string]MemberInfo{},
		left:      map[string]bool{},
		suspects:  map[string]time.Time{},
		strikes:   map[string]strike{},
		conns:     map[string]*grpc.ClientConn{},
	}
	// Beyond loopback, the exposure check refused this or warned once.
	if cfg.Security == nil {
		c.log.Info("cluster runs without a secret: gossip is readable and RPCs are unauthenticated", "gossip", cfg.BindAddr)
	} else if cfg.Security.GossipKey() == nil {
		c.log.Info("cluster has TLS but no secret: gossip is not encrypted", "gossip", cfg.BindAddr)
	}
	if c.ml, err = c.newMemberlist(); err != nil {
		return nil, err
	}
	c.gossip = c.ml.LocalNode().Address() // before anything can update it
	c.wg.Add(4)
	go c.watchStall()
	go c.coordinate()
	go c.gossipMeta()
	go c.reconnect()
	return c, nil
}

// Name returns this member's unique name.
func (c *Cluster) Name() string { return c.name }

// GossipAddr returns the address peers use to join this member.
func (c *Cluster) GossipAddr() string { return c.gossip }

// Join joins the seeds, retrying with backoff until one answers or the join
// timeout passes. Without seeds this member starts a cluster of its own.
// The coordinator only proposes generations after Join returns.
func (c *Cluster) Join(ctx context.Context) error {
	if len(c.cfg.Seeds) > 0 {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.JoinTimeout)
		defer cancel()
		wait := c.cfg.Timing.JoinBackoff
		for {
			n, err := c.ml.Join(c.cfg.Seeds)
			if n > 0 {
				break
			}
			c.log.Info("join failed, retrying", "seeds", c.cfg.Seeds, "in", wait, "err", err)
			select {
			case <-ctx.Done():
				return fmt.Errorf("join %v: %w (last error: %v)", c.cfg.Seeds, ctx.Err(), err)
			case <-c.stop:
				return ErrClosed
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
		}
		c.log.Info("joined cluster", "seeds", c.cfg.Seeds, "members", c.ml.NumMembers())
	}
	c.mu.Lock()
	c.joined = true
	c.mu.Unlock()
	c.wake()
	return nil
}

// SetReady announces that the node can train: the coordinator admits it to
// the next generation.
func (c *Cluster) SetReady() {
	c.mu.Lock()
	if c.state == StateJoining {
		c.state = StateReady
	}
	c.mu.Unlock()
	c.regossip()
	c.wake()
}

// SetStatus records the node's training progress for `trainer status`.
func (c *Cluster) SetStatus(s StatusInfo) {
	if s.Updated.IsZero() {
		s.Updated = time.Now()
	}
	c.mu.Lock()
	c.info = s
	c.mu.Unlock()
}

// Current returns the latest committed generation this member knows of. It
// may not include this member (see Generation.Has).
func (c *Cluster) Current() Generation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.clone()
}

// WaitGeneration blocks until this member has committed a generation
// numbered above after that includes it, and returns it. The node calls it
// at start (after 0) and after a failed step; while it waits the node is
// taken to be idle at its step boundary.
func (c *Cluster) WaitGeneration(ctx context.Context, after uint64) (Generation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setIdle()
	for {
		if c.closed {
			return Generation{}, ErrClosed
		}
		if c.doneBy != "" {
			return Generation{}, ErrRunDone
		}
		if c.mine > after && c.mine == c.cur.ID && c.pending == nil && c.cur.Has(c.name) {
			return c.cur.clone(), nil
		}
		if err := c.waitLocked(ctx); err != nil {
			return Generation{}, err
		}
	}
}

// AtStep tells the cluster that the node completed every step before step
// and is about to run step. It returns the generation to run it in,
// blocking while a proposal is pending or this member is in no ring.
//
// When the returned generation differs from the one the node ran last, the
// node must go to Start: if its own boundary differs from Start, or its
// Member entry is Fresh, it first takes state from a member whose Step is
// Start and that is not Fresh, then calls AtStep(Start).
//
// After AtStep returns, the node is running the step until its next AtStep,
// ReportFailure or WaitGeneration call; Interrupt tells it to abort early.
func (c *Cluster) AtStep(ctx context.Context, step uint64) (Generation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.boundary = step
	c.setIdle()
	for {
		if c.closed {
			return Generation{}, ErrClosed
		}
		if c.doneBy != "" {
			return Generation{}, ErrRunDone
		}
		if c.mine != 0 && c.mine == c.cur.ID && c.pending == nil && c.cur.Has(c.name) && c.failed != c.cur.ID {
			c.running, c.stepAt = true, time.Now()
			c.interrupt = make(chan struct{})
			return c.cur.clone(), nil
		}
		if err := c.waitLocked(ctx); err != nil {
			return Generation{}, err
		}
	}
}

// Interrupt returns a channel that is closed when the step the node is
// running must be abandoned: the member acknowledged a new generation. The
// node then stops the step (cancelling its allreduce) and calls AtStep with
// the same step, which returns the new generation once committed.
func (c *Cluster) Interrupt() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.interrupt
}

// ReportFailure tells the coordinator that a step in generation gen failed,
// blaming peer (empty if unknown). The coordinator forms a new generation
// without peer (or with the same members when peer is empty). AtStep then
// waits for that generation instead of returning gen again. A node that
// abandoned a step because Interrupt fired should not report it.
func (c *Cluster) ReportFailure(gen uint64, peer string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
		if len(msg) > maxText {
			msg = msg[:maxText]
		}
	}
	r := &report{Gen: gen, Reporter: c.name, Peer: peer, Err: msg}
	c.mu.Lock()
	c.setIdle()
	stale := gen != c.cur.ID
	if !stale {
		c.failed = gen
	}
	c.mu.Unlock()
	c.log.Warn("step failed", "gen", gen, "peer", peer, "err", err)
	if stale {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.report(r)
	}()
}

// report delivers a failure report to the coordinator. A coordinator that
// cannot be reached is suspected (it is likely the member that died), and
// the report goes to the next one, possibly this member.
func (c *Cluster) report(r *report) {
	for try := 0; try < 4; try++ {
		coord, addr := c.coordinator()
		if coord == c.name {
			c.handleReport(r)
			return
		}
		if addr == "" {
			return // no coordinator known; the membership change will trigger one
		}
		ctx, cancel := c.rpcContext()
		var rep reply
		err := c.call(ctx, addr, methodReport, r, &rep)
		cancel()
		if err == nil {
			return
		}
		c.log.Warn("report failure to coordinator", "coordinator", coord, "err", err)
		if errors.Is(err, ErrClosed) && c.isClosed() {
			return
		}
		c.suspect(coord)
	}
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// IsCoordinator reports whether this member is the coordinator now.
func (c *Cluster) IsCoordinator() bool {
	name, _ := c.coordinator()
	return name == c.name
}

// Members returns the live gossip members, sorted by name. Members whose
// metadata does not decode are left out.
func (c *Cluster) Members() []MemberInfo {
	c.mu.Lock()
	out := make([]MemberInfo, 0, len(c.peers))
	for _, m := range c.peers {
		if m.State.valid() {
			out = append(out, m)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b MemberInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Status returns this member's view, as served to `trainer status`.
func (c *Cluster) Status() Status {
	coord, _ := c.coordinator()
	members := c.Members()
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{Self: c.name, Coordinator: coord, Gen: c.cur.clone(), Members: members, Info: c.info}
}

// Close leaves gracefully: it announces that this member is leaving, waits
// (up to the leave timeout or ctx) for a generation without it, leaves the
// gossip and stops. The node should have stopped training first.
func (c *Cluster) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	if c.state != StateDone {
		c.state = StateLeaving
	}
	c.mu.Unlock()
	if err := c.ml.UpdateNode(c.cfg.Timing.RPCTimeout); err != nil {
		c.log.Warn("announce leaving", "err", err)
	}
	c.pushState()
	outer := ctx
	allLeaving := false
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timing.LeaveWait)
	defer cancel()
	for {
		// A newer generation shows in the others' metadata: it cannot
		// include this member, which refuses proposals while leaving.
		// (Never call memberlist holding c.mu.)
		// When every other member is leaving too (the run has finished),
		// no ring will form at all.
		others, leaving, newest := 0, 0, uint64(0)
		for _, m := range c.Members() {
			if m.Name != c.name {
				others++
				if m.State.gone() {
					leaving++
				}
				newest = max(newest, m.Gen)
			}
		}
		allLeaving = others == leaving
		c.mu.Lock()
		done := allLeaving || newest > c.mine || !c.cur.Has(c.name) || len(c.cur.Ring) <= 1
		ch := c.changed
		c.mu.Unlock()
		if done {
			break
		}
		select {
		case <-ch:
		case <-time.After(c.cfg.Timing.Reconcile):
		case <-ctx.Done():
			c.log.Warn("leaving before a generation without this member formed", "err", ctx.Err())
			done = true
		}
		if done {
			break
		}
	}
	// Tell the others, within what is left of the caller's time: peers
	// that are shutting down as well will not acknowledge.
	lt := c.cfg.Timing.RPCTimeout
	if d, ok := outer.Deadline(); ok {
		lt = max(100*time.Millisecond, min(lt, time.Until(d)))
	}
	err := c.ml.Leave(lt)
	if err != nil && allLeaving {
		// Nobody is left to acknowledge: the run is over for everyone.
		c.log.Debug("leave gossip", "err", err)
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("leave gossip: %w", err)
	}
	c.shutdown()
	return err
}

// shutdown stops everything without telling anyone, as a crash would.
func (c *Cluster) shutdown() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.stop)
	c.broadcast()
	c.mu.Unlock()
	if err := c.ml.Shutdown(); err != nil {
		c.log.Warn("gossip shutdown", "err", err)
	}
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, cc := range c.conns {
		cc.Close()
		delete(c.conns, addr)
	}
}

// meta returns what this member gossips about itself.
func (c *Cluster) meta() Meta {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state
	if st == StateReady || st == StateTraining {
		st = StateReady
		if c.mine == c.cur.ID && c.cur.Has(c.name) {
			st = StateTraining
		}
	}
	return Meta{GRPCAddr: c.cfg.GRPCAddr, State: st, Gen: c.mine, Backend: c.cfg.Backend, Data: c.cfg.Data, Version: c.cfg.Version}
}

// setIdle marks the node as at its boundary, not running a step. Callers
// hold c.mu.
func (c *Cluster) setIdle() {
	if c.running || c.applying {
		c.running, c.applying = false, false
		c.broadcast()
	}
}

// broadcast wakes every waiter. Callers hold c.mu.
func (c *Cluster) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitLocked waits for the next broadcast, releasing c.mu meanwhile.
func (c *Cluster) waitLocked(ctx context.Context) error {
	ch := c.changed
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.stop:
		return ErrClosed
	}
}

func (c *Cluster) wake() {
	select {
	case c.wakeCh <- struct{}{}:
	default:
	}
}

func (c *Cluster) regossip() {
	select {
	case c.metaCh <- struct{}{}:
	default:
	}
}

// gossipMeta re-announces the metadata after state changes. A change of
// State (joining to ready, above all) or of the dataset served (joiners
// without data wait for it) is also pushed to every peer directly: see
// pushState.
func (c *Cluster) gossipMeta() {
	defer c.wg.Done()
	var pushed State
	var pushedData string
	for {
		select {
		case <-c.stop:
			return
		case <-c.metaCh:
			// Read what to push before UpdateNode takes the metadata: a
			// change made while UpdateNode waits for its broadcast is
			// then pushed on the next turn, with metadata that holds it.
			// (Read after, such a change was taken as pushed while the
			// push carried the metadata from before it.)
			c.mu.Lock()
			st, data := c.state, c.cfg.Data
			c.mu.Unlock()
			if err := c.ml.UpdateNode(c.cfg.Timing.RPCTimeout); err != nil {
				c.log.Debug("gossip metadata", "err", err)
			}
			if st != pushed || data != pushedData {
				pushed, pushedData = st, data
				c.pushState()
			}
		}
	}
}

// pushState sends this member's state to every live peer over TCP (a
// memberlist push-pull) and waits for the exchanges, each bounded by the
// RPC timeout. Gossip alone can lose an update: memberlist sends it to a
// few random members, dead ones of the last GossipToTheDeadTime included,
// a fixed number of times, and the periodic push-pull that repairs a miss
// runs every 30 s. A joiner whose "ready" reached nobody waited that long
// for admission (1 of 100 restarts in the chaos run, 11-17 s). The cost is
// one TCP exchange per peer per change of state (a handful per node life).
func (c *Cluster) pushState() {
	c.mu.Lock()
	var addrs []string
	for _, m := range c.peers {
		if m.Name != c.name && !m.State.gone() && m.Gossip != "" {
			addrs = append(addrs, m.Gossip)
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Go(func() {
			if _, err := c.ml.Join([]string{a}); err != nil {
				c.log.Debug("push state", "peer", a, "err", err)
			}
		})
	}
	wg.Wait()
}
