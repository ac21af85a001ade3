package tokenizer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// FileName is the name of a tokenizer file inside a directory.
const FileName = "tokenizer.json"

// maxFile bounds the size of a tokenizer file this package parses.
const maxFile = 1 << 30

// Load reads a tokenizer.json, or the tokenizer.json inside a directory.
func Load(path string) (*Tokenizer, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, FileName)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return t, nil
}

type fileJSON struct {
	Version       string          `json:"version"`
	Truncation    json.RawMessage `json:"truncation"`
	Padding       json.RawMessage `json:"padding"`
	AddedTokens   []addedJSON     `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type addedJSON struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	Lstrip     bool   `json:"lstrip"`
	Rstrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// component is the part of every normalizer, pre-tokenizer, processor and
// decoder object that all of them share.
type component struct {
	Type string `json:"type"`
	// Sequence members, under the names each kind uses.
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`
	// ByteLevel
	AddPrefixSpace bool  `json:"add_prefix_space"`
	UseRegex       *bool `json:"use_regex"`
	// Split
	Pattern  map[string]string `json:"pattern"`
	Behavior string            `json:"behavior"`
	Invert   bool              `json:"invert"`
	// TemplateProcessing
	Single        []map[string]struct{ ID string } `json:"single"`
	SpecialTokens map[string]struct {
		ID  string  `json:"id"`
		IDs []int32 `json:"ids"`
	} `json:"special_tokens"`
}

type modelJSON struct {
	Type                    string            `json:"type"`
	Dropout                 *float64          `json:"dropout"`
	UnkToken                *string           `json:"unk_token"`
	ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
	ByteFallback            bool              `json:"byte_fallback"`
	IgnoreMerges            bool              `json:"ignore_merges"`
	Vocab                   map[string]int32  `json:"vocab"`
	Merges                  []json.RawMessage `json:"merges"`
}

func isNull(raw json.RawMessage) bool {
	return len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// Parse builds a tokenizer from the bytes of a tokenizer.json. It refuses,
// with an error naming it, any model, normalizer, pre-tokenizer, pattern,
// post-processor or decoder it would not run exactly as Hugging Face does.
func Parse(data []byte) (*Tokenizer, error) {
	if len(data) > maxFile {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed", len(data), maxFile)
	}
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: %w", err)
	}
	sum := sha256.Sum256(data)
	t := &Tokenizer{raw: data, sha: hex.EncodeToString(sum[:])}
	if !isNull(f.Truncation) || !isNull(f.Padding) {
		slog.Warn("tokenizer: ignoring truncation and padding settings (batch shaping, not tokenization)")
	}
	if err := t.parseModel(f.Model, len(f.AddedTokens)); err != nil {
		return nil, err
	}
	if err := t.parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if err := t.parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if !t.byteLevel {
		return nil, fmt.Errorf("pre_tokenizer has no ByteLevel step: not a byte-level BPE")
	}
	if err := t.parseDecoder(f.Decoder); err != nil {
		return nil, err
	}
	if err := t.parseAdded(f.AddedTokens); err != nil {
		return nil, err
	}
	if err := t.parsePost(f.PostProcessor); err != nil {
		return nil, err
	}
	t.finish()
	return t, nil
}

func (t *Tokenizer) parseModel(raw json.RawMessage, nAdded int) error {
	if isNull(raw) {
		return fmt.Errorf("no model")
	}
	var m modelJSON
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	switch {
	case m.Type != "BPE":
		return fmt.Errorf("model type %q is not supported (only BPE)", m.Type)
	case m.Dropout != nil && *m.Dropout != 0:
		return fmt.Errorf("BPE dropout %v is not supported", *m.Dropout)
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "":
		return fmt.Errorf("BPE continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	case m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return fmt.Errorf("BPE end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	case m.ByteFallback:
		return fmt.Errorf("BPE byte_fallback is not supported")
	case len(m.Vocab) == 0:
		return fmt.Errorf("BPE model has an empty vocab")
	}
	t.maxID = int32(min(2*(len(m.Vocab)+nAdded)+1024, 1<<30))
	b := &bpe{merges: make(map[pair]merge, len(m.Merges)), vocab: make(map[string]int32, len(m.Vocab)),
		ignoreMerges: m.IgnoreMerges, cache: map[string][]int32{}}
	tokens := map[string]int32{}
	for tok, id := range m.Vocab {
		if id < 0 || id >= t.maxID {
			return fmt.Errorf("vocab: token %q has id %d out of range", tok, id)
		}
		tokens[tok] = id
		t.setToken(id, tok)
		if raw, ok := fromByteLevel(tok); ok {
			b.vocab[string(raw)] = id
		}
	}
	for i := range b.byteID {
		id, ok := tokens[string(byteChar[i])]
		if !ok {
			return fmt.Errorf("vocab lacks the byte-level token for byte 0x%02x (%q): some text could not be encoded", i, string(byteChar[i]))
		}
		b.byteID[i] = id
	}
	for i, raw := range m.Merges {
		l, r, err := parseMerge(raw)
		if err != nil {
			return fmt.Errorf("merge %d: %w", i, err)
		}
		a, ok1 := tokens[l]
		c, ok2 := tokens[r]
		id, ok3 := tokens[l+r]
		if !ok1 || !ok2 || !ok3 {
			return fmt.Errorf("merge %d (%q %q): a token is not in the vocab", i, l, r)
		}
		if _, dup := b.merges[pair{a, c}]; !dup {
			b.merges[pair{a, c}] = merge{rank: int32(i), id: id}
		}
	}
	t.model = b
	return nil
}

// parseMerge reads a merge in either form: "a b" or ["a", "b"].
func parseMerge(raw json.RawMessage) (string, string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		l, r, ok := strings.Cut(s, " ")
		if !ok || strings.Contains(r, " ") {
			return "", "", fmt.Errorf("%q is not two tokens separated by one space", s)
		}
		return l, r, nil
	}
	var p []string
	if err := json.Unmarshal(raw, &p); err != nil || len(p) != 2 {
		return "", "", fmt.Errorf("%s is neither \"a b\" nor [a, b]", truncate(raw))
	}
	return p[0], p[1], nil
}

