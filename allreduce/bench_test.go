package allreduce

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRing reduces 16 MiB per step over n members in one process, in
// memory and over gRPC on 127.0.0.1. B/op shows that, once warm, a step
// allocates kilobytes (contexts, timers), not buffers. cpu-ms/op is the
// process's user and system CPU time per step (all members together): on a
// shared machine it moves far less with the load than ns/op does.
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
					cpu0 := cpuTime(b)
					b.ResetTimer()
					for k := range b.N {
						step(uint64(k + 1))
					}
					b.StopTimer()
					b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
				})
			}
		}
	}
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTCPRing is BenchmarkRing's ceiling: n members in one process,
// each sending 2(n−1)/n × 16 MiB to its right neighbour over one loopback
// TCP connection while receiving as much from its left one, with no framing
// and no reduction. Its cpu-ms/op is the kernel's share of a ring step.
func BenchmarkTCPRing(b *testing.B) {
	const bytes = 16 << 20
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprintf("n%d", n), func(b *testing.B) {
			per := bytes * 2 * (n - 1) / n
			lis := make([]net.Listener, n)
			for i := range lis {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				lis[i] = l
			}
			out := make([]net.Conn, n)
			in := make([]net.Conn, n)
			for i := range n {
				c, err := net.Dial("tcp", lis[(i+1)%n].Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				out[i] = c
				a, err := lis[(i+1)%n].Accept()
				if err != nil {
					b.Fatal(err)
				}
				defer a.Close()
				in[(i+1)%n] = a
			}
			sbuf := make([][]byte, n)
			rbuf := make([][]byte, n)
			for i := range n {
				sbuf[i], rbuf[i] = make([]byte, 512<<10), make([]byte, 512<<10)
			}
			step := func() {
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						for s := 0; s < per; {
							k, err := out[i].Write(sbuf[i][:min(len(sbuf[i]), per-s)])
							if err != nil {
								b.Error(err)
								return
							}
							s += k
						}
					})
					wg.Go(func() {
						for g := 0; g < per; {
							k, err := in[i].Read(rbuf[i][:min(len(rbuf[i]), per-g)])
							if err != nil {
								b.Error(err)
								return
							}
							g += k
						}
					})
				}
				wg.Wait()
			}
			step()
			b.SetBytes(bytes)
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				step()
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkPowerSGD is PowerSGD's own work on one member (a ring of one
// sends nothing): rank 4 on the matrices of two transformer blocks of
// d 512 (four 512 × 512, two 512 × 2048 each), 6.3 M elements.
func BenchmarkPowerSGD(b *testing.B) {
	var ts []Tensor
	n := 0
	for range 2 {
		for _, s := range [][2]int{{512, 512}, {512, 512}, {512, 512}, {512, 512}, {512, 2048}, {2048, 512}} {
			ts = append(ts, Tensor{Off: n, Rows: s[0], Cols: s[1]})
			n += s[0] * s[1]
		}
	}
	c := newInmemCluster(b, 1, n, Config{Codec: CodecPowerSGD, Tensors: ts, PowerSGDRank: 4, Seed: 1})
	xs := inputs(1, n, 1)
	x := make([]float32, n)
	b.SetBytes(4 * int64(n))
	for k := range b.N {
		copy(x, xs[0])
		if err := c.rs[0].Allreduce(context.Background(), c.gen[0], uint64(k), x); err != nil {
			b.Fatal(err)
		}
	}
}
