package allreduce

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// pipeAll runs Pipe on every member of c at once and returns their errors.
func (c *cluster) pipeAll(step uint64, total, chunk int) []error {
	errs := make([]error, len(c.ts))
	var wg sync.WaitGroup
	for i, tr := range c.ts {
		right := c.ts[(i+1)%len(c.ts)].Addr()
		wg.Go(func() {
			sent, err := Pipe(context.Background(), tr, right, 1, step, total, chunk, 5*time.Second)
			if want := uint64(total + (total+chunk-1)/chunk*headerSize); err == nil && sent != want {
				err = fmt.Errorf("sent %d bytes, want %d", sent, want)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errs
}

// TestPipeThenRing: Pipe moves its bytes over both transports (a total
// that is not a multiple of the chunk included), reads exactly its own
// messages, and leaves the inbox to the ring: allreduces before and after
// it on the same transports still sum exactly.
func TestPipeThenRing(t *testing.T) {
	for name, mk := range map[string]func(testing.TB, int, int, Config) *cluster{"inmem": newInmemCluster, "grpc": newGRPCCluster} {
		t.Run(name, func(t *testing.T) {
			const n, length = 3, 5000
			c := mk(t, n, length, Config{ChunkBytes: 4096})
			for step := uint64(1); step <= 4; step++ {
				if step%2 == 0 {
					for i, err := range c.pipeAll(step, 1<<20+100, 64<<10) {
						if err != nil {
							t.Fatalf("step %d, member %d: %v", step, i, err)
						}
					}
					continue
				}
				xs := inputs(n, length, step)
				want := ringSum(clone(xs), [][2]int{{0, length}})
				for i, err := range c.allreduce(1, step, xs) {
					if err != nil {
						t.Fatalf("step %d, member %d: %v", step, i, err)
					}
				}
				for i := range xs {
					for j := range want {
						if xs[i][j] != want[j] {
							t.Fatalf("step %d: member %d element %d = %v, want %v", step, i, j, xs[i][j], want[j])
						}
					}
				}
			}
		})
	}
}

// TestPipeRefusesOtherMessages: a message that is not the pipe's (another
// step's data) is an error naming it, and a silent neighbour one naming
// the deadline.
func TestPipeRefusesOtherMessages(t *testing.T) {
	c := newInmemCluster(t, 2, 0, Config{})
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, errs[0] = Pipe(context.Background(), c.ts[0], c.ts[1].Addr(), 1, 7, 4096, 1024, time.Second)
	})
	wg.Go(func() {
		_, errs[1] = Pipe(context.Background(), c.ts[1], c.ts[0].Addr(), 1, 8, 4096, 1024, time.Second)
	})
	wg.Wait()
	// The first member to see the other's message fails and breaks its
	// link, so the other may see that instead.
	if errs[0] == nil || errs[1] == nil {
		t.Fatalf("errors %v, want both members to fail", errs)
	}
	if !strings.Contains(errs[0].Error()+errs[1].Error(), "unexpected message (kind 1, generation 1, step") {
		t.Errorf("errors %v, want one naming the unexpected message", errs)
	}
	c = newInmemCluster(t, 2, 0, Config{})
	_, err := Pipe(context.Background(), c.ts[0], c.ts[1].Addr(), 1, 9, 4096, 1024, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "none within") {
		t.Errorf("silent neighbour: %v", err)
	}
}
