package dataset

import (
	"bytes"
	"slices"
	"testing"
)

func TestPacker(t *testing.T) {
	const E = EOS
	for _, tc := range []struct {
		name string
		n    int
		docs [][]int32
		want [][]int32
		left int
	}{
		{"eos between; none at a boundary", 4, [][]int32{{5, 6}, {7}}, [][]int32{{5, 6, E, 7}}, 0},
		{"exact multiple: no eos", 4, [][]int32{{5, 6, 7, 8}, {9}}, [][]int32{{5, 6, 7, 8}}, 2},
		{"straddles", 3, [][]int32{{5, 6, 7, 8, 9}}, [][]int32{{5, 6, 7}, {8, 9, E}}, 0},
		{"fills to boundary after carry", 4, [][]int32{{5, 6, 7, 8, 9}, {10, 11}}, [][]int32{{5, 6, 7, 8}, {9, E, 10, 11}}, 0},
		{"long doc", 2, [][]int32{{5, 6, 7, 8, 9, 10}}, [][]int32{{5, 6}, {7, 8}, {9, 10}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPacker(tc.n)
			var got [][]int32
			for _, d := range tc.docs {
				if err := p.Add(d, func(s []int32) error { got = append(got, slices.Clone(s)); return nil }); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if p.Pending() != tc.left {
				t.Fatalf("pending %d, want %d", p.Pending(), tc.left)
			}
		})
	}
}

func TestBytesTokenizer(t *testing.T) {
	var tok Tokenizer = Bytes{}
	for _, s := range [][]byte{nil, []byte("hello, 世界"), {0xff, 0xfe, 0x00, 0x80, 'a'}} {
		ids := tok.Encode(nil, s)
		for _, id := range ids {
			if id < 4 || int(id) >= tok.Vocab() {
				t.Fatalf("id %d outside the byte range", id)
			}
		}
		if got := tok.Decode(nil, append([]int32{BOS}, append(ids, EOS, PAD, MASK)...)); !bytes.Equal(got, s) {
			t.Fatalf("round trip of %q gave %q", s, got)
		}
	}
	if tok.Vocab() != 260 || tok.Name() != "bytes" {
		t.Fatal("bytes tokenizer: vocab or name changed")
	}
	if _, err := TokenizerByName("nope"); err == nil {
		t.Fatal("unknown tokenizer accepted")
	}
}
