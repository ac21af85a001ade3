package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// The layout of gidd-spec.md §8.1: ids 0-3 are these special tokens, then
// the whitespace tokens of 2, 4, ..., 24 spaces, then the 256 byte-level
// symbols, then the learned merges.
var (
	SpecialTokens    = []string{"<|begin_of_text|>", "<|end_of_text|>", "<|padding|>", "<|mask|>"}
	WhitespaceTokens = func() []string {
		var w []string
		for n := 2; n <= 24; n += 2 {
			w = append(w, strings.Repeat(" ", n))
		}
		return w
	}()
)

// TrainOptions configure a Trainer.
type TrainOptions struct {
	Vocab int // total ids, specials and byte symbols included
	// MaxWords bounds the distinct words counted (default 1<<21). When the
	// table is full, the words seen least often are dropped, so memory
	// stays bounded on any corpus; rare words then count less than they
	// should, as with any bounded count.
	MaxWords int
	// MinFrequency stops training when no pair occurs this often (default 2).
	MinFrequency int64
}

// Trainer learns a byte-level BPE in the §8.1 layout: NFC, the §8.1 split,
// ByteLevel without prefix space. Add is safe for concurrent use.
type Trainer struct {
	o    TrainOptions
	pipe *Tokenizer // the layout with no merges: normalizes and splits

	mu     sync.Mutex
	counts map[string]int64
	floor  int64 // counts at or below this were pruned once
	pruned int
}

// NewTrainer returns a trainer.
func NewTrainer(o TrainOptions) (*Trainer, error) {
	fixed := len(SpecialTokens) + len(WhitespaceTokens) + 256
	if o.Vocab <= fixed || o.Vocab > 1<<24 {
		return nil, fmt.Errorf("train: vocabulary %d: want more than the %d fixed ids and at most %d", o.Vocab, fixed, 1<<24)
	}
	if o.MaxWords <= 0 {
		o.MaxWords = 1 << 21
	}
	if o.MinFrequency <= 0 {
		o.MinFrequency = 2
	}
	data, err := layoutJSON(nil)
	if err != nil {
		return nil, err
	}
	pipe, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("train: the layout does not load: %w", err)
	}
	return &Trainer{o: o, pipe: pipe, counts: map[string]int64{}}, nil
}

// Add counts the words of one document.
func (tr *Trainer) Add(text []byte) {
	local := map[string]int64{}
	e := encoder{t: tr.pipe, word: func(w []byte) {
		local[string(w)]++
		if len(local) >= tr.o.MaxWords/4+1 { // a long document: bound its table too
			tr.merge(local)
			clear(local)
		}
	}}
	tr.pipe.rawMatch.split(text, e.token, e.normalize)
	tr.merge(local)
}

// merge adds a document's counts to the table, pruning it when full.
func (tr *Trainer) merge(local map[string]int64) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for w, c := range local {
		tr.counts[w] += c
	}
	if len(tr.counts) > tr.o.MaxWords {
		tr.prune()
	}
}

// prune drops the rarest words until the table is half full.
func (tr *Trainer) prune() {
	for len(tr.counts) > tr.o.MaxWords/2 {
		tr.floor++
		for w, c := range tr.counts {
			if c <= tr.floor {
				delete(tr.counts, w)
				tr.pruned++
			}
		}
	}
}

// Words returns the number of distinct words counted and how many were
// dropped to bound memory.
func (tr *Trainer) Words() (kept, dropped int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.counts), tr.pruned
}

// twoIDs is a pair of symbols and its count, in the training heap.
type twoIDs struct {
	p pair
	n int64
}

// before orders the heap: higher count first, then the smaller pair.
func (x twoIDs) before(y twoIDs) bool {
	if x.n != y.n {
		return x.n > y.n
	}
	return x.p.a < y.p.a || (x.p.a == y.p.a && x.p.b < y.p.b)
}

