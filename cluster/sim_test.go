package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// simReduce stands in for the allreduce: a step of a generation completes
// for all ring members at once when every one of them has arrived, and a
// member that gives up withdraws, so a step completes for all or none.
type simReduce struct {
	mu      sync.Mutex
	arrived map[string]map[string]bool // "gen/step" -> members waiting
	done    map[string]chan struct{}
	// completed[step] lists the generations in which step completed.
	completed map[uint64]map[uint64]bool
}

func newSimReduce() *simReduce {
	return &simReduce{arrived: map[string]map[string]bool{}, done: map[string]chan struct{}{}, completed: map[uint64]map[uint64]bool{}}
}

var errInterrupted = errors.New("interrupted")

func (r *simReduce) step(ctx context.Context, g Generation, name string, step uint64, stop <-chan struct{}) error {
	key := fmt.Sprintf("%d/%d", g.ID, step)
	r.mu.Lock()
	if r.arrived[key] == nil {
		r.arrived[key] = map[string]bool{}
		r.done[key] = make(chan struct{})
	}
	done := r.done[key]
	select {
	case <-done:
		r.mu.Unlock()
		return fmt.Errorf("step %s already completed without %s", key, name)
	default:
	}
	r.arrived[key][name] = true
	if len(r.arrived[key]) == len(g.Ring) {
		if r.completed[step] == nil {
			r.completed[step] = map[uint64]bool{}
		}
		r.completed[step][g.ID] = true
		close(done)
	}
	r.mu.Unlock()
	timeout := time.NewTimer(3 * time.Second)
	defer timeout.Stop()
	var err error
	select {
	case <-done:
		return nil
	case <-stop:
		err = errInterrupted
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout.C:
		err = errors.New("reduce timed out")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-done: // completed meanwhile: the step counts
		return nil
	default:
		delete(r.arrived[key], name)
		return err
	}
}

// simNode runs the node loop of the package documentation.
func simNode(ctx context.Context, t *testing.T, c *Cluster, r *simReduce, boundary func(string) uint64, setBoundary func(string, uint64)) {
	gen, err := c.WaitGeneration(ctx, 0)
	if err != nil {
		return
	}
	step := gen.Start
	setBoundary(c.Name(), step)
	for ctx.Err() == nil {
		g, err := c.AtStep(ctx, step)
		if err != nil {
			return
		}
		if g.ID != gen.ID {
			gen = g
			me := g.Ring[g.Rank(c.Name())]
			if step != g.Start || me.Fresh {
				src := -1
				for i, m := range g.Ring {
					if !m.Fresh && m.Step == g.Start && boundary(m.Name) == g.Start {
						src = i
					}
				}
				if src < 0 {
					t.Errorf("%s: generation %v has no member to take state at %d from", c.Name(), g, g.Start)
					return
				}
				step = g.Start
				setBoundary(c.Name(), step)
				continue
			}
		}
		time.Sleep(time.Millisecond) // forward and backward
		err = r.step(ctx, gen, c.Name(), step, c.Interrupt())
		switch {
		case err == nil:
			step++
			setBoundary(c.Name(), step)
			c.SetStatus(StatusInfo{Step: step, Loss: 1 / float64(step)})
		case errors.Is(err, errInterrupted) || ctx.Err() != nil:
		default:
			c.ReportFailure(gen.ID, "", err)
		}
	}
}

// TestTrainingLoopThroughChanges runs simulated nodes through a joiner and
// a crash and checks that no step is lost or completed in two generations.
func TestTrainingLoopThroughChanges(t *testing.T) {
	h := newHarness(t, nil)
	r := newSimReduce()
	var bmu sync.Mutex
	bounds := map[string]uint64{}
	boundary := func(n string) uint64 { bmu.Lock(); defer bmu.Unlock(); return bounds[n] }
	setBoundary := func(n string, s uint64) { bmu.Lock(); defer bmu.Unlock(); bounds[n] = s }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	stops := map[*testNode]context.CancelFunc{}
	run := func(n *testNode) {
		nctx, stop := context.WithCancel(ctx)
		stops[n] = stop
		wg.Go(func() { simNode(nctx, t, n.c, r, boundary, setBoundary) })
	}
	waitStep := func(n *testNode, s uint64) {
		t.Helper()
		deadline := time.Now().Add(settle)
		for boundary(n.c.Name()) < s {
			if time.Now().After(deadline) {
				t.Fatalf("%s stuck at step %d, want %d; generation %v", n.c.Name(), boundary(n.c.Name()), s, n.c.Current())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	two := func(c *Config) { c.MinNodes = 2 }
	nodes := []*testNode{h.start("s", two), h.start("s", two), h.start("s", two)}
	agree(t, settle, nodes...)
	for _, n := range nodes {
		run(n)
	}
	waitStep(nodes[0], 20)

	joiner := h.start("s", two)
	run(joiner)
	nodes = append(nodes, joiner)
	agree(t, settle, nodes...)
	waitStep(joiner, boundary(nodes[0].c.Name())+20)

	victim := nodes[1]
	if victim == coordinatorOf(t, nodes...) {
		victim = nodes[2]
	}
	stops[victim]()
	h.kill(victim)
	var rest []*testNode
	for _, n := range nodes {
		if n != victim {
			rest = append(rest, n)
		}
	}
	agree(t, settle, rest...)
	final := boundary(rest[0].c.Name()) + 20
	for _, n := range rest {
		waitStep(n, final)
	}
	cancel()
	wg.Wait()

	r.mu.Lock()
	defer r.mu.Unlock()
	for s := uint64(0); s < final; s++ {
		if len(r.completed[s]) != 1 {
			t.Errorf("step %d completed in generations %v, want exactly one", s, r.completed[s])
		}
	}
}
