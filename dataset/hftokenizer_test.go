package dataset

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/shard"
)

const paperTokenizer = "../tokenizer/testdata/paper.json"

// TestPrepareHFTokenizer prepares with a tokenizer.json: the ids are the
// tokenizer's, the file and its sha256 go with the dataset, and the
// dataset's tokenizer loads back from it.
func TestPrepareHFTokenizer(t *testing.T) {
	root, docs := corpus(t)
	tok, err := LoadTokenizer(paperTokenizer)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	const n = 32
	st, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{root}, Out: out, SeqLen: n, Workers: 2, Tokenizer: tok})
	if err != nil {
		t.Fatal(err)
	}
	m, err := shard.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Tokenizer != tok.Name() || m.Vocab != tok.Vocab() || m.TokenizerFile != TokenizerCopy || m.TokenizerSHA256 != tok.SHA256() {
		t.Fatalf("manifest records %q vocab %d file %q sha %q", m.Tokenizer, m.Vocab, m.TokenizerFile, m.TokenizerSHA256)
	}
	cp, err := os.ReadFile(filepath.Join(out, TokenizerCopy))
	if err != nil || !bytes.Equal(cp, tok.File()) {
		t.Fatalf("copy beside the shards: %v (equal %v)", err, bytes.Equal(cp, tok.File()))
	}
	back, err := ManifestTokenizer(out, m)
	if err != nil || back.Name() != tok.Name() {
		t.Fatalf("tokenizer from the dataset: %v", err)
	}
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	p := NewPacker(n)
	var want [][]int32
	for _, k := range keys {
		if !heldOut(k, 0) {
			p.Add(tok.Encode(nil, docs[k]), func(s []int32) error { want = append(want, slices.Clone(s)); return nil })
		}
	}
	got := readSplit(t, out, SplitTrain)
	if !slices.EqualFunc(got, want, slices.Equal) || int64(len(got)) != st.Sequences[SplitTrain] {
		t.Fatalf("%d sequences read back differ from the %d packed", len(got), len(want))
	}

	// A changed copy is caught.
	if err := os.WriteFile(filepath.Join(out, TokenizerCopy), append(cp, ' '), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ManifestTokenizer(out, m); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("changed tokenizer copy: %v", err)
	}
}

func TestLoadTokenizerLayout(t *testing.T) {
	if _, err := LoadTokenizer("../tokenizer/testdata/gpt2.json"); err == nil || !strings.Contains(err.Error(), "ids 0-3") {
		t.Fatalf("a GPT-2 layout: %v", err)
	}
	if _, err := LoadTokenizer(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Fatal("loaded a missing file")
	}
}
