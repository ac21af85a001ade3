package tokenizer

import (
	"bytes"
	"path/filepath"
	"testing"

	"golang.org/x/text/unicode/norm"
)

func mustLoad(t testing.TB, name string) *Tokenizer {
	t.Helper()
	tok, err := Load(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// FuzzRoundTrip checks decode(encode(x)) == x for any bytes on a tokenizer
// without normalizer or prefix space, and == NFC(x) with the NFC one.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", " ", "hello world", "a\xffb\x80", "\xed\xa0\x80", "<|endoftext|>x", "  \t\n\n x", "e\u0301 漢字 👍🏽",
		"<|begin_of_text|>  <|mask|>\u0301", "1234567", "'s 'S'll"} {
		f.Add([]byte(s))
	}
	gpt2, llama, paper := mustLoad(f, "gpt2"), mustLoad(f, "llama3"), mustLoad(f, "paper")
	f.Fuzz(func(t *testing.T, x []byte) {
		for _, tok := range []*Tokenizer{gpt2, llama} {
			ids := tok.Encode(nil, x)
			if got := tok.Decode(nil, ids); !bytes.Equal(got, x) && !hasSpecial(tok, ids) {
				t.Fatalf("%q: decoded %q", x, got)
			}
		}
		ids := paper.Encode(nil, x)
		if got, want := paper.Decode(nil, ids), norm.NFC.Bytes(x); !bytes.Equal(got, want) && !hasSpecial(paper, ids) {
			t.Fatalf("%q: decoded %q, want NFC %q", x, got, want)
		}
		for _, id := range ids {
			if id < 0 || int(id) >= paper.Vocab() {
				t.Fatalf("%q: id %d outside the vocabulary of %d", x, id, paper.Vocab())
			}
		}
	})
}

// hasSpecial reports whether ids hold a special token, which Decode skips.
func hasSpecial(t *Tokenizer, ids []int32) bool {
	for _, id := range ids {
		if t.Special(id) {
			return true
		}
	}
	return false
}

// FuzzParse checks that no tokenizer.json makes Parse panic, and that what
// it accepts encodes and decodes.
func FuzzParse(f *testing.F) {
	// Small files: the fixtures are too big for the fuzzer to mutate well.
	for _, m := range [][][2]int32{nil, {{16 + 'a', 16 + 'b'}, {16 + ' ', 272}}} {
		data, err := layoutJSON(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}`))
	f.Add([]byte(`{"added_tokens":[{"id":99999999,"content":"x"}],"model":{"type":"BPE","vocab":{"a":0}}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := Parse(data)
		if err != nil {
			return
		}
		ids := tok.EncodeSpecial(nil, []byte("hello, world \xff <|x|>"))
		_ = tok.Decode(nil, ids)
	})
}

// FuzzParseIDs checks that ParseIDs never panics and returns only ids
// inside the vocabulary, which FormatIDs writes back as it read them.
func FuzzParseIDs(f *testing.F) {
	for _, s := range []string{"", "0 1 2", " 5\n6\t7 ", "-1", "99999999999", "1x", "259 260"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ids, err := ParseIDs(in, 260)
		if err != nil {
			return
		}
		for _, id := range ids {
			if id < 0 || id >= 260 {
				t.Fatalf("%q: id %d outside the vocabulary", in, id)
			}
		}
		again, err := ParseIDs(FormatIDs(nil, ids), 260)
		if err != nil || len(again) != len(ids) {
			t.Fatalf("%q: formatted ids do not parse back: %v", in, err)
		}
	})
}
