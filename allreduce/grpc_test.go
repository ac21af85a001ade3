package allreduce

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

// TestGRPCSums runs the ring over real gRPC streams on 127.0.0.1, every
// codec, with and without checksums, several steps on the same streams.
// Messages of 64 KiB and more keep their payload in gRPC's receive buffers
// (split at arbitrary byte offsets) and are forwarded from there; smaller
// ones are copied out: the cases cover both.
func TestGRPCSums(t *testing.T) {
	cases := []struct {
		n, length int
		codec     string
		chunk     int // KiB of fp32 per message
		checksum  bool
	}{
		{1, 1000, CodecNone, 64, false},
		{2, 0, CodecNone, 64, true},
		{2, 1, CodecNone, 64, false},
		{3, 2, CodecNone, 64, true},
		{3, 1_000_003, CodecNone, 64, false},
		{3, 1_000_003, CodecNone, 512, true},
		{4, 65_537, CodecBF16, 64, false},
		{3, 400_009, CodecBF16, 512, true},
		{4, 65_537, CodecBF16Zstd, 64, true},
		{2, 400_009, CodecBF16Zstd, 1024, false},
		{5, 65_537, CodecInt8, 64, false},
		{3, 400_009, CodecInt8, 1024, true},
		{8, 7919, CodecNone, 64, false},
	}
	for _, tc := range cases {
		if tc.length > 100_000 && (raceEnabled || testing.Short()) {
			tc.length = 100_003
		}
		t.Run(fmt.Sprintf("%s/n%d/len%d/chunk%dk/crc=%v", tc.codec, tc.n, tc.length, tc.chunk, tc.checksum), func(t *testing.T) {
			c := newGRPCCluster(t, tc.n, tc.length, Config{Codec: tc.codec, BucketBytes: 4 * 400_000,
				ChunkBytes: tc.chunk << 10, Checksum: tc.checksum})
			for step := range uint64(2) {
				xs := inputs(tc.n, tc.length, step+uint64(tc.length))
				want := ringSum(xs, c.rs[0].Buckets())
				_, abs := exactSum(xs)
				lim := bound(tc.codec, tc.n, abs)
				for i, err := range c.allreduce(1, step, xs) {
					if err != nil {
						t.Fatalf("step %d member %d: %v", step, i, err)
					}
				}
				for r := range xs {
					for i := range want {
						if tc.codec == CodecNone && math.Float32bits(xs[r][i]) != math.Float32bits(want[i]) {
							t.Fatalf("member %d element %d: got %v want %v", r, i, xs[r][i], want[i])
						}
						if d := math.Abs(float64(xs[r][i] - want[i])); d > 2*lim[i] {
							t.Fatalf("member %d element %d: got %v want about %v", r, i, xs[r][i], want[i])
						}
						if xs[r][i] != xs[0][i] {
							t.Fatalf("element %d differs between members 0 and %d", i, r)
						}
					}
				}
			}
			if tc.n > 1 && tc.length > 0 && c.rs[0].Stats().SentBytes == 0 {
				t.Error("no bytes counted as sent")
			}
		})
	}
}

// TestGRPCCloseDelivers: a member that finishes first and closes its
// transport at once must not cut off what its neighbour still has to
// receive (gRPC writes sent messages asynchronously).
func TestGRPCCloseDelivers(t *testing.T) {
	for k := range 6 {
		n, length := 3, 300_000
		if k%2 == 1 {
			n, length = 4, 1
		}
		c := newGRPCCluster(t, n, length, Config{ChunkBytes: 64 << 10})
		xs := inputs(n, length, uint64(k))
		want := ringSum(xs, c.rs[0].Buckets())
		for range 2 {
			want = ringSum([][]float32{want, want, want, want}[:n], c.rs[0].Buckets())
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, r := range c.rs {
			wg.Go(func() {
				for step := range uint64(3) {
					if errs[i] = r.Allreduce(context.Background(), c.gen[i], step, xs[i]); errs[i] != nil {
						break
					}
				}
				c.ts[i].Close()
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d member %d: %v", k, i, err)
			}
		}
		for i := range want {
			if xs[2][i] != want[i] {
				t.Fatalf("round %d element %d: got %v want %v", k, i, xs[2][i], want[i])
			}
		}
	}
}

// TestRetainClosesLeftMembers: when a ring continues without a member, the
// first step of the new generation closes the link to it (its stream ends)
// and keeps the links to the members that stay.
func TestRetainClosesLeftMembers(t *testing.T) {
	c := newGRPCCluster(t, 3, 70_000, Config{ChunkBytes: 64 << 10})
	xs := inputs(3, 70_000, 7)
	for i, err := range c.allreduce(1, 0, xs) {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	// Member 2 leaves: members 0 and 1 form generation 2. Member 1's right
	// neighbour was member 2; its link there must go.
	t1 := c.ts[1].(*GRPCTransport)
	if !hasLink(t1, c.ts[2].Addr()) {
		t.Fatal("member 1 has no link to member 2 after a step")
	}
	members := c.gen[0].Members[:2]
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			errs[i] = c.rs[i].Allreduce(context.Background(), Generation{ID: 2, Members: members, Rank: i}, 1, xs[i])
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("generation 2, member %d: %v", i, err)
		}
	}
	if hasLink(t1, c.ts[2].Addr()) {
		t.Error("member 1 still holds a link to member 2, which left")
	}
	if !hasLink(t1, c.ts[0].Addr()) {
		t.Error("member 1 lost its link to member 0, which stayed")
	}
	// Member 2 sees the stream from member 1 end.
	select {
	case f := <-c.ts[2].Inbox():
		if f.Err == nil || f.Peer != t1.Addr() {
			t.Errorf("member 2 got %+v, want the end of member 1's stream", f)
		}
		f.Release()
	case <-time.After(10 * time.Second):
		t.Error("member 2 never saw member 1's stream end")
	}
}

func hasLink(t *GRPCTransport, addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.links[addr]
	return l != nil && !l.broken.Load()
}
