// Package tokenizer loads Hugging Face tokenizer.json files of the
// byte-level BPE family and encodes and decodes exactly as the Hugging Face
// tokenizers library does; it also trains such tokenizers (Train) and
// writes them in that format. What it cannot run exactly it refuses.
//
// Encode takes any bytes. Hugging Face takes only valid text; here a byte
// that is not part of valid UTF-8 is split by the pre-tokenizers as one
// character that is neither a letter, a number nor a space (as U+FFFD
// would be) and reaches BPE as itself, so every input round-trips.
package tokenizer

import (
	"bytes"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Tokenizer is a loaded tokenizer.json. It is safe for concurrent use.
type Tokenizer struct {
	raw []byte // the file
	sha string // hex sha256 of raw

	model       *bpe
	nfc         bool
	splits      []scanner // Split steps, in order
	byteLevel   bool
	prefixSpace bool // ByteLevel add_prefix_space
	blRegex     bool // ByteLevel use_regex

	added       []added
	rawMatch    matcher // added tokens matched before normalization
	normMatch   matcher // added tokens matched on normalized text
	template    []int32 // TemplateProcessing single, specials only
	templateSeq int     // where the text goes in template

	maxID   int32    // ids must be below this (bounds what a file can make us allocate)
	tokens  []string // by id
	decoded [][]byte // by id: what the ByteLevel decoder makes of it
	special []bool   // by id: a special added token
}

type added struct {
	id                  int32
	content             []byte
	lstrip, rstrip      bool
	normalized, special bool
}

func (t *Tokenizer) setToken(id int32, tok string) {
	for int(id) >= len(t.tokens) {
		t.tokens = append(t.tokens, "")
	}
	t.tokens[id] = tok
}

func (t *Tokenizer) tokenOf(id int32) (string, bool) {
	if int(id) < len(t.tokens) && t.tokens[id] != "" {
		return t.tokens[id], true
	}
	return "", false
}

func (t *Tokenizer) finish() {
	t.decoded = make([][]byte, len(t.tokens))
	t.special = make([]bool, len(t.tokens))
	for id, tok := range t.tokens {
		t.decoded[id] = decodeBytes(tok)
	}
	var rawT, normT []added
	for _, a := range t.added {
		t.decoded[a.id] = decodeBytes(string(a.content))
		t.special[a.id] = a.special
		if a.normalized {
			if t.nfc {
				a.content = norm.NFC.Bytes(a.content)
			}
			normT = append(normT, a)
		} else {
			rawT = append(rawT, a)
		}
	}
	t.rawMatch = newMatcher(rawT)
	t.normMatch = newMatcher(normT)
}

// Name identifies the file: "hf-bpe:" and the first 16 hex digits of its
// sha256.
func (t *Tokenizer) Name() string { return NamePrefix + t.sha[:16] }

// NamePrefix begins the Name of every tokenizer of this package.
const NamePrefix = "hf-bpe:"

// SHA256 returns the hex sha256 of the tokenizer file.
func (t *Tokenizer) SHA256() string { return t.sha }

// File returns the bytes of the tokenizer file.
func (t *Tokenizer) File() []byte { return t.raw }

// Vocab returns the number of ids, added tokens included (Hugging Face's
// len(tokenizer)).
func (t *Tokenizer) Vocab() int { return len(t.tokens) }

// Token returns the vocabulary string of id, or "" if it has none.
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// Special reports whether id is a special added token.
func (t *Tokenizer) Special(id int32) bool {
	return id >= 0 && int(id) < len(t.special) && t.special[id]
}

// Encode appends the ids of text to dst, adding no special tokens
// (Hugging Face's encode with add_special_tokens=False).
func (t *Tokenizer) Encode(dst []int32, text []byte) []int32 {
	e := encoder{t: t, dst: dst}
	t.rawMatch.split(text, e.token, e.normalize)
	return e.dst
}

// EncodeSpecial is Encode with the post-processor's template around the
// text (add_special_tokens=True): BOS ... EOS for the §8.1 layout.
func (t *Tokenizer) EncodeSpecial(dst []int32, text []byte) []int32 {
	if t.template == nil {
		return t.Encode(dst, text)
	}
	dst = append(dst, t.template[:t.templateSeq]...)
	dst = t.Encode(dst, text)
	return append(dst, t.template[t.templateSeq:]...)
}

// Decode appends the bytes of ids to dst, skipping special tokens and ids
// outside the vocabulary (Hugging Face's decode with
// skip_special_tokens=True, without its lossy UTF-8 conversion).
func (t *Tokenizer) Decode(dst []byte, ids []int32) []byte {
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.decoded) || t.special[id] {
			continue
		}
		dst = append(dst, t.decoded[id]...)
	}
	return dst
}

