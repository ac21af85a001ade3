package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// edit loads testdata/name.json as a generic object, applies change, and
// returns the JSON.
func edit(t *testing.T, name string, change func(m map[string]any)) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseRefuses(t *testing.T) {
	model := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	cases := []struct {
		name, want string
		change     func(m map[string]any)
	}{
		{"model type", `model type "WordPiece"`, func(m map[string]any) { model(m)["type"] = "WordPiece" }},
		{"dropout", "dropout", func(m map[string]any) { model(m)["dropout"] = 0.1 }},
		{"byte fallback", "byte_fallback", func(m map[string]any) { model(m)["byte_fallback"] = true }},
		{"suffix", "end_of_word_suffix", func(m map[string]any) { model(m)["end_of_word_suffix"] = "</w>" }},
		{"normalizer", `normalizer "NFKC"`, func(m map[string]any) { m["normalizer"] = map[string]any{"type": "NFKC"} }},
		{"normalizer in sequence", `normalizer "Lowercase"`, func(m map[string]any) {
			m["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{map[string]any{"type": "NFC"}, map[string]any{"type": "Lowercase"}}}
		}},
		{"pre-tokenizer", `pre_tokenizer "Whitespace"`, func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "Whitespace"} }},
		{"no byte level", "no ByteLevel", func(m map[string]any) { m["pre_tokenizer"] = nil }},
		{"regex", `Split regex "\\w+"`, func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
				map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `\w+`}, "behavior": "Isolated"},
				map[string]any{"type": "ByteLevel"}}}
		}},
		{"split string", "only a Regex", func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"String": " "}, "behavior": "Isolated"}
		}},
		{"behavior", `behavior "Removed"`, func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
				map[string]any{"type": "Split", "pattern": map[string]any{"Regex": PatternGPT2}, "behavior": "Removed"},
				map[string]any{"type": "ByteLevel"}}}
		}},
		{"after byte level", "after ByteLevel", func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
				map[string]any{"type": "ByteLevel"}, map[string]any{"type": "Digits"}}}
		}},
		{"decoder", `decoder "WordPiece"`, func(m map[string]any) { m["decoder"] = map[string]any{"type": "WordPiece"} }},
		{"post", `post_processor "RobertaProcessing"`, func(m map[string]any) { m["post_processor"] = map[string]any{"type": "RobertaProcessing"} }},
		{"single word", "single_word", func(m map[string]any) {
			m["added_tokens"] = []any{map[string]any{"id": 5000, "content": "<x>", "single_word": true}}
		}},
		{"missing byte", "byte 0x41", func(m map[string]any) { delete(model(m)["vocab"].(map[string]any), "A") }},
		{"bad merge", "not in the vocab", func(m map[string]any) { model(m)["merges"] = []any{"Q q"} }},
		{"merge form", "neither", func(m map[string]any) { model(m)["merges"] = []any{42} }},
		{"huge id", "out of range", func(m map[string]any) {
			m["added_tokens"] = []any{map[string]any{"id": 1 << 29, "content": "<x>"}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(edit(t, "gpt2", c.change))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %q", err, c.want)
			}
		})
	}
	if _, err := Parse(edit(t, "gpt2", func(map[string]any) {})); err != nil {
		t.Fatalf("unchanged file: %v", err)
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join("testdata", "paper.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Vocab() != 1472 || !strings.HasPrefix(tok.Name(), "hf-bpe:") || len(tok.Name()) != 7+16 {
		t.Fatalf("vocab %d name %q", tok.Vocab(), tok.Name())
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Fatal("loaded a directory with no tokenizer.json")
	}
}
