package cluster

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

const settle = 15 * time.Second // generous: the machine is shared and slow under -race

func TestFirstGenerationAndMinNodes(t *testing.T) {
	h := newHarness(t, nil)
	three := func(c *Config) { c.MinNodes = 3; c.Timing.LeaveWait = time.Second }
	a := h.start("a", three)
	b := h.start("b", three)
	// Two of three must not form anything.
	time.Sleep(300 * time.Millisecond)
	if g := a.c.Current(); g.ID != 0 {
		t.Fatalf("generation %v formed with fewer than --min-nodes members", g)
	}
	c := h.start("c", three)
	g1 := agree(t, settle, a, b, c)
	if g1.ID != 1 {
		t.Errorf("first generation numbered %d, want 1", g1.ID)
	}
	names := g1.Names()
	if !slices.IsSorted(names) {
		t.Errorf("ring %v not in name order", names)
	}
	for _, n := range []*testNode{a, b, c} {
		rank := g1.Rank(n.c.Name())
		if rank < 0 || g1.Ring[rank].Fresh {
			t.Errorf("%s: rank %d, fresh %v in first generation", n.c.Name(), rank, rank >= 0 && g1.Ring[rank].Fresh)
		}
	}
	if coord := coordinatorOf(t, a, b, c); !coord.c.IsCoordinator() || g1.Coordinator != coord.c.Name() {
		t.Errorf("coordinator: generation says %q, rule says %q", g1.Coordinator, coord.c.Name())
	}

	// Below --min-nodes the survivors must not form a generation.
	h.leave(c)
	time.Sleep(time.Second)
	for _, n := range []*testNode{a, b} {
		if g := n.c.Current(); g.ID != g1.ID {
			t.Errorf("%s formed %v with fewer than --min-nodes members", n.c.Name(), g)
		}
	}
}

func TestLeaveThenCoordinatorDeath(t *testing.T) {
	h := newHarness(t, nil)
	two := func(c *Config) { c.MinNodes = 2 }
	nodes := []*testNode{h.start("n", two), h.start("n", two), h.start("n", two), h.start("n", two)}
	g1 := agree(t, settle, nodes...)

	// A graceful leave of a non-coordinator: the survivors form a ring.
	coord := coordinatorOf(t, nodes...)
	leaver := nodes[0]
	if leaver == coord {
		leaver = nodes[1]
	}
	nodes = slices.DeleteFunc(nodes, func(n *testNode) bool { return n == leaver })
	h.leave(leaver)
	g2 := agree(t, settle, nodes...)
	if g2.ID <= g1.ID {
		t.Errorf("after leave: %v, want after %d", g2, g1.ID)
	}

	// The coordinator crashes: the next lowest name takes over.
	nodes = slices.DeleteFunc(nodes, func(n *testNode) bool { return n == coord })
	h.kill(coord)
	g3 := agree(t, settle, nodes...)
	next := coordinatorOf(t, nodes...)
	if g3.Coordinator != next.c.Name() || g3.ID <= g2.ID {
		t.Errorf("after coordinator death: %v by %q, want after %d by %q", g3, g3.Coordinator, g2.ID, next.c.Name())
	}
}

