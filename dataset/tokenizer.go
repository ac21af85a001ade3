package dataset

import "fmt"

// Special token ids (gidd-spec.md §8.1): every tokenizer keeps them.
const (
	BOS  = 0 // beginning of text
	EOS  = 1 // end of text; separates packed documents
	PAD  = 2 // padding, the "empty" token
	MASK = 3 // the absorbing mask token of the diffusion process
)

// Tokenizer turns text into token ids and back. Ids 0-3 are BOS, EOS, PAD
// and MASK.
type Tokenizer interface {
	Name() string // recorded in manifests
	Vocab() int   // ids are < Vocab()
	// Encode appends the ids of text to dst. It adds no special tokens.
	Encode(dst []int32, text []byte) []int32
	// Decode appends the text of ids to dst, skipping special tokens.
	Decode(dst []byte, ids []int32) []byte
}

// Bytes is the byte-level tokenizer: the four special ids, then byte b as id
// 4+b, for a vocabulary of 260. Any byte sequence, UTF-8 or not, round-trips.
type Bytes struct{}

// BytesVocab is the vocabulary size of the byte-level tokenizer.
const BytesVocab = 4 + 256

// Name returns "bytes".
func (Bytes) Name() string { return "bytes" }

// Vocab returns 260.
func (Bytes) Vocab() int { return BytesVocab }

// Encode appends one id per byte of text.
func (Bytes) Encode(dst []int32, text []byte) []int32 {
	dst = growInt32(dst, len(text))
	for _, b := range text {
		dst = append(dst, int32(b)+4)
	}
	return dst
}

// Decode appends the bytes of the non-special ids; ids outside the
// vocabulary are skipped too.
func (Bytes) Decode(dst []byte, ids []int32) []byte {
	for _, t := range ids {
		if t >= 4 && t < BytesVocab {
			dst = append(dst, byte(t-4))
		}
	}
	return dst
}

func growInt32(s []int32, n int) []int32 {
	if cap(s)-len(s) < n {
		t := make([]int32, len(s), len(s)+n)
		copy(t, s)
		return t
	}
	return s
}

// TokenizerByName returns the tokenizer a manifest names.
func TokenizerByName(name string) (Tokenizer, error) {
	switch name {
	case Bytes{}.Name():
		return Bytes{}, nil
	}
	return nil, fmt.Errorf("unknown tokenizer %q (known: bytes)", name)
}

// builtinSpecial names the special ids of tokenizers that have no strings
// for them (Bytes), as DecodeShowingSpecial writes them.
var builtinSpecial = [...]string{BOS: "<|bos|>", EOS: "<|eos|>", PAD: "<|pad|>", MASK: "<|mask|>"}

// DecodeShowingSpecial is t.Decode that writes special tokens as their
// strings instead of skipping them (Hugging Face's decode with
// skip_special_tokens=False): a Hugging Face tokenizer's own strings (its
// special added tokens), <|bos|>, <|eos|>, <|pad|> and <|mask|> for
// ids 0-3 of a built-in one.
func DecodeShowingSpecial(t Tokenizer, dst []byte, ids []int32) []byte {
	named, hasNames := t.(interface {
		Special(id int32) bool
		Token(id int32) string
	})
	from := 0
	for i, id := range ids {
		name := ""
		switch {
		case hasNames && named.Special(id):
			name = named.Token(id)
		case !hasNames && id >= 0 && int(id) < len(builtinSpecial):
			name = builtinSpecial[id]
		}
		if name != "" {
			dst = t.Decode(dst, ids[from:i])
			dst = append(dst, name...)
			from = i + 1
		}
	}
	return t.Decode(dst, ids[from:])
}
