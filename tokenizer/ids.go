package tokenizer

import (
	"bytes"
	"fmt"
	"strconv"
)

// FormatIDs appends ids as decimal numbers separated by spaces.
func FormatIDs(dst []byte, ids []int32) []byte {
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = strconv.AppendInt(dst, int64(id), 10)
	}
	return dst
}

// ParseIDs reads decimal ids separated by white space, each below vocab.
func ParseIDs(text []byte, vocab int) ([]int32, error) {
	var ids []int32
	for i, f := range bytes.Fields(text) {
		n, err := strconv.ParseInt(string(f), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("id %d: %q is not a number", i+1, f)
		}
		if n < 0 || n >= int64(vocab) {
			return nil, fmt.Errorf("id %d: %d is outside the vocabulary of %d", i+1, n, vocab)
		}
		ids = append(ids, int32(n))
	}
	return ids, nil
}
