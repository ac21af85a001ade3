package dataset

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/difftrain/difftrain/tokenizer"
)

// TestTrainTokenizer trains on the inputs prepare reads and checks the
// result encodes the corpus.
func TestTrainTokenizer(t *testing.T) {
	root, docs := corpus(t)
	data, err := TrainTokenizer(context.Background(), PrepareOptions{Inputs: []string{root}, Workers: 2}, tokenizer.TrainOptions{Vocab: 400})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	doc := docs["corpus/d0/f00.txt"]
	ids := tok.Encode(nil, doc)
	if got := tok.Decode(nil, ids); !bytes.Equal(got, doc) || len(ids) > len(doc)/3 {
		t.Fatalf("%d ids for %d bytes, round trip %v", len(ids), len(doc), bytes.Equal(got, doc))
	}
	var mu sync.Mutex
	seen := 0
	if err := Documents(context.Background(), PrepareOptions{Inputs: []string{root}}, func([]byte) { mu.Lock(); seen++; mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if seen != len(docs) {
		t.Fatalf("Documents gave %d documents, want %d", seen, len(docs))
	}
}
