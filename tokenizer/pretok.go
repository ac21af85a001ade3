package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// The regular expressions of Split pre-tokenizers this package knows, each
// run by a hand-written scanner (Go's regexp has no lookahead). Any other
// pattern is refused.
const (
	// PatternGPT2 is GPT-2's split, also what ByteLevel's use_regex runs.
	PatternGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// PatternCL100K is tiktoken's cl100k_base split, also Llama 3's.
	PatternCL100K = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternQwen2 is Qwen2's split: cl100k's with single digits.
	PatternQwen2 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternPaper is the split of gidd-spec.md §8.1 as this package reads
	// it: letters with an optional leading non-letter, groups of one to
	// three digits, punctuation runs, newlines, spaces. It is the cl100k
	// split without the English contractions.
	PatternPaper = `[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// scanner splits text the way one of the known patterns does.
type scanner struct {
	contractions int  // 0 none, 1 case-sensitive, 2 case-insensitive
	llama        bool // cl100k-style letters, digits, punctuation and newlines
	digits       int  // llama: most digits in a piece
}

func scannerFor(pattern string) (scanner, bool) {
	switch pattern {
	case PatternGPT2:
		return scanner{contractions: 1}, true
	case PatternCL100K:
		return scanner{contractions: 2, llama: true, digits: 3}, true
	case PatternQwen2:
		return scanner{contractions: 2, llama: true, digits: 1}, true
	case PatternPaper:
		return scanner{llama: true, digits: 3}, true
	}
	return scanner{}, false
}

// Character classes. A byte that is not valid UTF-8 counts as one
// character of class other, as U+FFFD would.
const (
	clOther = iota
	clLetter
	clNumber
	clSpace
)

func class(s []byte, i int) (cl int, size int, r rune) {
	r, size = utf8.DecodeRune(s[i:])
	switch {
	case r == utf8.RuneError && size <= 1:
		return clOther, 1, r
	case r < utf8.RuneSelf:
		c := asciiClass[r]
		return int(c), 1, r
	case unicode.IsLetter(r):
		return clLetter, size, r
	case unicode.IsNumber(r):
		return clNumber, size, r
	case unicode.IsSpace(r):
		return clSpace, size, r
	}
	return clOther, size, r
}

var asciiClass [128]uint8

func init() {
	for r := rune(0); r < 128; r++ {
		switch {
		case unicode.IsLetter(r):
			asciiClass[r] = clLetter
		case unicode.IsNumber(r):
			asciiClass[r] = clNumber
		case unicode.IsSpace(r):
			asciiClass[r] = clSpace
		}
	}
}

// split calls emit with the end of each piece of s, in order.
func (sc scanner) split(s []byte, emit func(end int)) {
	for i := 0; i < len(s); {
		n := sc.match(s, i)
		i += n
		emit(i)
	}
}

// run returns the length of the run of class cl starting at i, and the
// number of characters in it, stopping after max characters (0: no limit).
func run(s []byte, i, cl, max int) (n, chars int) {
	j := i
	for j < len(s) && (max == 0 || chars < max) {
		c, size, _ := class(s, j)
		if c != cl {
			break
		}
		j += size
		chars++
	}
	return j - i, chars
}

// match returns the length of the pattern's match at i (always > 0: the
// known patterns match every character).
func (sc scanner) match(s []byte, i int) int {
	if sc.contractions > 0 && s[i] == '\'' {
		if n := contraction(s[i+1:], sc.contractions == 2); n > 0 {
			return 1 + n
		}
	}
	c0, n0, r0 := class(s, i)
	c1 := -1
	if i+n0 < len(s) {
		c1, _, _ = class(s, i+n0)
	}
	if !sc.llama {
		// ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+'
		if r0 == ' ' && c1 >= 0 && c1 != clSpace {
			n, _ := run(s, i+1, c1, 0)
			return 1 + n
		}
		if c0 != clSpace {
			n, _ := run(s, i, c0, 0)
			return n
		}
		return spaces(s, i, false)
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if c0 == clLetter {
		n, _ := run(s, i, clLetter, 0)
		return n
	}
	if c1 == clLetter && c0 != clNumber && r0 != '\r' && r0 != '\n' {
		n, _ := run(s, i+n0, clLetter, 0)
		return n0 + n
	}
	// \p{N}{1,3}, or \p{N}
	if c0 == clNumber {
		n, _ := run(s, i, clNumber, sc.digits)
		return n
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	start := -1
	if c0 == clOther {
		start = i
	} else if r0 == ' ' && c1 == clOther {
		start = i + 1
	}
	if start >= 0 {
		n, _ := run(s, start, clOther, 0)
		j := start + n
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j - i
	}
	return spaces(s, i, true)
}

// spaces matches at a whitespace character: \s*[\r\n]+ (if newlines),
// then \s+(?!\S), then \s+.
func spaces(s []byte, i int, newlines bool) int {
	n, chars := run(s, i, clSpace, 0)
	if newlines {
		for j := i + n - 1; j >= i; j-- {
			if s[j] == '\r' || s[j] == '\n' {
				return j + 1 - i
			}
		}
	}
	if i+n == len(s) || chars == 1 {
		return n
	}
	// Give back the last character for the next piece.
	_, last := utf8.DecodeLastRune(s[i : i+n])
	return n - last
}

// contraction returns the length of s|t|re|ve|m|ll|d at the start of s,
// or 0.
func contraction(s []byte, fold bool) int {
	low := func(k int) rune {
		if k >= len(s) {
			return 0
		}
		r, _ := utf8.DecodeRune(s[k:])
		if fold {
			if r == 'ſ' { // U+017F folds to s
				return 's'
			}
			if r < utf8.RuneSelf {
				return unicode.ToLower(r)
			}
		}
		return r
	}
	c := low(0)
	switch c {
	case 's', 't', 'm', 'd':
		_, n := utf8.DecodeRune(s)
		return n
	case 'r', 'v':
		if low(1) == 'e' {
			return 2
		}
	case 'l':
		if low(1) == 'l' {
			return 2
		}
	}
	return 0
}
