package dataset

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/tokenizer"
)

// prepareWith prepares the test corpus with tok and returns the dataset.
func prepareWith(t *testing.T, tok Tokenizer) string {
	t.Helper()
	root, _ := corpus(t)
	out := t.TempDir()
	if _, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{root}, Out: out, SeqLen: 32, Workers: 1, Tokenizer: tok}); err != nil {
		t.Fatal(err)
	}
	return out
}

// The Loader hands checkpoints the dataset's tokenizer file, and nothing
// when the copy is damaged or the tokenizer is built in.
func TestLoaderTokenizerJSON(t *testing.T) {
	tok, err := LoadTokenizer(paperTokenizer)
	if err != nil {
		t.Fatal(err)
	}
	dir := prepareWith(t, tok)
	open := func(dir string) *Loader {
		l, err := Open(context.Background(), Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	l := open(dir)
	if got := l.TokenizerJSON(); !bytes.Equal(got, tok.File()) {
		t.Fatalf("TokenizerJSON: %d bytes, want the dataset's %d", len(got), len(tok.File()))
	}
	if lt, err := l.Tokenizer(); err != nil || lt.Name() != tok.Name() {
		t.Fatalf("Tokenizer: %v, %v", lt, err)
	}
	// A damaged copy is never handed on.
	p := filepath.Join(dir, TokenizerCopy)
	b, _ := os.ReadFile(p)
	b[len(b)/3] ^= 1
	os.WriteFile(p, b, 0o644)
	if got := open(dir).TokenizerJSON(); got != nil {
		t.Fatalf("a damaged tokenizer copy was handed on (%d bytes)", len(got))
	}
	if got := open(prepareWith(t, Bytes{})).TokenizerJSON(); got != nil {
		t.Fatalf("the byte-level dataset has a tokenizer file of %d bytes", len(got))
	}
}

func TestCheckpointTokenizer(t *testing.T) {
	tok, err := tokenizer.Load(paperTokenizer)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tokenizer.Load("../tokenizer/testdata/ours.json")
	if err != nil {
		t.Fatal(err)
	}
	// The file the checkpoint carries.
	got, err := CheckpointTokenizer(tok.Name(), tok.File(), tok.SHA256(), "")
	if err != nil || got.Name() != tok.Name() {
		t.Fatalf("carried file: %v, %v", got, err)
	}
	if _, err := CheckpointTokenizer(tok.Name(), other.File(), tok.SHA256(), ""); err == nil || !strings.Contains(err.Error(), other.SHA256()) {
		t.Fatalf("a carried file of another digest: %v", err)
	}
	// Built in.
	if got, err := CheckpointTokenizer("bytes", nil, "", ""); err != nil || got.Name() != "bytes" {
		t.Fatalf("bytes: %v, %v", got, err)
	}
	// No file: the dataset's, if it is the checkpoint's.
	if _, err := CheckpointTokenizer(tok.Name(), nil, tok.SHA256(), ""); err == nil || !strings.Contains(err.Error(), "--data") {
		t.Fatalf("no file, no dataset: %v", err)
	}
	ptok, _ := LoadTokenizer(paperTokenizer)
	dir := prepareWith(t, ptok)
	if got, err := CheckpointTokenizer(tok.Name(), nil, tok.SHA256(), dir); err != nil || got.Name() != tok.Name() {
		t.Fatalf("the dataset's: %v, %v", got, err)
	}
	if got, err := CheckpointTokenizer(tok.Name(), nil, "", dir); err != nil || got.Name() != tok.Name() {
		t.Fatalf("an older checkpoint (name only): %v, %v", got, err)
	}
	if _, err := CheckpointTokenizer(other.Name(), nil, other.SHA256(), dir); err == nil || !strings.Contains(err.Error(), other.SHA256()) || !strings.Contains(err.Error(), tok.SHA256()) {
		t.Fatalf("a dataset of another tokenizer: %v, want both digests", err)
	}
}

func TestDecodeShowingSpecial(t *testing.T) {
	if got := string(DecodeShowingSpecial(Bytes{}, nil, []int32{BOS, 'h' + 4, MASK, 'i' + 4, EOS, PAD})); got != "<|bos|>h<|mask|>i<|eos|><|pad|>" {
		t.Errorf("bytes: %q", got)
	}
	tok, err := tokenizer.Load("../tokenizer/testdata/ours.json")
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(nil, []byte("func main() {"))
	ids = append(append([]int32{BOS}, ids[:2]...), append([]int32{MASK}, ids[2:]...)...)
	ids = append(ids, EOS)
	want := tok.Token(BOS) + string(tok.Decode(nil, ids[1:3])) + tok.Token(MASK) + string(tok.Decode(nil, ids[4:len(ids)-1])) + tok.Token(EOS)
	if got := string(DecodeShowingSpecial(tok, nil, ids)); got != want {
		t.Errorf("BPE: %q, want %q", got, want)
	}
	if got := string(tok.Decode(nil, ids)); got != "func main() {" {
		t.Errorf("Decode skips specials: %q", got)
	}
}

// TestLoaderPeerCopiesTokenizer: a node that streams a BPE dataset from a
// peer (a joiner) gets the tokenizer file too, verified, so that its
// checkpoints carry it and it serves the file onward; a peer whose copy is
// damaged hands over nothing.
func TestLoaderPeerCopiesTokenizer(t *testing.T) {
	tok, err := LoadTokenizer(paperTokenizer)
	if err != nil {
		t.Fatal(err)
	}
	dir := prepareWith(t, tok)
	ctx := context.Background()
	open := func(src string) (*Loader, string) {
		cache := t.TempDir()
		l, err := Open(ctx, Options{Dir: cache, Peer: serveFlight(t, src)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l, cache
	}
	l, cache := open(dir)
	if got := l.TokenizerJSON(); !bytes.Equal(got, tok.File()) {
		t.Fatalf("a joiner's loader hands checkpoints %d tokenizer bytes, want the dataset's %d", len(got), len(tok.File()))
	}
	if _, err := ManifestTokenizer(cache, l.Manifest()); err != nil {
		t.Fatalf("the copied tokenizer: %v", err)
	}
	// Served onward from the copy.
	if l2, _ := open(cache); !bytes.Equal(l2.TokenizerJSON(), tok.File()) {
		t.Fatal("the tokenizer file was not served onward from a copy")
	}
	p := filepath.Join(dir, TokenizerCopy)
	b, _ := os.ReadFile(p)
	b[len(b)/3] ^= 1
	os.WriteFile(p, b, 0o644)
	l3, cache3 := open(dir)
	if got := l3.TokenizerJSON(); got != nil {
		t.Fatalf("a damaged tokenizer file was accepted from the peer (%d bytes)", len(got))
	}
	if _, err := os.Stat(filepath.Join(cache3, TokenizerCopy)); err == nil {
		t.Fatal("a damaged tokenizer file was written into the cache")
	}
}
