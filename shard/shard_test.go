package shard

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeShard writes n sequences with deterministic tokens and returns the
// shard's path, info and tokens.
func writeShard(t testing.TB, dir, name string, meta Meta, n int) (string, Info, [][]int32) {
	t.Helper()
	p := filepath.Join(dir, name)
	w, err := Create(p, meta)
	if err != nil {
		t.Fatal(err)
	}
	var seqs [][]int32
	for i := range n {
		s := make([]int32, meta.SeqLen)
		for j := range s {
			s[j] = int32((i*7919 + j*31) % meta.Vocab)
		}
		if err := w.Add(s); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, s)
	}
	info, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return p, info, seqs
}

func testMeta(vocab int) Meta {
	return Meta{SeqLen: 16, Vocab: vocab, Tokenizer: "test", BatchRows: 5}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		vocab int
		n     int
	}{
		{"uint16 one batch", 260, 3},
		{"uint16 full batches", 260, 10},
		{"uint16 partial last", 65536, 13},
		{"int32", 131072, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			meta := testMeta(tc.vocab)
			p, info, seqs := writeShard(t, dir, "a.arrow", meta, tc.n)
			if info.Sequences != int64(tc.n) {
				t.Fatalf("info says %d sequences, want %d", info.Sequences, tc.n)
			}
			r, err := Open(p, Expect{SeqLen: 16, Vocab: tc.vocab, Tokenizer: "test", Sequences: info.Sequences, Bytes: info.Bytes, SHA256: info.SHA256})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Len() != int64(tc.n) {
				t.Fatalf("Len %d, want %d", r.Len(), tc.n)
			}
			dst := make([]int32, 16)
			for i, want := range seqs {
				if err := r.Read(int64(i), dst); err != nil {
					t.Fatal(err)
				}
				for j := range want {
					if dst[j] != want[j] {
						t.Fatalf("seq %d tok %d: %d, want %d", i, j, dst[j], want[j])
					}
				}
			}
			if err := r.Read(int64(tc.n), dst); err == nil {
				t.Fatal("read past the end succeeded")
			}
			// No temporary files remain.
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Fatalf("dir holds %d entries, want only the shard", len(ents))
			}
		})
	}
}

func TestDeterministicBytes(t *testing.T) {
	meta := testMeta(260)
	p1, _, _ := writeShard(t, t.TempDir(), "a.arrow", meta, 12)
	p2, _, _ := writeShard(t, t.TempDir(), "a.arrow", meta, 12)
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	if !bytes.Equal(b1, b2) {
		t.Fatal("same sequences gave different shard bytes")
	}
}

func TestWriterRejects(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "a.arrow"), testMeta(260))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	bad := make([]int32, 16)
	bad[3] = 260
	for _, tc := range []struct {
		seq  []int32
		want string
	}{
		{make([]int32, 15), "want 16"},
		{bad, "outside [0, 260)"},
	} {
		if err := w.Add(tc.seq); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Add: %v, want error containing %q", err, tc.want)
		}
	}
	if _, err := w.Close(); err == nil || !strings.Contains(err.Error(), "no sequences") {
		t.Errorf("Close of empty shard: %v", err)
	}
}
