package dataset

import (
	"fmt"
	"math/bits"
)

// Order is the global sample order of a run: for epoch e it is a seeded
// pseudo-random permutation of the n sequences of the dataset, evaluated at
// any position without materialising it. Global position k is sequence
// At(k) of epoch k/n, a pure function of (seed, k).
//
// The permutation is a balanced Feistel network on the smallest even number
// of bits covering n, keyed by (seed, epoch), made a permutation of [0, n)
// by cycle walking: re-applying it until the value lands below n. The
// domain is less than 4n, so a walk takes fewer than 4 steps on average.
type Order struct {
	n    int64
	seed uint64
	half uint   // bits per Feistel half
	mask uint64 // (1 << half) - 1
}

// feistelRounds is the number of Feistel rounds; 6 mixes well.
const feistelRounds = 6

// NewOrder returns the order of n sequences under seed.
func NewOrder(n int64, seed uint64) (Order, error) {
	if n <= 0 {
		return Order{}, fmt.Errorf("dataset order: %d sequences", n)
	}
	b := uint(bits.Len64(uint64(n - 1)))
	b = max(2, b+b%2)
	return Order{n: n, seed: seed, half: b / 2, mask: 1<<(b/2) - 1}, nil
}

// Len returns the number of sequences, the length of an epoch.
func (o Order) Len() int64 { return o.n }

// Epoch returns the epoch of global position k.
func (o Order) Epoch(k int64) int64 { return k / o.n }

// At returns the sequence index, in [0, n), at global position k >= 0.
func (o Order) At(k int64) int64 {
	e, i := k/o.n, k%o.n
	return int64(o.Permute(uint64(e), uint64(i)))
}

// Permute returns the image of i in [0, n) under epoch e's permutation.
func (o Order) Permute(e, i uint64) uint64 {
	key := mix(o.seed ^ mix(e+0x9e3779b97f4a7c15))
	x := i
	for {
		x = o.feistel(key, x)
		if x < uint64(o.n) {
			return x
		}
	}
}

func (o Order) feistel(key, x uint64) uint64 {
	l, r := x>>o.half, x&o.mask
	for round := range uint64(feistelRounds) {
		l, r = r, l^(mix(key^(round<<56)^r)&o.mask)
	}
	return l<<o.half | r
}

// mix is the splitmix64 finaliser, a good 64-bit mixing function.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
