package dataset

// Packer packs documents into sequences of n tokens with the rule of
// gidd-spec.md §8.4: append a document's tokens to a buffer, then an EOS
// unless the buffer's length is already a multiple of n; whenever the buffer
// holds n tokens or more, cut the first n as a sequence. Documents straddle
// sequences; there is no padding. What is left at the end (fewer than n
// tokens) is not emitted.
type Packer struct {
	n   int
	buf []int32
	off int // buf[off:] is pending
}

// NewPacker returns a packer for sequences of n > 0 tokens.
func NewPacker(n int) *Packer { return &Packer{n: n} }

// Add appends one document and calls emit for every sequence completed; emit
// must not keep seq. An error from emit stops Add and is returned.
func (p *Packer) Add(doc []int32, emit func(seq []int32) error) error {
	p.buf = append(p.buf, doc...)
	if (len(p.buf)-p.off)%p.n != 0 {
		p.buf = append(p.buf, EOS)
	}
	for len(p.buf)-p.off >= p.n {
		if err := emit(p.buf[p.off : p.off+p.n]); err != nil {
			return err
		}
		p.off += p.n
	}
	if p.off > 0 && p.off >= len(p.buf)/2 {
		p.buf = p.buf[:copy(p.buf, p.buf[p.off:])]
		p.off = 0
	}
	return nil
}

// Pending returns the number of tokens waiting for a full sequence.
func (p *Packer) Pending() int { return len(p.buf) - p.off }
