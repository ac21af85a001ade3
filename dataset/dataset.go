// Package dataset turns token shards into the global sample order that every
// node of a run agrees on: tokenizers, `prepare` (text to shards), the seeded
// shuffle, the split of a global batch over the ring, and prefetching.
package dataset

import "fmt"

// Source yields training sequences by global sample position. Position k
// counts samples across epochs in the run's seeded order, so the sample at k is
// a pure function of (seed, k) and the whole cursor of a run is one number.
type Source interface {
	SeqLen() int // tokens per sequence
	Vocab() int  // token ids are < Vocab()
	// Sample copies the tokens of global position k into dst (len SeqLen()).
	Sample(k int64, dst []int32) error
}

// Split returns the global positions [lo, hi) that member rank of a ring of
// world members takes from global step `step` with a global batch of batch
// sequences: contiguous parts in ring order, the first batch%world members
// taking one extra sequence.
func Split(step int64, batch, rank, world int) (lo, hi int64, err error) {
	if batch <= 0 || world <= 0 || rank < 0 || rank >= world {
		return 0, 0, fmt.Errorf("dataset split: batch %d, rank %d, world %d out of range", batch, rank, world)
	}
	if world > batch {
		return 0, 0, fmt.Errorf("dataset split: world size %d exceeds the global batch %d", world, batch)
	}
	base, extra := batch/world, batch%world
	start := rank*base + min(rank, extra)
	n := base
	if rank < extra {
		n++
	}
	lo = step*int64(batch) + int64(start)
	return lo, lo + int64(n), nil
}
