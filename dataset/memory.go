package dataset

import "fmt"

// Memory is a Source over sequences held in memory, in the same global order
// a Loader over the same sequences and seed would use. It is for tests.
type Memory struct {
	seqs  [][]int32
	vocab int
	order Order
}

// NewMemory checks seqs (same non-zero length, ids in [0, vocab)) and
// returns a Source over them shuffled with seed.
func NewMemory(seqs [][]int32, vocab int, seed uint64) (*Memory, error) {
	if len(seqs) == 0 || len(seqs[0]) == 0 {
		return nil, fmt.Errorf("dataset memory: no sequences")
	}
	for i, s := range seqs {
		if len(s) != len(seqs[0]) {
			return nil, fmt.Errorf("dataset memory: sequence %d has %d tokens, sequence 0 has %d", i, len(s), len(seqs[0]))
		}
		for j, t := range s {
			if t < 0 || int(t) >= vocab {
				return nil, fmt.Errorf("dataset memory: sequence %d: token %d at position %d outside [0, %d)", i, t, j, vocab)
			}
		}
	}
	o, err := NewOrder(int64(len(seqs)), seed)
	if err != nil {
		return nil, err
	}
	return &Memory{seqs: seqs, vocab: vocab, order: o}, nil
}

// SeqLen returns the tokens per sequence.
func (m *Memory) SeqLen() int { return len(m.seqs[0]) }

// Vocab returns the vocabulary size.
func (m *Memory) Vocab() int { return m.vocab }

// Len returns the number of sequences (one epoch).
func (m *Memory) Len() int64 { return m.order.Len() }

// Index returns the sequence index served at global position k.
func (m *Memory) Index(k int64) int64 { return m.order.At(k) }

// Sample copies the sequence at global position k into dst.
func (m *Memory) Sample(k int64, dst []int32) error {
	if k < 0 {
		return fmt.Errorf("dataset memory: negative position %d", k)
	}
	if len(dst) != m.SeqLen() {
		return fmt.Errorf("dataset memory: destination holds %d tokens, want %d", len(dst), m.SeqLen())
	}
	copy(dst, m.seqs[m.order.At(k)])
	return nil
}