func truncate(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "..."
	}
	return string(b)
}

func (t *Tokenizer) parseNormalizer(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("normalizer: %w", err)
	}
	switch c.Type {
	case "NFC":
		t.nfc = true
		return nil
	case "Sequence":
		for _, n := range c.Normalizers {
			if err := t.parseNormalizer(n); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("normalizer %q is not supported (only NFC, and Sequence of it)", c.Type)
}

func (t *Tokenizer) parsePreTokenizer(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("pre_tokenizer: %w", err)
	}
	if t.byteLevel {
		return fmt.Errorf("pre_tokenizer %q after ByteLevel is not supported", c.Type)
	}
	switch c.Type {
	case "Sequence":
		for _, p := range c.Pretokenizers {
			if err := t.parsePreTokenizer(p); err != nil {
				return err
			}
		}
		return nil
	case "ByteLevel":
		t.byteLevel = true
		t.prefixSpace = c.AddPrefixSpace
		t.blRegex = c.UseRegex == nil || *c.UseRegex
		return nil
	case "Split":
		pat, ok := c.Pattern["Regex"]
		if !ok || len(c.Pattern) != 1 {
			return fmt.Errorf("Split pattern %v is not supported (only a Regex)", c.Pattern)
		}
		sc, ok := scannerFor(pat)
		if !ok {
			return fmt.Errorf("Split regex %q is not supported (known: the GPT-2, cl100k/Llama-3, Qwen2 and gidd-spec §8.1 patterns)", pat)
		}
		if c.Behavior != "Isolated" || c.Invert {
			return fmt.Errorf("Split behavior %q invert=%v is not supported (only Isolated, not inverted)", c.Behavior, c.Invert)
		}
		t.splits = append(t.splits, sc)
		return nil
	}
	return fmt.Errorf("pre_tokenizer %q is not supported (only ByteLevel, Split and Sequence)", c.Type)
}

func (t *Tokenizer) parseDecoder(raw json.RawMessage) error {
	if isNull(raw) {
		return fmt.Errorf("no decoder (want ByteLevel)")
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("decoder: %w", err)
	}
	if c.Type != "ByteLevel" {
		return fmt.Errorf("decoder %q is not supported (only ByteLevel)", c.Type)
	}
	return nil
}

func (t *Tokenizer) parseAdded(list []addedJSON) error {
	for _, a := range list {
		switch {
		case a.Content == "":
			return fmt.Errorf("added token %d is empty", a.ID)
		case a.SingleWord:
			return fmt.Errorf("added token %q: single_word is not supported", a.Content)
		case a.ID < 0 || a.ID >= t.maxID:
			return fmt.Errorf("added token %q: id %d out of range", a.Content, a.ID)
		}
		if old, ok := t.tokenOf(a.ID); ok && old != a.Content {
			return fmt.Errorf("added token %q: id %d is already %q in the vocab", a.Content, a.ID, old)
		}
		t.setToken(a.ID, a.Content)
		t.added = append(t.added, added{id: a.ID, content: []byte(a.Content), lstrip: a.Lstrip, rstrip: a.Rstrip,
			normalized: a.Normalized, special: a.Special})
	}
	return nil
}

func (t *Tokenizer) parsePost(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("post_processor: %w", err)
	}
	switch c.Type {
	case "ByteLevel":
		return nil // offsets only
	case "Sequence":
		for _, p := range c.Processors {
			if err := t.parsePost(p); err != nil {
				return err
			}
		}
		return nil
	case "TemplateProcessing":
		if t.template != nil {
			return fmt.Errorf("post_processor: two TemplateProcessing steps")
		}
		t.template = []int32{}
		t.templateSeq = -1
		for _, piece := range c.Single {
			if seq, ok := piece["Sequence"]; ok {
				if seq.ID != "A" || t.templateSeq >= 0 {
					return fmt.Errorf("TemplateProcessing: sequence %q not supported in single", seq.ID)
				}
				t.templateSeq = len(t.template)
				continue
			}
			sp, ok := piece["SpecialToken"]
			if !ok {
				return fmt.Errorf("TemplateProcessing: unknown piece %v", piece)
			}
			st, ok := c.SpecialTokens[sp.ID]
			if !ok {
				return fmt.Errorf("TemplateProcessing: special token %q not in special_tokens", sp.ID)
			}
			t.template = append(t.template, st.IDs...)
		}
		if t.templateSeq < 0 {
			return fmt.Errorf("TemplateProcessing: single has no sequence $A")
		}
		return nil
	}
	return fmt.Errorf("post_processor %q is not supported (only TemplateProcessing, ByteLevel and Sequence)", c.Type)
}
