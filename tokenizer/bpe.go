package tokenizer

import "sync"

// pair is two adjacent token ids.
type pair struct{ a, b int32 }

// merge is what a pair becomes, and its rank (lower merges first).
type merge struct{ rank, id int32 }

// bpe is the model: byte-level BPE over raw bytes. Vocabulary strings are
// kept as the raw bytes they stand for.
type bpe struct {
	byteID       [256]int32 // id of each single byte
	merges       map[pair]merge
	vocab        map[string]int32 // raw bytes -> id
	ignoreMerges bool             // a word in the vocabulary is one token

	mu    sync.RWMutex
	cache map[string][]int32
}

// cacheMax bounds the word cache; when full it starts over.
const cacheMax = 1 << 16

// cacheWordMax is the longest word kept in the cache, in bytes.
const cacheWordMax = 256

// symbol is one token of a word being merged, in a linked list.
type symbol struct {
	id         int32
	prev, next int32 // indexes, -1 at the ends
	gone       bool
}

// cand is a candidate merge of the symbol at pos with its next.
type cand struct {
	rank, pos, id int32
}

func (x cand) before(y cand) bool {
	return x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos)
}

// encode appends the ids of one pre-tokenized word (raw bytes).
func (m *bpe) encode(dst []int32, word []byte) []int32 {
	if len(word) == 0 {
		return dst
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[string(word)]; ok {
			return append(dst, id)
		}
	}
	if len(word) == 1 {
		return append(dst, m.byteID[word[0]])
	}
	if len(word) <= cacheWordMax {
		m.mu.RLock()
		ids, ok := m.cache[string(word)]
		m.mu.RUnlock()
		if ok {
			return append(dst, ids...)
		}
	}
	start := len(dst)
	dst = m.merge(dst, word)
	if len(word) <= cacheWordMax {
		ids := append([]int32(nil), dst[start:]...)
		m.mu.Lock()
		if len(m.cache) >= cacheMax {
			clear(m.cache)
		}
		m.cache[string(word)] = ids
		m.mu.Unlock()
	}
	return dst
}

// merge runs the merges on word by rank, leftmost first among equal
// ranks, as Hugging Face's BPE does, with a heap over a linked list.
func (m *bpe) merge(dst []int32, word []byte) []int32 {
	sym := make([]symbol, len(word))
	h := minHeap[cand](make([]cand, 0, len(word)))
	for i, b := range word {
		sym[i] = symbol{id: m.byteID[b], prev: int32(i) - 1, next: int32(i) + 1}
	}
	sym[len(sym)-1].next = -1
	for i := 0; i+1 < len(sym); i++ {
		if mg, ok := m.merges[pair{sym[i].id, sym[i+1].id}]; ok {
			h.push(cand{mg.rank, int32(i), mg.id})
		}
	}
	for len(h) > 0 {
		c := h.pop()
		s := &sym[c.pos]
		if s.gone || s.next < 0 {
			continue
		}
		nx := &sym[s.next]
		if mg, ok := m.merges[pair{s.id, nx.id}]; !ok || mg.id != c.id {
			continue
		}
		s.id = c.id
		nx.gone = true
		s.next = nx.next
		if s.next >= 0 {
			sym[s.next].prev = c.pos
			if mg, ok := m.merges[pair{s.id, sym[s.next].id}]; ok {
				h.push(cand{mg.rank, c.pos, mg.id})
			}
		}
		if s.prev >= 0 {
			if mg, ok := m.merges[pair{sym[s.prev].id, s.id}]; ok {
				h.push(cand{mg.rank, s.prev, mg.id})
			}
		}
	}
	for i := int32(0); i >= 0; i = sym[i].next {
		dst = append(dst, sym[i].id)
	}
	return dst
}
