package shard

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// rawShard writes an Arrow file of schema s with one int32/uint16 column of
// the given flat values, bypassing Writer's checks.
func rawShard(t testing.TB, s *arrow.Schema, rows int, build func(b *array.RecordBuilder)) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(s))
	if err != nil {
		t.Fatal(err)
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	defer b.Release()
	build(b)
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func fillList(rows, n int, tok func(i int) uint16) func(b *array.RecordBuilder) {
	return func(b *array.RecordBuilder) {
		lb := b.Field(0).(*array.FixedSizeListBuilder)
		vb := lb.ValueBuilder().(*array.Uint16Builder)
		for r := range rows {
			lb.Append(true)
			for j := range n {
				vb.Append(tok(r*n + j))
			}
		}
	}
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestBadShards(t *testing.T) {
	meta := testMeta(260)
	p, info, _ := writeShard(t, t.TempDir(), "good.arrow", meta, 12)
	good, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	full := Expect{SeqLen: 16, Vocab: 260, Tokenizer: "test", Sequences: info.Sequences, Bytes: info.Bytes, SHA256: info.SHA256}

	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1

	otherField := arrow.NewSchema([]arrow.Field{{Name: "ids", Type: arrow.FixedSizeListOfNonNullable(16, arrow.PrimitiveTypes.Uint16)}}, func() *arrow.Metadata { m := meta.Schema().Metadata(); return &m }())
	wrongName := rawShard(t, otherField, 5, fillList(5, 16, func(int) uint16 { return 5 }))
	noMeta := rawShard(t, arrow.NewSchema(meta.Schema().Fields(), nil), 5, fillList(5, 16, func(int) uint16 { return 5 }))
	bigTok := rawShard(t, meta.Schema(), 5, fillList(5, 16, func(i int) uint16 {
		if i == 37 {
			return 300
		}
		return 5
	}))
	md := arrow.NewMetadata([]string{keyVersion, keySeqLen, keyVocab, keyTokenizer, keyBatchRows}, []string{"1", "8", "260", "test", "5"})
	lenMismatch := rawShard(t, arrow.NewSchema(meta.Schema().Fields(), &md), 5, fillList(5, 16, func(int) uint16 { return 5 }))
	md2 := arrow.NewMetadata([]string{keyVersion, keySeqLen, keyVocab, keyTokenizer, keyBatchRows}, []string{"2", "16", "260", "test", "5"})
	newVersion := rawShard(t, arrow.NewSchema(meta.Schema().Fields(), &md2), 5, fillList(5, 16, func(int) uint16 { return 5 }))
	tooManyRows := rawShard(t, meta.Schema(), 7, fillList(7, 16, func(int) uint16 { return 5 }))

	for _, tc := range []struct {
		name string
		data []byte
		want Expect
		err  string
	}{
		{"truncated vs manifest", good[:len(good)-100], full, "manifest says"},
		{"truncated", good[:len(good)-100], Expect{}, "not a valid shard file"},
		{"tiny", good[:10], Expect{}, "is not an Arrow file"},
		{"checksum mismatch", flipped, full, "checksum mismatch"},
		{"wrong field name", wrongName, Expect{}, `schema field is "ids"`},
		{"no metadata", noMeta, Expect{}, "schema metadata lacks"},
		{"token id >= vocab", bigTok, Expect{}, "token id 300 at position 5 is not < vocabulary size 260"},
		{"list size vs seq_len", lenMismatch, Expect{}, "has type"},
		{"future version", newVersion, Expect{}, "format version 2"},
		{"batch over batch_rows", tooManyRows, Expect{}, "7 rows"},
		{"wrong vocab vs manifest", good, Expect{Vocab: 300}, "vocabulary size 260, manifest says 300"},
		{"wrong count vs manifest", good, Expect{Sequences: 13}, "12 sequences, manifest says 13"},
		{"wrong tokenizer", good, Expect{Tokenizer: "bpe"}, `tokenizer "test"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.arrow")
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Open(path, tc.want)
			if err == nil {
				r.Close()
				t.Fatalf("Open succeeded, want error containing %q", tc.err)
			}
			if !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q: want it to name %s and contain %q", err, path, tc.err)
			}
		})
	}
}

func TestParseManifestErrors(t *testing.T) {
	good := `{"version":1,"tokenizer":"bytes","vocab":260,"seq_len":256,"shards":[{"name":"train-00000.arrow","split":"train","sequences":10,"bytes":6000,"sha256":"` + strings.Repeat("ab", 32) + `"}]}`
	if _, err := ParseManifest([]byte(good)); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	for _, tc := range []struct {
		name, old, new, err string
	}{
		{"version", `"version":1`, `"version":7`, "format version 7"},
		{"vocab", `"vocab":260`, `"vocab":0`, "vocabulary size 0"},
		{"seq_len", `"seq_len":256`, `"seq_len":-1`, "sequence length -1"},
		{"path escape", `train-00000.arrow`, `../x.arrow`, "bad file name"},
		{"not arrow", `train-00000.arrow`, `train.txt`, "bad file name"},
		{"split", `"split":"train"`, `"split":"Tr ain"`, "bad split name"},
		{"sequences", `"sequences":10`, `"sequences":0`, "0 sequences"},
		{"too many sequences", `"sequences":10`, `"sequences":100`, "cannot fit"},
		{"sha", strings.Repeat("ab", 32), "xyz", "not 64 hex digits"},
		{"unknown field", `"vocab":260`, `"vocab":260,"extra":1`, "unknown field"},
		{"trailing", `]}`, `]} {}`, "trailing data"},
		{"not json", `{"version"`, `{version`, "invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(strings.Replace(good, tc.old, tc.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
	dup := strings.Replace(good, `]}`, `,{"name":"train-00000.arrow","split":"train","sequences":10,"bytes":6000,"sha256":"`+strings.Repeat("ab", 32)+`"}]}`, 1)
	if _, err := ParseManifest([]byte(dup)); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Fatalf("duplicate shard: %v", err)
	}
}

func FuzzReader(f *testing.F) {
	meta := testMeta(260)
	p, _, _ := writeShard(f, f.TempDir(), "seed.arrow", meta, 7)
	good, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("ARROW1\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := FromBytes("fuzz.arrow", data, Expect{})
		if err != nil {
			return
		}
		defer r.Close()
		dst := make([]int32, r.Meta().SeqLen)
		for i := range r.Len() {
			if err := r.Read(i, dst); err != nil {
				t.Fatalf("validated shard: read %d: %v", i, err)
			}
			for _, tok := range dst {
				if tok < 0 || int(tok) >= r.Meta().Vocab {
					t.Fatalf("validated shard served token %d, vocab %d", tok, r.Meta().Vocab)
				}
			}
		}
	})
}

func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"version":1,"tokenizer":"bytes","vocab":260,"seq_len":256,"shards":[{"name":"train-00000.arrow","split":"train","sequences":10,"bytes":6000,"sha256":"` + strings.Repeat("ab", 32) + `"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseManifest(b); err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v", err)
		}
	})
}
