package tokenizer

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func trainCorpus(t *testing.T, vocab int) []byte {
	t.Helper()
	corpus, err := os.ReadFile(filepath.Join("testdata", "corpus.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(TrainOptions{Vocab: vocab})
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.SplitAfter(corpus, []byte("\n\n")) {
		tr.Add(doc)
	}
	out, err := tr.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTrainLayout checks the §8.1 layout and that training is
// deterministic and compresses.
func TestTrainLayout(t *testing.T) {
	out := trainCorpus(t, 1200)
	tok, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Vocab() != 1200 {
		t.Fatalf("vocab %d, want 1200", tok.Vocab())
	}
	for id, want := range append(append([]string{}, SpecialTokens...), WhitespaceTokens...) {
		if got := tok.Token(int32(id)); got != want {
			t.Fatalf("id %d is %q, want %q", id, got, want)
		}
	}
	if !bytes.Equal(trainCorpus(t, 1200), out) {
		t.Fatal("two trainings of the same corpus differ")
	}
	text := []byte("func (b *Reader) ReadRune() (r rune, size int, err error) {\n\t\treturn 0, 0, nil\n}\n")
	ids := tok.EncodeSpecial(nil, text)
	if ids[0] != 0 || ids[len(ids)-1] != 1 {
		t.Fatalf("EncodeSpecial gave %v, want BOS ... EOS", ids)
	}
	if got := tok.Decode(nil, ids); !bytes.Equal(got, text) {
		t.Fatalf("decoded %q", got)
	}
	if len(ids) > len(text)/2 {
		t.Fatalf("%d ids for %d bytes: the merges do not compress", len(ids), len(text))
	}
	if ids := tok.Encode(nil, []byte("x      y")); len(ids) != 3 || ids[1] != 6 {
		t.Fatalf("6 spaces between letters gave %v, want x, the 6-space token (id 6), y", ids)
	}
	if ids := tok.Encode(nil, []byte("x     y")); len(ids) < 3 || ids[1] != 5 {
		t.Fatalf("5 spaces between letters gave %v, want x, the 4-space token (id 5), then the rest", ids)
	}
}

func TestTrainBoundedWords(t *testing.T) {
	tr, err := NewTrainer(TrainOptions{Vocab: 400, MaxWords: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		tr.Add([]byte("common words " + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26))))
	}
	kept, dropped := tr.Words()
	if kept > 100 || dropped == 0 {
		t.Fatalf("kept %d words, dropped %d: want at most 100 kept", kept, dropped)
	}
	// One long document is bounded too.
	var long []byte
	for i := range 3000 {
		long = fmt.Appendf(long, "w%c%c%c ", 'a'+i%26, 'a'+i/26%26, 'a'+i/676%26)
	}
	tr.Add(long)
	if kept, _ := tr.Words(); kept > 100 {
		t.Fatalf("kept %d words after a long document, want at most 100", kept)
	}
	out, err := tr.Finish()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if ids := tok.Encode(nil, []byte("common")); len(ids) != 1 {
		t.Fatalf("'common' is %v, want one token: frequent words survive pruning", ids)
	}
}

func TestTrainRefuses(t *testing.T) {
	if _, err := NewTrainer(TrainOptions{Vocab: 100}); err == nil {
		t.Fatal("accepted a vocabulary smaller than the fixed ids")
	}
}

// TestTrainMatchesCommitted retrains testdata/ours.json, the file that
// scripts/tokenizer/fixtures.js checked in the Hugging Face library
// (TestMatchesHuggingFace/ours), and wants the same bytes.
func TestTrainMatchesCommitted(t *testing.T) {
	corpus, err := os.ReadFile(filepath.Join("testdata", "corpus.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "ours.json"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(TrainOptions{Vocab: 1500})
	if err != nil {
		t.Fatal(err)
	}
	tr.Add(corpus)
	got, err := tr.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("training on testdata/corpus.txt no longer gives testdata/ours.json; regenerate both files and the fixtures")
	}
}
