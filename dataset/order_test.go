package dataset

import (
	"math"
	"testing"
)

func TestOrderBijection(t *testing.T) {
	for _, n := range []int64{1, 2, 3, 4, 5, 7, 16, 17, 100, 1000, 4097, 65537} {
		o, err := NewOrder(n, 42)
		if err != nil {
			t.Fatal(err)
		}
		for e := int64(0); e < 3; e++ {
			seen := make([]bool, n)
			for i := range n {
				j := o.At(e*n + i)
				if j < 0 || j >= n {
					t.Fatalf("n=%d epoch %d: At(%d) = %d out of range", n, e, i, j)
				}
				if seen[j] {
					t.Fatalf("n=%d epoch %d: %d served twice", n, e, j)
				}
				seen[j] = true
			}
		}
	}
	if _, err := NewOrder(0, 1); err == nil {
		t.Fatal("NewOrder(0) succeeded")
	}
}

func TestOrderDependsOnSeedAndEpoch(t *testing.T) {
	const n = 1000
	a, _ := NewOrder(n, 1)
	b, _ := NewOrder(n, 2)
	a2, _ := NewOrder(n, 1)
	same := func(f, g func(int64) int64) int {
		c := 0
		for i := range int64(n) {
			if f(i) == g(i) {
				c++
			}
		}
		return c
	}
	if c := same(a.At, a2.At); c != n {
		t.Fatalf("same seed: %d of %d positions agree", c, n)
	}
	// Unrelated permutations agree on about one position.
	if c := same(a.At, b.At); c > 10 {
		t.Fatalf("seeds 1 and 2 agree on %d of %d positions", c, n)
	}
	if c := same(a.At, func(i int64) int64 { return a.At(n + i) }); c > 10 {
		t.Fatalf("epochs 0 and 1 agree on %d of %d positions", c, n)
	}
}

// TestOrderShuffled checks that no shard's sequences cluster in one part of
// the epoch: with 10 contiguous "shards" of 2000 sequences each, every shard
// puts close to a tenth of its sequences in every tenth of the epoch, and
// the position-to-index map is uncorrelated.
func TestOrderShuffled(t *testing.T) {
	const n, shards, parts = 20000, 10, 10
	for _, seed := range []uint64{0, 1, 12345} {
		o, _ := NewOrder(n, seed)
		var count [shards][parts]int
		var sx, sy, sxx, syy, sxy float64
		for k := range int64(n) {
			g := o.At(k)
			count[g/(n/shards)][k/(n/parts)]++
			x, y := float64(k), float64(g)
			sx, sy, sxx, syy, sxy = sx+x, sy+y, sxx+x*x, syy+y*y, sxy+x*y
		}
		// Expected 200 per cell, standard deviation about 13.4.
		for s := range shards {
			for p := range parts {
				if c := count[s][p]; c < 130 || c > 270 {
					t.Errorf("seed %d: shard %d has %d sequences in tenth %d of the epoch, want about 200", seed, s, c, p)
				}
			}
		}
		r := (n*sxy - sx*sy) / math.Sqrt((n*sxx-sx*sx)*(n*syy-sy*sy))
		if math.Abs(r) > 0.05 {
			t.Errorf("seed %d: correlation of position and index %.3f", seed, r)
		}
	}
}

func BenchmarkOrderAt(b *testing.B) {
	o, _ := NewOrder(338760, 7)
	var s int64
	for i := range b.N {
		s += o.At(int64(i))
	}
	_ = s
}
