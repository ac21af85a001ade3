package dataset

import "math/rand/v2"

// Random is a Source of uniformly random tokens, never the special ids 0-3,
// the same for a given position every time. It is for benchmarks, where the
// data's content does not matter but its cost must not be measured.
type Random struct {
	Seq, Vocabulary int // tokens per sequence, vocabulary size (> 4)
}

// SeqLen returns the tokens per sequence.
func (r Random) SeqLen() int { return r.Seq }

// Vocab returns the vocabulary size.
func (r Random) Vocab() int { return r.Vocabulary }

// Sample fills dst with the tokens of position k.
func (r Random) Sample(k int64, dst []int32) error {
	rng := rand.New(rand.NewPCG(uint64(k), 1))
	for i := range dst {
		dst[i] = int32(4 + rng.IntN(r.Vocabulary-4))
	}
	return nil
}
