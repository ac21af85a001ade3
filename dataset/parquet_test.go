package dataset

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/difftrain/difftrain/shard"
)

// pqRow is one row of a test Parquet file: a text (nil: null) and its
// byte-level token ids.
type pqRow struct {
	text *string
	ids  []int64 // nil: null
}

var pqSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "text", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "input_ids", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64), Nullable: true},
}, nil)

// writeParquet writes rows with pqarrow, rgRows rows per row group, and
// returns the encoded file.
func writeParquet(t testing.TB, rows []pqRow, rgRows int, codec compress.Compression) []byte {
	t.Helper()
	var buf bytes.Buffer
	props := parquet.NewWriterProperties(parquet.WithCompression(codec), parquet.WithMaxRowGroupLength(int64(rgRows)))
	w, err := pqarrow.NewFileWriter(pqSchema, &buf, props, pqarrow.DefaultWriterProps())
	if err != nil {
		t.Fatal(err)
	}
	for start := 0; start < len(rows); start += rgRows {
		b := array.NewRecordBuilder(memory.DefaultAllocator, pqSchema)
		ids := b.Field(0).(*array.Int64Builder)
		texts := b.Field(1).(*array.StringBuilder)
		lists := b.Field(2).(*array.ListBuilder)
		vals := lists.ValueBuilder().(*array.Int64Builder)
		for i, r := range rows[start:min(len(rows), start+rgRows)] {
			ids.Append(int64(start + i))
			if r.text == nil {
				texts.AppendNull()
			} else {
				texts.Append(*r.text)
			}
			if r.ids == nil {
				lists.AppendNull()
			} else {
				lists.Append(true)
				vals.AppendValues(r.ids, nil)
			}
		}
		rec := b.NewRecordBatch()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		b.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func textRow(s string) pqRow {
	ids := make([]int64, len(s))
	for i := range len(s) {
		ids[i] = int64(s[i]) + 4
	}
	return pqRow{text: &s, ids: ids}
}

// pqDocs returns n documents of varied length, and rows for them with a
// null row and an empty text among them.
func pqDocs(n int) ([]string, []pqRow) {
	var docs []string
	var rows []pqRow
	for i := range n {
		s := fmt.Sprintf("parquet document %d, é and \"quotes\"\n%s", i, strings.Repeat("xy", i%23))
		docs = append(docs, s)
		rows = append(rows, textRow(s))
		if i == 5 {
			rows = append(rows, pqRow{}) // null text, null ids
		}
		if i == 9 {
			rows = append(rows, textRow(""))
		}
	}
	return docs, rows
}

func writeFile(t testing.TB, p string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func shardBytes(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m, err := shard.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, s := range m.Shards {
		b, err := os.ReadFile(filepath.Join(dir, s.Name))
		if err != nil {
			t.Fatal(err)
		}
		out[s.Name] = b
	}
	return out
}

func sameShards(t *testing.T, name, a, b string) {
	t.Helper()
	x, y := shardBytes(t, a), shardBytes(t, b)
	if len(x) != len(y) || len(x) == 0 {
		t.Fatalf("%s: %d shards, reference %d", name, len(y), len(x))
	}
	for k, v := range x {
		if !bytes.Equal(v, y[k]) {
			t.Fatalf("%s: shard %s differs from the JSONL reference", name, k)
		}
	}
}

// TestPrepareParquet prepares the same documents as JSONL, as Parquet text
// (several row groups, a null and an empty row) and as a pretokenized
// Parquet column: the shards are byte-identical.
func TestPrepareParquet(t *testing.T) {
	dir := t.TempDir()
	docs, rows := pqDocs(200)
	var jl strings.Builder
	for _, d := range docs {
		fmt.Fprintf(&jl, "{\"text\": %q}\n", d)
	}
	jsonl := writeFile(t, filepath.Join(dir, "docs.jsonl"), []byte(jl.String()))
	pq := writeFile(t, filepath.Join(dir, "docs.parquet"), writeParquet(t, rows, 37, compress.Codecs.Zstd))
	if n := parquetRowGroups(t, pq); n < 5 {
		t.Fatalf("test file has %d row groups, want several", n)
	}
	ref := filepath.Join(dir, "ref")
	o := PrepareOptions{Inputs: []string{jsonl}, Out: ref, SeqLen: 16, ShardMB: 0.001, Workers: 3}
	if _, err := Prepare(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		format string
		tokens string
	}{
		{"text by extension", "", ""},
		{"text, format parquet", FormatParquet, ""},
		{"pretokenized", "", "input_ids"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := o
			o.Inputs, o.Format, o.TokensField, o.Out = []string{pq}, tc.format, tc.tokens, t.TempDir()
			st, err := Prepare(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if st.Nulls != 1 || st.Documents[SplitTrain] != int64(len(docs)) {
				t.Fatalf("%d nulls, %d documents; want 1 and %d", st.Nulls, st.Documents[SplitTrain], len(docs))
			}
			sameShards(t, tc.name, ref, o.Out)
		})
	}
}

func parquetRowGroups(t *testing.T, p string) int {
	t.Helper()
	r, err := file.OpenParquetFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return r.NumRowGroups()
}

// TestPrepareCompressedJSONL reads the same JSONL plain, gzip and zstd.
func TestPrepareCompressedJSONL(t *testing.T) {
	dir := t.TempDir()
	docs, _ := pqDocs(3000) // over 1 MiB of JSONL: several chunks
	var jl bytes.Buffer
	for _, d := range docs {
		fmt.Fprintf(&jl, "{\"text\": %q}\n", d)
	}
	plain := writeFile(t, filepath.Join(dir, "a", "docs.jsonl"), jl.Bytes())
	gz := writeFile(t, filepath.Join(dir, "b", "docs.jsonl.gz"), gzipBytes(t, jl.Bytes()))
	zst := writeFile(t, filepath.Join(dir, "c", "docs.jsonl.zst"), zstdBytes(t, jl.Bytes()))
	ref := filepath.Join(dir, "ref")
	o := PrepareOptions{Inputs: []string{plain}, Out: ref, SeqLen: 64, Workers: 2}
	if _, err := Prepare(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{gz, zst, filepath.Dir(zst)} {
		o.Inputs, o.Out = []string{in}, t.TempDir()
		st, err := Prepare(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if st.InputBytes < int64(jl.Len())-int64(len(docs)*16) {
			t.Fatalf("%s: %d input bytes, want about %d", in, st.InputBytes, jl.Len())
		}
		sameShards(t, in, ref, o.Out)
	}
	// A truncated stream is an error naming the file, and leaves no manifest.
	cut := writeFile(t, filepath.Join(dir, "cut.jsonl.zst"), zstdBytes(t, jl.Bytes())[:5000])
	o.Inputs, o.Out = []string{cut}, t.TempDir()
	if _, err := Prepare(context.Background(), o); err == nil || !strings.Contains(err.Error(), "cut.jsonl.zst") {
		t.Fatalf("truncated zstd: %v, want an error naming the file", err)
	}
	if _, err := os.Stat(filepath.Join(o.Out, shard.ManifestName)); err == nil {
		t.Fatal("a failed prepare wrote a manifest")
	}
}

// TestPrepareHFDatasetFolder reads a Hugging Face dataset folder: the
// validation files make the val split, test files and README.md are not read.
func TestPrepareHFDatasetFolder(t *testing.T) {
	root := filepath.Join(t.TempDir(), "my_dataset")
	docs, _ := pqDocs(90)
	rowsOf := func(ds []string) []pqRow {
		var r []pqRow
		for _, d := range ds {
			r = append(r, textRow(d))
		}
		return r
	}
	train1, train2, val, test := docs[:40], docs[40:70], docs[70:80], docs[80:]
	writeFile(t, filepath.Join(root, "README.md"), []byte("---\nlicense: mit\n---\n# my dataset\n"))
	writeFile(t, filepath.Join(root, "data", "train-00000-of-00002.parquet"), writeParquet(t, rowsOf(train1), 16, compress.Codecs.Snappy))
	writeFile(t, filepath.Join(root, "data", "train-00001-of-00002.parquet"), writeParquet(t, rowsOf(train2), 16, compress.Codecs.Uncompressed))
	writeFile(t, filepath.Join(root, "data", "validation-00000-of-00001.parquet"), writeParquet(t, rowsOf(val), 16, compress.Codecs.Gzip))
	writeFile(t, filepath.Join(root, "data", "test-00000-of-00001.parquet"), writeParquet(t, rowsOf(test), 16, compress.Codecs.Zstd))
	out := t.TempDir()
	st, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{root}, Out: out, SeqLen: 8, ValFraction: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 3 {
		t.Fatalf("read %d files, want the 3 train and validation files", st.Files)
	}
	for split, ds := range map[string][]string{SplitTrain: append(slices.Clone(train1), train2...), SplitVal: val} {
		p := NewPacker(8)
		var want [][]int32
		for _, d := range ds {
			p.Add(Bytes{}.Encode(nil, []byte(d)), func(s []int32) error { want = append(want, slices.Clone(s)); return nil })
		}
		if got := readSplit(t, out, split); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("%s: %d sequences, want %d, or contents differ", split, len(got), len(want))
		}
	}
}

func TestPrepareParquetBadInput(t *testing.T) {
	dir := t.TempDir()
	docs, rows := pqDocs(300)
	_ = docs
	good := writeParquet(t, rows, 50, compress.Codecs.Zstd)
	goodPath := writeFile(t, filepath.Join(dir, "good.parquet"), good)
	bigID := slices.Clone(rows)
	bigID[77] = pqRow{text: rows[77].text, ids: []int64{5, 6, 300, 7}}
	bigIDPath := writeFile(t, filepath.Join(dir, "bigid.parquet"), writeParquet(t, bigID, 50, compress.Codecs.Zstd))
	negID := slices.Clone(rows)
	negID[3] = pqRow{text: rows[3].text, ids: []int64{-1}}
	negIDPath := writeFile(t, filepath.Join(dir, "negid.parquet"), writeParquet(t, negID, 50, compress.Codecs.Zstd))
	footer := writeFile(t, filepath.Join(dir, "footer.parquet"), good[:len(good)-20])
	// Overwrite the first page header of the text column in row group 2.
	page := slices.Clone(good)
	at := textPageOffset(t, goodPath, 2)
	for i := at; i < at+16; i++ {
		page[i] ^= 0x5a
	}
	pagePath := writeFile(t, filepath.Join(dir, "page.parquet"), page)
	notPQ := writeFile(t, filepath.Join(dir, "text.parquet"), []byte("PAR1 this is not parquet at all"))
	for _, tc := range []struct {
		name string
		o    PrepareOptions
		errs []string
	}{
		{"no such column", PrepareOptions{Inputs: []string{goodPath}, Field: "content"},
			[]string{"good.parquet", `no column "content"`, "id (int64)", "text (utf8)", "input_ids (list<"}},
		{"not a text column", PrepareOptions{Inputs: []string{goodPath}, Field: "id"}, []string{"good.parquet", `column "id"`, "not text"}},
		{"tokens field not a list", PrepareOptions{Inputs: []string{goodPath}, TokensField: "text"}, []string{`column "text"`, "not a list of integer"}},
		{"id beyond the vocabulary", PrepareOptions{Inputs: []string{bigIDPath}, TokensField: "input_ids"},
			[]string{"bigid.parquet", "row group 1", "row 77", "token id 300", "[0, 260)"}},
		{"negative id", PrepareOptions{Inputs: []string{negIDPath}, TokensField: "input_ids"}, []string{"negid.parquet", "row 3", "token id -1"}},
		{"tokens field on JSONL", PrepareOptions{Inputs: []string{writeFile(t, filepath.Join(dir, "a.jsonl"), []byte("{\"text\": \"x\"}\n"))}, TokensField: "ids"},
			[]string{"a.jsonl", "--tokens-field", "jsonl input"}},
		{"corrupt footer", PrepareOptions{Inputs: []string{footer}}, []string{"footer.parquet"}},
		{"corrupt page", PrepareOptions{Inputs: []string{pagePath}}, []string{"page.parquet", "row group 2"}},
		{"not parquet", PrepareOptions{Inputs: []string{notPQ}}, []string{"text.parquet"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Out = filepath.Join(t.TempDir(), "out")
			tc.o.SeqLen = 8
			_, err := Prepare(context.Background(), tc.o)
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, s := range tc.errs {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("error %q does not say %q", err, s)
				}
			}
			if _, err := os.Stat(filepath.Join(tc.o.Out, shard.ManifestName)); err == nil {
				t.Fatal("a failed prepare wrote a manifest")
			}
		})
	}
}

// textPageOffset returns where the text column's pages of row group rg start.
func textPageOffset(t *testing.T, p string, rg int) int64 {
	t.Helper()
	r, err := file.OpenParquetFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cc, err := r.MetaData().RowGroup(rg).ColumnChunk(1)
	if err != nil {
		t.Fatal(err)
	}
	if cc.HasDictionaryPage() {
		return cc.DictionaryPageOffset()
	}
	return cc.DataPageOffset()
}

// peakAllocator is a checked allocator that remembers its largest total.
type peakAllocator struct {
	*memory.CheckedAllocator
	mu   sync.Mutex
	peak int
}

func (p *peakAllocator) note() {
	p.mu.Lock()
	p.peak = max(p.peak, p.CurrentAlloc())
	p.mu.Unlock()
}

func (p *peakAllocator) Allocate(n int) []byte {
	b := p.CheckedAllocator.Allocate(n)
	p.note()
	return b
}

func (p *peakAllocator) Reallocate(n int, b []byte) []byte {
	b = p.CheckedAllocator.Reallocate(n, b)
	p.note()
	return b
}

// readSizes records the largest single read from a file.
type readSizes struct {
	*bytes.Reader
	largest int
}

func (r *readSizes) ReadAt(p []byte, off int64) (int, error) {
	r.largest = max(r.largest, len(p))
	return r.Reader.ReadAt(p, off)
}

// TestParquetStreaming reads files of one row group each, 2 MiB and 24
// MiB of text: Arrow memory at its peak, and the largest single read, stay
// under a bound far below the row group's size and do not grow with it.
func TestParquetStreaming(t *testing.T) {
	const bound = 6 << 20
	peaks := map[int]int{}
	for _, mb := range []int{2, 24} {
		var rows []pqRow
		line := strings.Repeat("0123456789abcdef", 64) // 1 KiB
		for i := range mb << 10 {
			s := fmt.Sprintf("%08d", i) + line[8:]
			rows = append(rows, pqRow{text: &s, ids: []int64{}})
		}
		data := writeParquet(t, rows, len(rows), compress.Codecs.Uncompressed)
		if len(data) < mb<<20 {
			t.Fatalf("file of %d bytes, want over %d MiB", len(data), mb)
		}
		mem := &peakAllocator{CheckedAllocator: memory.NewCheckedAllocator(memory.NewGoAllocator())}
		src := &readSizes{Reader: bytes.NewReader(data)}
		pf, err := openParquet("big.parquet", src, "text", false, mem)
		if err != nil {
			t.Fatal(err)
		}
		if pf.rdr.NumRowGroups() != 1 {
			t.Fatalf("%d row groups, want 1", pf.rdr.NumRowGroups())
		}
		var n int
		var sum int64
		err = pf.each(context.Background(), BytesVocab, func(b *rowBatch) error {
			for i := range b.len() {
				if string(b.data[b.off[i]:b.off[i]+8]) != fmt.Sprintf("%08d", n) {
					return fmt.Errorf("row %d out of order", n)
				}
				n++
			}
			sum += int64(len(b.data))
			return nil
		})
		pf.close()
		if err != nil {
			t.Fatal(err)
		}
		mem.AssertSize(t, 0)
		if n != len(rows) || sum != int64(len(rows))*1024 {
			t.Fatalf("read %d rows, %d bytes; want %d rows of 1 KiB", n, sum, len(rows))
		}
		t.Logf("%d MiB row group: peak Arrow memory %d bytes, largest read %d bytes", mb, mem.peak, src.largest)
		if mem.peak > bound || src.largest > bound {
			t.Fatalf("%d MiB row group: peak Arrow memory %d, largest read %d; want both under %d", mb, mem.peak, src.largest, bound)
		}
		peaks[mb] = mem.peak
	}
	if float64(peaks[24]) > 1.5*float64(peaks[2])+(1<<20) {
		t.Fatalf("peak memory grows with the file: %v", peaks)
	}
}

func FuzzParquet(f *testing.F) {
	_, rows := pqDocs(30)
	good := writeParquet(f, rows, 7, compress.Codecs.Snappy)
	f.Add(good, false)
	f.Add(good, true)
	f.Add(good[:len(good)/2], false)
	f.Add(writeParquet(f, rows[:3], 2, compress.Codecs.Uncompressed), true)
	f.Add([]byte("PAR1\x00\x00\x00\x00PAR1"), false)
	f.Fuzz(func(t *testing.T, data []byte, ids bool) {
		o := PrepareOptions{Field: "text", Tokenizer: Bytes{}, ValFraction: 0.1}
		if ids {
			o.TokensField = "input_ids"
		}
		st := &PrepareStats{}
		send := func(j *job) error {
			docs, err := o.tokenize(j)
			for _, d := range docs {
				for _, id := range d.toks {
					if id < 0 || id >= BytesVocab {
						t.Fatalf("id %d passed the vocabulary check", id)
					}
				}
			}
			return err
		}
		left := func() int64 { return math.MaxInt64 }
		o.readParquet(context.Background(), inputFile{path: "fuzz.parquet", format: FormatParquet}, bytes.NewReader(data), func() int64 { return 0 }, st, send, left)
	})
}

// TestParquetCodecBounds: a compressed block that claims more than its
// page is refused before it is decoded.
func TestParquetCodecBounds(t *testing.T) {
	plain := bytes.Repeat([]byte("page data "), 1000)
	for _, c := range []compress.Compression{compress.Codecs.Snappy, compress.Codecs.Zstd} {
		codec, err := compress.GetCodec(c)
		if err != nil {
			t.Fatal(err)
		}
		block := codec.Encode(nil, plain)
		out, err := compress.Decode(codec, make([]byte, len(plain)), block)
		if err != nil || !bytes.Equal(out, plain) {
			t.Fatalf("%s: a good block: %v", c, err)
		}
		if _, err := compress.Decode(codec, make([]byte, 100), block); err == nil || !strings.Contains(err.Error(), "its page holds 100") {
			t.Fatalf("%s: a block larger than its page: %v", c, err)
		}
	}
}

// TestPrepareParquetColumnTypes reads text from large_string and binary
// columns and ids from list<int32> and large_list<uint16>: the same shards
// as a string column.
func TestPrepareParquetColumnTypes(t *testing.T) {
	dir := t.TempDir()
	docs, rows := pqDocs(120)
	ref := filepath.Join(dir, "ref")
	o := PrepareOptions{Inputs: []string{writeFile(t, filepath.Join(dir, "ref.parquet"), writeParquet(t, rows, 40, compress.Codecs.Snappy))}, Out: ref, SeqLen: 16}
	if _, err := Prepare(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "ls", Type: arrow.BinaryTypes.LargeString, Nullable: true},
		{Name: "bin", Type: arrow.BinaryTypes.Binary, Nullable: true},
		{Name: "i32", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32), Nullable: true},
		{Name: "u16", Type: arrow.LargeListOf(arrow.PrimitiveTypes.Uint16), Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	ls := b.Field(0).(*array.LargeStringBuilder)
	bin := b.Field(1).(*array.BinaryBuilder)
	i32 := b.Field(2).(*array.ListBuilder)
	u16 := b.Field(3).(*array.LargeListBuilder)
	for _, d := range docs {
		ls.Append(d)
		bin.Append([]byte(d))
		i32.Append(true)
		u16.Append(true)
		for _, c := range []byte(d) {
			i32.ValueBuilder().(*array.Int32Builder).Append(int32(c) + 4)
			u16.ValueBuilder().(*array.Uint16Builder).Append(uint16(c) + 4)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w, err := pqarrow.NewFileWriter(schema, &buf, parquet.NewWriterProperties(parquet.WithMaxRowGroupLength(50)), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	in := writeFile(t, filepath.Join(dir, "types.parquet"), buf.Bytes())
	for _, c := range []struct{ field, tokens string }{{"ls", ""}, {"bin", ""}, {"", "i32"}, {"", "u16"}} {
		o := PrepareOptions{Inputs: []string{in}, Out: t.TempDir(), SeqLen: 16, Field: c.field, TokensField: c.tokens}
		if _, err := Prepare(context.Background(), o); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		sameShards(t, c.field+c.tokens, ref, o.Out)
	}
	// The columns really have those types (the stored Arrow schema).
	_, err = Prepare(context.Background(), PrepareOptions{Inputs: []string{in}, Out: t.TempDir(), Field: "nope"})
	if err == nil || !strings.Contains(err.Error(), "ls (large_utf8), bin (binary), i32 (list<element: int32") || !strings.Contains(err.Error(), "u16 (large_list<element: uint16") {
		t.Fatalf("column list %v", err)
	}
}

// TestPrepareMaxMBOneFile: --max-mb stops inside a single Parquet or JSONL
// file, after the row or line that reaches the cap, and says it did.
func TestPrepareMaxMBOneFile(t *testing.T) {
	dir := t.TempDir()
	docs, rows := pqDocs(400)
	var jl strings.Builder
	for _, d := range docs {
		fmt.Fprintf(&jl, "{\"text\": %q}\n", d)
	}
	pq := writeFile(t, filepath.Join(dir, "docs.parquet"), writeParquet(t, rows, 100, compress.Codecs.Snappy))
	js := writeFile(t, filepath.Join(dir, "docs.jsonl.gz"), gzipBytes(t, []byte(jl.String())))
	capMB := 0.01 // 10485 bytes
	for _, in := range []string{pq, js} {
		st, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{in}, Out: t.TempDir(), SeqLen: 8, MaxMB: capMB})
		if err != nil {
			t.Fatal(err)
		}
		capBytes := int64(capMB * (1 << 20))
		if !st.MaxMBCapped || st.InputBytes < capBytes || st.InputBytes > capBytes+200 {
			t.Fatalf("%s: capped %v, %d input bytes; want a cap just past %d", in, st.MaxMBCapped, st.InputBytes, capBytes)
		}
		st, err = Prepare(context.Background(), PrepareOptions{Inputs: []string{in}, Out: t.TempDir(), SeqLen: 8, MaxMB: 10})
		if err != nil || st.MaxMBCapped {
			t.Fatalf("%s: a cap above the input: capped %v, %v", in, st.MaxMBCapped, err)
		}
	}
}
