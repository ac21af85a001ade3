package dataset

import (
	"slices"
	"testing"
)

func memSeqs(n, seqLen int) [][]int32 {
	seqs := make([][]int32, n)
	for i := range seqs {
		s := make([]int32, seqLen)
		s[0] = int32(i % 200)
		s[1] = int32(i / 200)
		for j := 2; j < seqLen; j++ {
			s[j] = int32((i + j) % 260)
		}
		seqs[i] = s
	}
	return seqs
}

func seqID(s []int32) int { return int(s[1])*200 + int(s[0]) }

// serve simulates a ring taking global steps [from, to) with world size
// worldAt(step): every member draws its part with Split, and the parts are
// returned in the order served.
func serve(t *testing.T, src Source, batch int, from, to int64, worldAt func(int64) int) (ids []int, positions []int64) {
	t.Helper()
	dst := make([]int32, src.SeqLen())
	for s := from; s < to; s++ {
		w := worldAt(s)
		next := s * int64(batch)
		for r := range w {
			lo, hi, err := Split(s, batch, r, w)
			if err != nil {
				t.Fatal(err)
			}
			if lo != next {
				t.Fatalf("step %d world %d rank %d starts at %d, want %d", s, w, r, lo, next)
			}
			next = hi
			for k := lo; k < hi; k++ {
				if err := src.Sample(k, dst); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, seqID(dst))
				positions = append(positions, k)
			}
		}
		if next != (s+1)*int64(batch) {
			t.Fatalf("step %d world %d: ranks cover up to %d, want %d", s, w, next, (s+1)*int64(batch))
		}
	}
	return ids, positions
}

func TestEpochExactlyOnce(t *testing.T) {
	const n = 997
	src, err := NewMemory(memSeqs(n, 8), 260, 99)
	if err != nil {
		t.Fatal(err)
	}
	for _, batch := range []int{5, 8, 13, 64} {
		steps := int64((n + batch - 1) / batch)
		for _, tc := range []struct {
			name    string
			worldAt func(int64) int
		}{
			{"world 1", func(int64) int { return 1 }},
			{"world 2", func(int64) int { return 2 }},
			{"world 3", func(int64) int { return 3 }},
			{"world 5", func(int64) int { return 5 }},
			{"world changes every 7 steps", func(s int64) int { return []int{1, 2, 3, 5, 4}[s/7%5] }},
			{"world changes every step", func(s int64) int { return []int{5, 3, 2, 1}[s%4] }},
		} {
			ids, pos := serve(t, src, batch, 0, steps, tc.worldAt)
			seen := make([]int, n)
			for i, id := range ids {
				if pos[i] < n {
					seen[id]++
				}
			}
			for id, c := range seen {
				if c != 1 {
					t.Fatalf("batch %d, %s: sequence %d served %d times in epoch 0", batch, tc.name, id, c)
				}
			}
			// The same global batch whatever the world size.
			ref, _ := serve(t, src, batch, 0, steps, func(int64) int { return 1 })
			if !slices.Equal(ids, ref) {
				t.Fatalf("batch %d, %s: order differs from world size 1", batch, tc.name)
			}
		}
	}
}

func TestResumeFromCursor(t *testing.T) {
	const n, batch = 500, 12
	seqs := memSeqs(n, 8)
	a, _ := NewMemory(seqs, 260, 5)
	full, _ := serve(t, a, batch, 0, 100, func(int64) int { return 3 })
	// Stop after 37 steps; the cursor is the number of samples consumed.
	cursor := int64(37 * batch)
	b, _ := NewMemory(seqs, 260, 5) // a fresh process
	rest, _ := serve(t, b, batch, cursor/batch, 100, func(int64) int { return 2 })
	if !slices.Equal(full[cursor:], rest) {
		t.Fatal("resumed order differs")
	}
}

func TestSplitErrors(t *testing.T) {
	for _, tc := range []struct{ batch, rank, world int }{
		{0, 0, 1}, {4, 0, 0}, {4, 4, 4}, {4, -1, 2}, {4, 0, 5},
	} {
		if _, _, err := Split(0, tc.batch, tc.rank, tc.world); err == nil {
			t.Errorf("Split(batch %d, rank %d, world %d) succeeded", tc.batch, tc.rank, tc.world)
		}
	}
}

func TestMemoryErrors(t *testing.T) {
	if _, err := NewMemory(nil, 260, 0); err == nil {
		t.Error("no sequences accepted")
	}
	if _, err := NewMemory([][]int32{{1, 2}, {3}}, 260, 0); err == nil {
		t.Error("ragged sequences accepted")
	}
	if _, err := NewMemory([][]int32{{1, 260}}, 260, 0); err == nil {
		t.Error("token id 260 accepted with vocab 260")
	}
}
