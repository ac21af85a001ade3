package tokenizer

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkEncode encodes testdata/corpus.txt (Go source and some prose)
// with the §8.1-layout tokenizer trained by this package.
func BenchmarkEncode(b *testing.B) {
	tok := mustLoad(b, "ours")
	text, err := os.ReadFile(filepath.Join("testdata", "corpus.txt"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	var dst []int32
	for b.Loop() {
		dst = tok.Encode(dst[:0], text)
	}
}
