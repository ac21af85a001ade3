package overlapbench

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/compute/cpu"
	"github.com/difftrain/difftrain/diffusion"
)

// ring returns in-memory gradient and stats transports for world members,
// and the members in ring order (each member's two rings share its name,
// as they share an address over gRPC).
func ring(t *testing.T, world int) (grad, stats []allreduce.Transport, members []allreduce.Peer) {
	t.Helper()
	gn, sn := allreduce.NewInmemNetwork(), allreduce.NewInmemNetwork()
	for r := range world {
		addr := fmt.Sprint("m", r)
		g, err := gn.Transport(addr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := sn.Transport(addr)
		if err != nil {
			t.Fatal(err)
		}
		grad, stats = append(grad, g), append(stats, s)
		members = append(members, allreduce.Peer{Name: addr, Addr: addr})
	}
	return grad, stats, members
}

// Two in-process members run every mode over in-memory rings and report
// each mode's timed steps.
func TestRun(t *testing.T) {
	const world, steps = 2, 2
	tc, err := Config(260, 1, 32, 2, 16, 4, 0, world, "masked")
	if err != nil {
		t.Fatal(err)
	}
	grad, stats, members := ring(t, world)
	open := func(Plan) (compute.Backend, error) { return cpu.New(cpu.Options{Threads: 1}) }
	reps := make([]Report, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		// Threads 0 leaves the test process's GOMAXPROCS alone.
		p := Plan{Members: members, Rank: r, Train: tc, Steps: steps, Warmup: 1, Codec: allreduce.CodecNone, Bucket: 16 << 10}
		wg.Go(func() { reps[r], errs[r] = run(p, open, grad[r], stats[r]) })
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", r, err)
		}
	}
	for r, rep := range reps {
		if rep.Params == 0 || rep.Buckets != (4*rep.Params+16<<10-1)/(16<<10) {
			t.Errorf("member %d: %d parameters in %d buckets of 16 KiB", r, rep.Params, rep.Buckets)
		}
		if len(rep.Modes) != len(Modes) {
			t.Fatalf("member %d: %d modes, want %d", r, len(rep.Modes), len(Modes))
		}
		for i, m := range rep.Modes {
			if m.Mode != Modes[i] || len(m.Step) != steps || len(m.Compute) != steps || len(m.Wait) != steps {
				t.Errorf("member %d: mode %q with %d steps, want %q with %d", r, m.Mode, len(m.Step), Modes[i], steps)
			}
			if (m.Mode == ModeCompute) != (m.Wire == 0) {
				t.Errorf("member %d: %s sent %d gradient bytes per step", r, m.Mode, m.Wire)
			}
		}
	}
}

// The serial mode sends nothing until Wait, whatever Ready says, and then
// sums the gradients and metrics like the overlap mode.
func TestSerialSyncHoldsBack(t *testing.T) {
	const world, n = 2, 3000
	grad, stats, members := ring(t, world)
	syncs := make([]*serialSync, world)
	bufs := make([][]float32, world)
	ctx := context.Background()
	for r := range world {
		g, err := allreduce.New(grad[r], n, allreduce.Config{BucketBytes: 4 * 500})
		if err != nil {
			t.Fatal(err)
		}
		s, err := allreduce.New(stats[r], nMetrics, allreduce.Config{})
		if err != nil {
			t.Fatal(err)
		}
		gen := allreduce.Generation{ID: 1, Members: members, Rank: r}
		syncs[r] = &serialSync{ringSync: ringSync{grad: g, stats: &statsRing{r: s, gen: gen}, gen: gen}}
		bufs[r] = make([]float32, n)
		for i := range bufs[r] {
			bufs[r][i] = float32(r*n + i)
		}
		if err := syncs[r].Start(ctx, 7, bufs[r]); err != nil {
			t.Fatal(err)
		}
		for hi := n; hi > 0; hi -= 700 { // backward's order: from the end
			syncs[r].Ready(max(0, hi-700), hi)
		}
		if b := g.Stats().SentBytes; b != 0 {
			t.Fatalf("member %d sent %d bytes before Wait", r, b)
		}
	}
	got := make([]diffusion.Metrics, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		wg.Go(func() { got[r], errs[r] = syncs[r].Wait(diffusion.Metrics{Tokens: float64(r + 1), Loss: 0.5}) })
	}
	wg.Wait()
	for r := range world {
		if errs[r] != nil {
			t.Fatalf("member %d: %v", r, errs[r])
		}
		if got[r].Tokens != 3 || got[r].Loss != 1 {
			t.Errorf("member %d: metrics %+v, want the sum over both", r, got[r])
		}
		for i, v := range bufs[r] {
			if want := float32(i + (n + i)); v != want {
				t.Fatalf("member %d: grad[%d] = %v, want %v", r, i, v, want)
			}
		}
	}
}