func TestJoinerAdmittedUpToMaxNodes(t *testing.T) {
	h := newHarness(t, nil)
	cfg := func(c *Config) { c.MinNodes = 3; c.MaxNodes = 4 }
	first := []*testNode{h.start("m", cfg), h.start("m", cfg), h.start("m", cfg)}
	g1 := agree(t, settle, first...)

	d := h.start("m", cfg)
	four := append(slices.Clone(first), d)
	g2 := agree(t, settle, four...)
	if g2.ID <= g1.ID {
		t.Errorf("joiner generation %d not after %d", g2.ID, g1.ID)
	}
	for _, m := range g2.Ring {
		if m.Fresh != (m.Name == d.c.Name()) {
			t.Errorf("member %s fresh=%v", m.Name, m.Fresh)
		}
	}

	// A fifth member exceeds --max-nodes and waits outside.
	e := h.start("m", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if g, err := e.c.WaitGeneration(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fifth member got %v, %v; want to wait (max nodes 4)", g, err)
	}
	if g := first[0].c.Current(); g.ID != g2.ID {
		t.Errorf("generation changed to %v though the ring is full", g)
	}

	// When a member dies the waiting one takes its place.
	victim := first[1]
	if victim == coordinatorOf(t, four...) {
		victim = first[2]
	}
	h.kill(victim)
	var survivors []*testNode
	for _, n := range four {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	g3 := agree(t, settle, append(survivors, e)...)
	if !g3.Has(e.c.Name()) || g3.Has(victim.c.Name()) {
		t.Errorf("after death: %v", g3)
	}
}

func TestPartitionMinorityPauses(t *testing.T) {
	h := newHarness(t, nil)
	nodes := []*testNode{h.start("p", nil), h.start("p", nil), h.start("p", nil)}
	// MinNodes is 1: the first member forms a ring alone and the others
	// are admitted as joiners, which exercises growth too.
	g1 := agree(t, settle, nodes...)

	lone := coordinatorOf(t, nodes...) // cut off the coordinator
	var pair []*testNode
	for _, n := range nodes {
		if n != lone {
			pair = append(pair, n)
		}
	}
	h.net.partition(lone.c.Name())
	// The lone member's node sees its allreduce fail and waits.
	lone.c.ReportFailure(g1.ID, pair[0].c.Name(), errors.New("peer unreachable"))
	waitErr := make(chan error, 1)
	healed := make(chan Generation, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*settle)
		defer cancel()
		g, err := lone.c.WaitGeneration(ctx, g1.ID)
		waitErr <- err
		healed <- g
	}()

	g2 := agree(t, settle, pair...)
	if g2.ID <= g1.ID {
		t.Errorf("majority generation %d not after %d", g2.ID, g1.ID)
	}
	// Give the lone member time to try; it must not form a generation.
	time.Sleep(time.Second)
	lone.c.mu.Lock()
	mine, cur := lone.c.mine, lone.c.cur.ID
	lone.c.mu.Unlock()
	if mine != g1.ID || cur != g1.ID {
		t.Fatalf("isolated member moved to generation %d (committed %d)", cur, mine)
	}
	select {
	case err := <-waitErr:
		t.Fatalf("isolated member's wait ended during the partition: %v", err)
	default:
	}

	h.net.heal()
	g3 := agree(t, settle, nodes...)
	if g3.ID <= g2.ID {
		t.Errorf("after healing: %v, want after %d", g3, g2.ID)
	}
	if err := <-waitErr; err != nil {
		t.Fatalf("isolated member's wait: %v", err)
	}
	// The first generation the isolated member commits after the heal
	// takes it back as a fresh joiner (its state is behind the majority's).
	// Under load, more generations may follow before all settle.
	g := <-healed
	if r := g.Rank(lone.c.Name()); r < 0 || !g.Ring[r].Fresh || g.ID <= g2.ID || g.ID > g3.ID {
		t.Errorf("isolated member's wait returned %v, want a generation in (%d, %d] with it as a fresh joiner", g, g2.ID, g3.ID)
	}
}

// TestGracefulLeaveOfHalf: a member that leaves gracefully does not count
// towards the majority, so the last member of a pair carries on alone.
func TestGracefulLeaveOfHalf(t *testing.T) {
	h := newHarness(t, nil)
	a, b := h.start("h", nil), h.start("h", nil)
	g1 := agree(t, settle, a, b)
	h.leave(b)
	if g2 := agree(t, settle, a); g2.ID <= g1.ID {
		t.Errorf("after leave: %v, want after %d", g2, g1.ID)
	}
}

// TestJoinRetriesUntilSeedIsUp starts a member whose seed comes up later.
func TestJoinRetriesUntilSeedIsUp(t *testing.T) {
	h := newHarness(t, nil)
	port := freePort(t)
	seed := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	joined := make(chan error, 1)
	go func() {
		c, err := New(Config{Name: "late", BindAddr: "127.0.0.1", GRPCAddr: "127.0.0.1:1", Seeds: []string{seed},
			JoinTimeout: 10 * time.Second, Timing: FastTiming(), Logger: testLogger(t)})
		if err != nil {
			joined <- err
			return
		}
		defer c.shutdown()
		joined <- c.Join(context.Background())
	}()
	time.Sleep(500 * time.Millisecond)
	h.start("seed", func(c *Config) { c.BindPort = port })
	select {
	case err := <-joined:
		if err != nil {
			t.Fatalf("join: %v", err)
		}
	case <-time.After(settle):
		t.Fatal("join did not finish after the seed came up")
	}
}

// freePort returns a port that was free for both TCP and UDP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// TestReportedFailure: a member reports a failed step blaming a peer; the
// coordinator forms a ring without the peer, and readmits it after the
// penalty.
func TestReportedFailure(t *testing.T) {
	h := newHarness(t, nil)
	nodes := []*testNode{h.start("r", nil), h.start("r", nil), h.start("r", nil)}
	g1 := agree(t, settle, nodes...)
	coord := coordinatorOf(t, nodes...)
	var reporter, blamed *testNode
	for _, n := range nodes {
		switch {
		case n == coord:
		case reporter == nil:
			reporter = n
		default:
			blamed = n
		}
	}
	reporter.c.ReportFailure(g1.ID, blamed.c.Name(), errors.New("allreduce: connection reset"))
	// The reporter must not be handed the failed generation again.
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	g2, err := reporter.c.AtStep(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if g2.ID <= g1.ID || g2.Has(blamed.c.Name()) || len(g2.Ring) != 2 {
		t.Fatalf("after the report: %v, want a ring of two without %s", g2, blamed.c.Name())
	}
	// The test's node is idle from now on (a real one would run the step
	// and call AtStep again).
	go reporter.c.WaitGeneration(ctx, g2.ID)
	// After the penalty the blamed member is a joiner again.
	g3 := agree(t, settle, nodes...)
	if r := g3.Rank(blamed.c.Name()); g3.ID <= g2.ID || !g3.Ring[r].Fresh {
		t.Errorf("readmission: %v", g3)
	}
}

// TestStuckNodeDropped: a member whose node never finishes applying an
// update cannot acknowledge; the coordinator drops it and moves on.
func TestStuckNodeDropped(t *testing.T) {
	h := newHarness(t, nil)
	nodes := []*testNode{h.start("k", nil), h.start("k", nil), h.start("k", nil)}
	agree(t, settle, nodes...)
	stuck := nodes[2]
	if stuck == coordinatorOf(t, nodes...) {
		stuck = nodes[1]
	}
	// Its node starts a step, begins applying the update and never
	// finishes. (A node stuck computing does not delay proposals: it is
	// acknowledged at once, and BeginApply refuses the step.)
	if _, err := stuck.c.AtStep(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if err := stuck.c.BeginApply(); err != nil {
		t.Fatal(err)
	}
	joiner := h.start("k", nil)
	var want []*testNode
	for _, n := range append(nodes, joiner) {
		if n != stuck {
			want = append(want, n)
		}
	}
	g := agree(t, settle, want...)
	if g.Has(stuck.c.Name()) {
		t.Errorf("stuck member kept: %v", g)
	}
}

// TestAllLeaveAtOnce: at the end of a run every member leaves at the same
// time. None waits for a ring without itself (none will form) or for a
// leave acknowledgement from peers that are gone, and none reports an error.
func TestAllLeaveAtOnce(t *testing.T) {
	h := newHarness(t, nil)
	nodes := []*testNode{h.start("end", nil), h.start("end", nil), h.start("end", nil)}
	agree(t, settle, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		h.mu.Lock()
		n.done = true
		h.mu.Unlock()
		wg.Go(func() {
			errs[i] = n.c.Close(ctx)
			n.srv.Stop()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("member %d: %v", i, err)
		}
	}
	t.Logf("all left in %v", time.Since(start).Round(time.Millisecond))
}
