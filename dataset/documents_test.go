package dataset

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/compress"

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

// TestDocumentsJSONL reads the field of each JSONL line, as prepare does.
func TestDocumentsJSONL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs.jsonl")
	lines := "{\"text\": \"first doc\", \"id\": 1}\n\n{\"text\": \"second\\ndoc \\u00e9\"}\n{\"text\": \"\"}\n"
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	err := Documents(context.Background(), PrepareOptions{Inputs: []string{path}, Workers: 2}, func(text []byte) {
		mu.Lock()
		got = append(got, string(text))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"first doc", "second\ndoc é"}; !slices.Equal(got, want) {
		t.Fatalf("documents %q, want %q", got, want)
	}
	if err := Documents(context.Background(), PrepareOptions{Inputs: []string{path}, Field: "body"}, func([]byte) {}); err == nil || !strings.Contains(err.Error(), "body") {
		t.Fatalf("missing field: %v", err)
	}
}

// TestDocumentsParquet reads the text column of a Parquet file with
// several row groups and a null row, as prepare does.
func TestDocumentsParquet(t *testing.T) {
	docs, rows := pqDocs(30)
	path := writeFile(t, filepath.Join(t.TempDir(), "docs.parquet"), writeParquet(t, rows, 7, compress.Codecs.Snappy))
	var mu sync.Mutex
	var got []string
	err := Documents(context.Background(), PrepareOptions{Inputs: []string{path}, Workers: 2}, func(text []byte) {
		mu.Lock()
		got = append(got, string(text))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(docs))
	if !slices.Equal(got, want) {
		t.Fatalf("%d documents read, want %d", len(got), len(want))
	}
}