// encoder holds the state of one Encode call.
type encoder struct {
	t    *Tokenizer
	dst  []int32
	buf  []byte
	word func([]byte) // if set, gets each word instead of BPE (training)
}

func (e *encoder) token(id int32) { e.dst = append(e.dst, id) }

func (e *encoder) normalize(s []byte) {
	if e.t.nfc && !isASCII(s) {
		s = norm.NFC.Bytes(s)
	}
	e.t.normMatch.split(s, e.token, func(s []byte) { e.pretok(s, 0) })
}

func isASCII(s []byte) bool {
	for _, b := range s {
		if b >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// pretok runs the Split steps from level on, then ByteLevel, then BPE.
func (e *encoder) pretok(s []byte, level int) {
	if len(s) == 0 {
		return
	}
	if level < len(e.t.splits) {
		start := 0
		e.t.splits[level].split(s, func(end int) {
			e.pretok(s[start:end], level+1)
			start = end
		})
		return
	}
	if e.t.prefixSpace && s[0] != ' ' {
		e.buf = append(append(e.buf[:0], ' '), s...)
		s = e.buf
	}
	if !e.t.blRegex {
		e.bpe(s)
		return
	}
	start := 0
	scanner{contractions: 1}.split(s, func(end int) {
		e.bpe(s[start:end])
		start = end
	})
}

func (e *encoder) bpe(w []byte) {
	if e.word != nil {
		e.word(w)
		return
	}
	e.dst = e.t.model.encode(e.dst, w)
}

// matcher finds added tokens, leftmost and then longest first, as the
// Aho-Corasick automaton of Hugging Face's added vocabulary does.
type matcher struct {
	byFirst [256][]added // longest first
	any     bool
}

func newMatcher(toks []added) matcher {
	var m matcher
	for _, a := range toks {
		l := m.byFirst[a.content[0]]
		i := 0
		for i < len(l) && len(l[i].content) >= len(a.content) {
			i++
		}
		l = append(l, added{})
		copy(l[i+1:], l[i:])
		l[i] = a
		m.byFirst[a.content[0]] = l
		m.any = true
	}
	return m
}

// split calls tok for each added token in s and text for the text between
// them (never empty).
func (m *matcher) split(s []byte, tok func(int32), text func([]byte)) {
	if !m.any {
		if len(s) > 0 {
			text(s)
		}
		return
	}
	prev := 0 // end of the last token
	for i := 0; i < len(s); {
		a, ok := m.at(s, i)
		if !ok {
			i++
			continue
		}
		start, stop := i, i+len(a.content)
		if a.lstrip {
			start = max(prev, spaceStart(s[:start]))
		}
		if a.rstrip {
			stop += spaceEnd(s[stop:])
		}
		if start > prev {
			text(s[prev:start])
		}
		tok(a.id)
		prev, i = stop, stop
	}
	if prev < len(s) {
		text(s[prev:])
	}
}

func (m *matcher) at(s []byte, i int) (added, bool) {
	for _, a := range m.byFirst[s[i]] {
		if bytes.HasPrefix(s[i:], a.content) {
			return a, true
		}
	}
	return added{}, false
}

// spaceStart returns where the run of whitespace at the end of s starts.
func spaceStart(s []byte) int {
	for len(s) > 0 {
		r, n := utf8.DecodeLastRune(s)
		if !unicode.IsSpace(r) || (r == utf8.RuneError && n <= 1) {
			break
		}
		s = s[:len(s)-n]
	}
	return len(s)
}

// spaceEnd returns the length of the run of whitespace at the start of s.
func spaceEnd(s []byte) int {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRune(s[i:])
		if !unicode.IsSpace(r) || (r == utf8.RuneError && n <= 1) {
			break
		}
		i += n
	}
	return i
}

// preTokens returns the byte-level strings of the pieces the normalizer
// and pre-tokenizers make of text, added tokens not taken out (for tests
// and inspection).
func (t *Tokenizer) preTokens(text []byte) []string {
	if t.nfc {
		text = norm.NFC.Bytes(text)
	}
	var out []string
	var visit func(s []byte, level int)
	visit = func(s []byte, level int) {
		if len(s) == 0 {
			return
		}
		if level < len(t.splits) {
			start := 0
			t.splits[level].split(s, func(end int) { visit(s[start:end], level+1); start = end })
			return
		}
		if t.prefixSpace && s[0] != ' ' {
			s = append([]byte{' '}, s...)
		}
		if !t.blRegex {
			out = append(out, toByteLevel(s))
			return
		}
		start := 0
		scanner{contractions: 1}.split(s, func(end int) { out = append(out, toByteLevel(s[start:end])); start = end })
	}
	visit(text, 0)
	return out
}