// Finish learns the merges and returns the tokenizer.json.
func (tr *Trainer) Finish() ([]byte, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	keys := make([]string, 0, len(tr.counts))
	for w := range tr.counts {
		keys = append(keys, w)
	}
	sort.Strings(keys) // deterministic ids for words
	base := int32(len(SpecialTokens) + len(WhitespaceTokens))
	words := make([][]int32, len(keys))
	count := make([]int64, len(keys))
	pairs := map[pair]int64{}
	where := map[pair][]int32{}
	for i, w := range keys {
		sym := make([]int32, len(w))
		for k := range len(w) {
			sym[k] = base + int32(w[k])
		}
		words[i], count[i] = sym, tr.counts[w]
		for k := 0; k+1 < len(sym); k++ {
			p := pair{sym[k], sym[k+1]}
			pairs[p] += count[i]
			where[p] = append(where[p], int32(i))
		}
	}
	var h minHeap[twoIDs]
	for p, n := range pairs {
		h.push(twoIDs{p, n})
	}
	// text[id] is the byte string of a symbol; a merge that makes a string
	// already known reuses its id, as Hugging Face's trainer does.
	text := map[int32]string{}
	ids := map[string]int32{}
	for b := range 256 {
		text[base+int32(b)] = string([]byte{byte(b)})
		ids[text[base+int32(b)]] = base + int32(b)
	}
	next := base + 256
	var merges [][2]int32
	stamp := make([]int32, len(words))
	grown := map[pair]bool{}
	for int(next) < tr.o.Vocab && len(h) > 0 {
		top := h.pop()
		if n := pairs[top.p]; n != top.n {
			if n > 0 {
				h.push(twoIDs{top.p, n})
			}
			continue
		}
		if top.n < tr.o.MinFrequency {
			break
		}
		str := text[top.p.a] + text[top.p.b]
		z, ok := ids[str]
		if !ok {
			z = next
			next++
			text[z], ids[str] = str, z
		}
		merges = append(merges, [2]int32{top.p.a, top.p.b})
		mark := int32(len(merges))
		clear(grown)
		add := func(p pair, n int64, wi int32) {
			pairs[p] += n
			if n > 0 {
				where[p] = append(where[p], wi)
				grown[p] = true
			}
		}
		for _, wi := range where[top.p] {
			if stamp[wi] == mark {
				continue
			}
			stamp[wi] = mark
			w, c := words[wi], count[wi]
			for i := 0; i+1 < len(w); i++ {
				if w[i] != top.p.a || w[i+1] != top.p.b {
					continue
				}
				if i > 0 {
					add(pair{w[i-1], w[i]}, -c, wi)
				}
				if i+2 < len(w) {
					add(pair{w[i+1], w[i+2]}, -c, wi)
				}
				pairs[top.p] -= c
				w[i] = z
				w = append(w[:i+1], w[i+2:]...)
				if i > 0 {
					add(pair{w[i-1], z}, c, wi)
				}
				if i+1 < len(w) {
					add(pair{z, w[i+1]}, c, wi)
				}
			}
			words[wi] = w
		}
		delete(where, top.p)
		for p := range grown {
			if n := pairs[p]; n > 0 {
				h.push(twoIDs{p, n})
			}
		}
	}
	return layoutJSON(merges)
}

// layoutJSON writes a tokenizer.json in the §8.1 layout with merges given
// as pairs of ids (ids past the byte symbols are the merges in order).
func layoutJSON(merges [][2]int32) ([]byte, error) {
	var strs []string // by id
	var added []addedJSON
	for i, s := range SpecialTokens {
		strs = append(strs, s)
		added = append(added, addedJSON{ID: int32(i), Content: s, Special: true})
	}
	for _, s := range WhitespaceTokens {
		added = append(added, addedJSON{ID: int32(len(strs)), Content: s})
		strs = append(strs, s)
	}
	for b := range 256 {
		strs = append(strs, string(byteChar[b]))
	}
	vocab := make(map[string]int32, len(strs)+len(merges))
	for id, s := range strs {
		vocab[s] = int32(id)
	}
	ms := make([][2]string, len(merges))
	for i, m := range merges {
		a, b := strs[m[0]], strs[m[1]]
		ms[i] = [2]string{a, b}
		if _, dup := vocab[a+b]; !dup {
			vocab[a+b] = int32(len(strs))
			strs = append(strs, a+b)
		}
	}
	type component = map[string]any
	byteLevel := component{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
	seqA := component{"Sequence": component{"id": "A", "type_id": 0}}
	spec := func(s string) component { return component{"SpecialToken": component{"id": s, "type_id": 0}} }
	f := struct {
		Version       string      `json:"version"`
		Truncation    any         `json:"truncation"`
		Padding       any         `json:"padding"`
		AddedTokens   []addedJSON `json:"added_tokens"`
		Normalizer    component   `json:"normalizer"`
		PreTokenizer  component   `json:"pre_tokenizer"`
		PostProcessor component   `json:"post_processor"`
		Decoder       component   `json:"decoder"`
		Model         component   `json:"model"`
	}{
		Version:     "1.0",
		AddedTokens: added,
		Normalizer:  component{"type": "NFC"},
		PreTokenizer: component{"type": "Sequence", "pretokenizers": []any{
			component{"type": "Split", "pattern": component{"Regex": PatternPaper}, "behavior": "Isolated", "invert": false},
			byteLevel}},
		PostProcessor: component{"type": "TemplateProcessing",
			"single": []any{spec(SpecialTokens[0]), seqA, spec(SpecialTokens[1])},
			"pair":   []any{spec(SpecialTokens[0]), seqA, component{"Sequence": component{"id": "B", "type_id": 1}}, spec(SpecialTokens[1])},
			"special_tokens": component{
				SpecialTokens[0]: component{"id": SpecialTokens[0], "ids": []int{0}, "tokens": []string{SpecialTokens[0]}},
				SpecialTokens[1]: component{"id": SpecialTokens[1], "ids": []int{1}, "tokens": []string{SpecialTokens[1]}},
			}},
		Decoder: byteLevel,
		Model: component{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": ms},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	return buf.Bytes(), nil
}
