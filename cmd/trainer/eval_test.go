package main

import (
	"math"
	"testing"

	"github.com/difftrain/difftrain/dataset"
)

// seqSource serves fixed sequences.
type seqSource [][]int32

func (s seqSource) SeqLen() int { return len(s[0]) }
func (s seqSource) Vocab() int  { return dataset.BytesVocab }
func (s seqSource) Sample(k int64, dst []int32) error {
	copy(dst, s[k])
	return nil
}

// For the byte-level tokenizer the bytes are the non-special tokens, so
// bits per byte is nats/token / ln 2 × tokens/bytes.
func TestTextBytes(t *testing.T) {
	src := seqSource{
		{'a' + 4, 'b' + 4, dataset.EOS, 'c' + 4},
		{0xe2 + 4, 0x82 + 4, 0xac + 4, dataset.PAD}, // "€" and a pad
	}
	toks, nb, err := textBytes(src, dataset.Bytes{}, 0, 2, 0)
	if err != nil || toks != 8 || nb != 6 {
		t.Fatalf("textBytes = %d tokens, %d bytes, %v; want 8, 6", toks, nb, err)
	}
	if toks, nb, _ := textBytes(src, dataset.Bytes{}, 0, 2, 2); toks != 4 || nb != 2 {
		t.Fatalf("from position 2: %d tokens, %d bytes; want 4, 2", toks, nb)
	}
	const natsPerToken = 1.5
	if got, want := bitsPerByte(natsPerToken*8, 6), natsPerToken/math.Ln2*8/6; math.Abs(got-want) > 1e-12 {
		t.Fatalf("bitsPerByte = %v, want %v", got, want)
	}
	if !math.IsNaN(bitsPerByte(1, 0)) {
		t.Fatal("bits per byte of no text is not NaN")
	}
}
