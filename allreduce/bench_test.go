package allreduce

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkRing reduces 16 MiB per step over n members in one process, in
// memory and over gRPC on 127.0.0.1. B/op shows that, once warm, a step
// allocates kilobytes (contexts, timers), not buffers.
func BenchmarkRing(b *testing.B) {
	const length = 4 << 20 // 16 MiB of fp32
	for _, kind := range []string{"inmem", "grpc"} {
		for _, n := range []int{2, 4} {
			for _, codec := range []string{CodecNone, CodecBF16, CodecInt8} {
				b.Run(fmt.Sprintf("%s/n%d/%s", kind, n, codec), func(b *testing.B) {
					var c *cluster
					if kind == "inmem" {
						c = newInmemCluster(b, n, length, Config{Codec: codec})
					} else {
						c = newGRPCCluster(b, n, length, Config{Codec: codec})
					}
					xs := inputs(n, length, 1)
					step := func(s uint64) {
						var wg sync.WaitGroup
						for i, r := range c.rs {
							wg.Go(func() {
								if err := r.Allreduce(context.Background(), c.gen[i], s, xs[i]); err != nil {
									b.Error(err)
								}
							})
						}
						wg.Wait()
					}
					step(0) // warm the pools
					b.SetBytes(4 * length)
					b.ReportAllocs()
					b.ResetTimer()
					for k := range b.N {
						step(uint64(k + 1))
					}
				})
			}
		}
	}
}
