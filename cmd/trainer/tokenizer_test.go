package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/shard"
)

// TestTokenizerCommands trains a tokenizer, round-trips bytes through
// encode and decode, and prepares a dataset with it.
func TestTokenizerCommands(t *testing.T) {
	bin := trainerBin(t)
	dir := t.TempDir()
	tok := filepath.Join(dir, "tokenizer.json")
	corpus, _ := filepath.Abs("../../tokenizer/testdata/corpus.txt")
	run := func(stdin []byte, args ...string) ([]byte, error) {
		cmd := exec.Command(bin, append([]string{"--log-level", "warn"}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			return out, &buildError{err, errb.Bytes()}
		}
		return out, nil
	}
	if _, err := run(nil, "tokenizer", "train", "--vocab", "500", "--input", corpus, "--out", tok); err != nil {
		t.Fatal(err)
	}
	text := []byte("func main() {\n\tfmt.Println(\"héllo\")  \xff}\n")
	ids, err := run(text, "tokenizer", "encode", "--tokenizer", dir)
	if err != nil {
		t.Fatal(err)
	}
	back, err := run(ids, "tokenizer", "decode", "--tokenizer", tok)
	if err != nil || !bytes.Equal(back, text) {
		t.Fatalf("decode(encode(x)) = %q, %v; want %q", back, err, text)
	}
	special, err := run(text, "tokenizer", "encode", "--tokenizer", tok, "--special")
	if err != nil || !strings.HasPrefix(string(special), "0 ") || !strings.HasSuffix(string(special), " 1\n") {
		t.Fatalf("encode --special gave %q, %v; want 0 ... 1", special, err)
	}
	if _, err := run([]byte("4 500"), "tokenizer", "decode", "--tokenizer", tok); err == nil || !strings.Contains(err.Error(), "outside the vocabulary") {
		t.Fatalf("decode of an id past the vocabulary: %v", err)
	}

	data := filepath.Join(dir, "data")
	if _, err := run(nil, "prepare", "--input", corpus, "--out", data, "--seq-len", "64", "--tokenizer", tok); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(data, shard.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	var m shard.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.Vocab != 500 || m.TokenizerFile != "tokenizer.json" || !strings.HasPrefix(m.Tokenizer, "hf-bpe:") {
		t.Fatalf("manifest: tokenizer %q file %q vocab %d", m.Tokenizer, m.TokenizerFile, m.Vocab)
	}
	_, err = run(nil, "prepare", "--input", corpus, "--out", filepath.Join(dir, "bad"), "--tokenizer", "../../tokenizer/testdata/gpt2.json")
	if err == nil || !strings.Contains(err.Error(), "ids 0-3") {
		t.Fatalf("prepare with a tokenizer without BOS/EOS/PAD/MASK at ids 0-3: %v", err)
	}
}
